// Generated features for the curation tests and benchmark, every value a function of (seed, row).
// `SyntheticFeatures`: a pool of `count` unit vectors around `classes` random directions (row i in class
// i % classes), generated on demand (10^6 x 384 without holding them). `PlantedPool`: feature files with
// planted structure and its ground truth: a pool of class vectors (same-class similarity about 0.3, at
// most ~0.6), near-copies of some rows (similarity about 0.97), chains of copies (a~b and b~c at about
// 0.93, a and c about 0.87), near misses (about 0.8, not copies), near-copies of evaluation vectors
// (some starting a chain of copies that drifts away from them),
// unreadable rows (zeros); queries from two classes.

import DinoCheckpoint
import DinoCore
import Foundation

/// A generated pool of unit vectors in classes.
public struct SyntheticFeatures: PoolSource {
    public let count: Int
    public let dimension: Int
    public let classes: Int
    public let seed: UInt64
    /// Noise relative to the class direction (1.5: same-class similarity about 0.3).
    public let spread: Double
    public var unreadable: Set<Int> { [] }

    public init(count: Int, dimension: Int, classes: Int, seed: UInt64, spread: Double = 1.5) {
        self.count = count
        self.dimension = dimension
        self.classes = classes
        self.seed = seed
        self.spread = spread
    }

    /// Standard normal values of stream coordinates `coordinates`.
    static func normals(_ count: Int, seed: UInt64, _ coordinates: UInt64...) -> [Double] {
        // Coordinates from 100 up: apart from the streams the curation stages draw from.
        let stream = RandomStream(
            seed: seed, purpose: .curation, 100 + coordinates[0], coordinates.count > 1 ? coordinates[1] : 0)
        return (0..<count).map { i in
            let u = Swift.max(stream.uniform(UInt64(2 * i)), 1e-300), v = stream.uniform(UInt64(2 * i + 1))
            return (-2 * Foundation.log(u)).squareRoot() * cos(2 * Double.pi * v)
        }
    }

    /// Unit direction of class `c`.
    func direction(_ c: Int) -> [Double] {
        let x = Self.normals(dimension, seed: seed, 0, UInt64(c))
        let norm = x.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return x.map { $0 / norm }
    }

    /// Row `row` as doubles (not normalised): its class direction plus noise of norm about `spread`.
    public func raw(_ row: Int, direction: [Double]) -> [Double] {
        let noise = Self.normals(dimension, seed: seed, 1, UInt64(row))
        let scale = spread / Double(dimension).squareRoot()
        return (0..<dimension).map { direction[$0] + scale * noise[$0] }
    }

    public func label(_ row: Int) -> Int { row % classes }

    public func normalizedRows(_ rows: Range<Int>) throws -> [Float] {
        let directions = (0..<classes).map(direction)
        var values: [Float] = []
        values.reserveCapacity(rows.count * dimension)
        for row in rows { values += raw(row, direction: directions[label(row)]).map { Float($0) } }
        UnitRows.normalize(&values, dimension: dimension)
        return values
    }
}

/// Feature files with planted copies, and what a correct curation finds in them.
public enum PlantedPool {
    public struct Truth: Sendable {
        /// Planted copy groups (pool rows, sorted), each to be found whole; the groups of evaluation copies
        /// are among them.
        public var copyGroups: [[Int]]
        /// Pairs planted just below copy similarity: never to be joined.
        public var nearMisses: [(Int, Int)]
        /// Pool rows planted as near-copies of evaluation vectors, and their copies: to be removed.
        public var evaluationCopies: [Int]
        /// Evaluation vectors with near-copies in the pool.
        public var matchedEvaluationImages: Int
        /// Rows written as unreadable (zeros, listed in `unreadable`).
        public var unreadable: [Int]
        /// Classes of the queries.
        public var queryClasses: Set<Int>
        public var poolFile: String
        public var queriesFile: String
        public var evaluationFile: String
    }

    /// Writes pool.h5, queries.h5 and evaluation.h5 into `directory`. Copy similarities are about 0.97
    /// (pairs) and 0.93 per chain link; near misses about 0.8; evaluation copies about 0.97.
    @discardableResult
    public static func write(
        to directory: String, baseRows: Int = 2000, dimension: Int = 128, classes: Int = 8, seed: UInt64 = 7
    ) throws -> Truth {
        let base = SyntheticFeatures(count: baseRows, dimension: dimension, classes: classes, seed: seed)
        let directions = (0..<classes).map(base.direction)
        var pool = (0..<baseRows).map { base.raw($0, direction: directions[base.label($0)]) }
        var labels = (0..<baseRows).map(base.label)
        var next: UInt64 = 0
        /// A vector at cosine about `similarity` to `x`.
        func near(_ x: [Double], _ similarity: Double) -> [Double] {
            next += 1
            let noise = SyntheticFeatures.normals(dimension, seed: seed, 2, next)
            let norm = x.reduce(0) { $0 + $1 * $1 }.squareRoot()
            let scale = norm * (1 / (similarity * similarity) - 1).squareRoot() / Double(dimension).squareRoot()
            return (0..<dimension).map { x[$0] + scale * noise[$0] }
        }
        func append(_ x: [Double], label: Int) -> Int {
            pool.append(x)
            labels.append(label)
            return pool.count - 1
        }
        var groups: [[Int]] = [], nearMisses: [(Int, Int)] = []
        // Pairs and triples of near-copies of every 25th row.
        for (j, source) in stride(from: 0, to: baseRows, by: 25).enumerated() {
            var group = [source, append(near(pool[source], 0.97), label: labels[source])]
            if j % 3 == 0 { group.append(append(near(pool[source], 0.97), label: labels[source])) }
            groups.append(group.sorted())
        }
        // Chains a~b~c from every 100th row (offset 10).
        for source in stride(from: 10, to: baseRows, by: 100) {
            let b = append(near(pool[source], 0.93), label: labels[source])
            let c = append(near(pool[b], 0.93), label: labels[source])
            groups.append([source, b, c])
        }
        // Near misses from every 100th row (offset 60).
        for source in stride(from: 60, to: baseRows, by: 100) {
            nearMisses.append((source, append(near(pool[source], 0.8), label: labels[source])))
        }
        // Evaluation vectors (new class vectors) and a near-copy of every other one in the pool.
        let evaluationBase = SyntheticFeatures(count: 40, dimension: dimension, classes: classes, seed: seed + 1000)
        let evaluation = (0..<40).map { evaluationBase.raw($0, direction: directions[$0 % classes]) }
        var evaluationCopies: [Int] = []
        for e in stride(from: 0, to: 40, by: 2) {
            let copy = append(near(evaluation[e], 0.97), label: e % classes)
            evaluationCopies.append(copy)
            // Every other one starts a chain of 7 copies (0.93 per link) in the pool: the last links are
            // below 0.7 from the evaluation vector (about 0.63) and go only because their group goes.
            if e % 4 == 0 {
                var chain = [copy]
                for _ in 0..<7 { chain.append(append(near(pool[chain.last!], 0.93), label: e % classes)) }
                evaluationCopies += chain.dropFirst()
                groups.append(chain)
            }
        }
        // Unreadable rows: every 250th base row (offset 7) that is in no group.
        let grouped = Set(groups.joined())
        let unreadable = stride(from: 7, to: baseRows, by: 250).filter { !grouped.contains($0) }
        for row in unreadable { pool[row] = [Double](repeating: 0, count: dimension) }
        // Queries: 12 new vectors of class 0 and 12 of class 1.
        let queryBase = SyntheticFeatures(count: 24, dimension: dimension, classes: classes, seed: seed + 2000)
        let queries = (0..<24).map { queryBase.raw($0, direction: directions[$0 % 2]) }
        let files = ["pool", "queries", "evaluation"].map { "\(directory)/\($0).h5" }
        try writeFile(files[0], rows: pool, labels: labels, unreadable: unreadable, name: "pool")
        try writeFile(files[1], rows: queries, labels: (0..<24).map { $0 % 2 }, unreadable: [], name: "query")
        try writeFile(files[2], rows: evaluation, labels: (0..<40).map { $0 % classes }, unreadable: [], name: "eval")
        return Truth(
            copyGroups: groups.sorted { $0[0] < $1[0] }, nearMisses: nearMisses, evaluationCopies: evaluationCopies,
            matchedEvaluationImages: 20, unreadable: unreadable, queryClasses: [0, 1], poolFile: files[0],
            queriesFile: files[1],
            evaluationFile: files[2])
    }

    /// A feature file as `embed` writes it (paths name images that do not exist).
    static func writeFile(_ path: String, rows: [[Double]], labels: [Int], unreadable: [Int], name: String) throws {
        let file = try HDF5File.create(path, truncate: true)
        let d = rows.first?.count ?? 0
        let values = rows.joined().map { Float($0) }
        try values.withUnsafeBufferPointer { try file.write("cls", values: $0, shape: [rows.count, d]) }
        try file.write("labels", integers: labels.map { Int64($0) }, shape: [rows.count])
        try file.write("paths", strings: rows.indices.map { "/nonexistent/\(name)/\($0).png" })
        if !unreadable.isEmpty {
            try file.write("unreadable", integers: unreadable.map { Int64($0) }, shape: [unreadable.count])
        }
        try file.flush()
    }
}
