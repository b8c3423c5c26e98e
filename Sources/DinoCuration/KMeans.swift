// Spherical k-means of a pool of unit vectors sharded over ranks (the cluster sampling of DINOv2
// section 3, appendix A.4): every rank assigns its rows to the most similar centroid and adds them up,
// the sums and counts are all-reduced, and every centroid becomes its members' mean, L2-normalised (a
// cluster left empty keeps its centroid). The sums are fixed-point integers (2^-40 units; exact for up
// to 2^23 rows of a unit vector's coordinates), so the all-reduce adds them exactly in any order and
// 1 rank computes the same centroids as N, bit for bit (rows are scored in the pool's blocks of
// ExactSearch.blockRows, so every row's scores come from the same GEMM shape on any rank count).
// Initialisation: k-means++ (each next centroid a row drawn with probability proportional to its squared
// distance to the nearest centroid so far), the weights in fixed point and the draws from the
// counter-based stream keyed by (seed, purpose curation): the same rows on any rank count.
// Shapes: rows [count, d] (unit vectors), centroids [k, d].

import DinoCore
import DinoKernels

/// Spherical k-means over a sharded pool.
public enum KMeans {
    /// How the first centroids are chosen.
    public enum Initialisation: String, Sendable {
        /// k-means++ (DINOv2's clustering; one pass over the pool per centroid).
        case kMeansPlusPlus = "kmeans++"
        /// Distinct rows drawn uniformly (Faiss's default; what an inverted index's many lists use).
        case random
    }

    /// The `count` included rows of smallest random key (the key of a row depends only on the seed and the
    /// row): a uniform draw without replacement, the same on any rank count; collective.
    public static func randomRows(
        range: Range<Int>, count: Int, seed: UInt64, excluded: [Bool] = [], communicator comm: any Communicator
    ) throws -> [Int] {
        let stream = RandomStream(seed: seed, purpose: .curation, 1)
        // Each rank's `count` smallest (key, row) pairs, padded with (max, -1); keys are below 2^53 so
        // they travel exactly as doubles.
        var mine: [(key: UInt64, row: Int)] = []
        for i in 0..<range.count where excluded.isEmpty || !excluded[i] {
            mine.append((stream.bits(UInt64(range.lowerBound + i)) >> 11, range.lowerBound + i))
        }
        mine.sort { $0.key < $1.key || ($0.key == $1.key && $0.row < $1.row) }
        var flat = [Double](repeating: 0, count: 2 * count)
        for slot in 0..<count {
            flat[2 * slot] = slot < mine.count ? Double(mine[slot].key) : .infinity
            flat[2 * slot + 1] = slot < mine.count ? Double(mine[slot].row) : -1
        }
        var all = [Double](repeating: 0, count: flat.count * comm.worldSize)
        try flat.withUnsafeBufferPointer { shard in
            try all.withUnsafeMutableBufferPointer { try comm.allGather(shard, into: $0) }
        }
        let pairs = stride(from: 0, to: all.count, by: 2).map { (all[$0], Int(all[$0 + 1])) }.filter { $0.1 >= 0 }
        let sorted = pairs.sorted { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        precondition(sorted.count >= count, "k-means: \(count) rows asked of \(sorted.count) included rows")
        return sorted.prefix(count).map(\.1)
    }

    /// Pool rows `chosen` [chosen.count, d] on every rank (each row from the rank holding it); collective.
    public static func gatherRows(
        _ chosen: [Int], rows: UnsafePointer<Float>, range: Range<Int>, dimension d: Int,
        communicator comm: any Communicator
    ) throws -> [Float] {
        var values = [Float](repeating: 0, count: chosen.count * d)
        for (j, row) in chosen.enumerated() where range.contains(row) {
            for c in 0..<d { values[j * d + c] = rows[(row - range.lowerBound) * d + c] }
        }
        // Every row has one holder and zeros elsewhere: the sum is that row exactly.
        try values.withUnsafeMutableBufferPointer { try comm.allReduce($0, op: .sum) }
        return values
    }
    /// Fixed-point scale of the sums: 2^40.
    static let scale = Double(1 << 40)

    /// Each row's most similar centroid (ties: the smaller centroid index) and its similarity; rows are
    /// scored in blocks of ExactSearch.blockRows from the first (a shard from ExactSearch.shard starts
    /// on a pool block, so the blocks are the pool's).
    public static func assign(
        rows: UnsafePointer<Float>, count: Int, dimension d: Int, centroids: [Float], k: Int
    ) -> [(cluster: Int, similarity: Float)] {
        guard count > 0 else { return [] }
        let block = ExactSearch.blockRows
        var scores = [Float](repeating: 0, count: Swift.min(block, count) * k)
        var result: [(cluster: Int, similarity: Float)] = []
        result.reserveCapacity(count)
        for start in stride(from: 0, to: count, by: block) {
            let m = Swift.min(block, count - start)
            centroids.withUnsafeBufferPointer { c in
                scores.withUnsafeMutableBufferPointer { s in
                    BLAS.withThreadCount(1) {
                        BLAS.sgemm(
                            transposeA: false, transposeB: true, m: m, n: k, k: d, a: rows + start * d, lda: d,
                            b: c.baseAddress!, ldb: d, c: s.baseAddress!, ldc: k)
                    }
                }
            }
            for i in 0..<m {
                var best = 0
                for j in 1..<k where scores[i * k + j] > scores[i * k + best] { best = j }
                result.append((best, scores[i * k + best]))
            }
        }
        return result
    }

    /// This rank's fixed-point coordinate sums [k * d] and member counts [k] for `assignment` (rows whose
    /// `excluded` is true left out).
    public static func accumulate(
        rows: UnsafePointer<Float>, dimension d: Int, assignment: [(cluster: Int, similarity: Float)], k: Int,
        excluded: [Bool] = []
    ) -> (sums: [Int64], counts: [Int64]) {
        var sums = [Int64](repeating: 0, count: k * d), counts = [Int64](repeating: 0, count: k)
        for (i, member) in assignment.enumerated() where excluded.isEmpty || !excluded[i] {
            counts[member.cluster] += 1
            for c in 0..<d { sums[member.cluster * d + c] += Int64((Double(rows[i * d + c]) * scale).rounded()) }
        }
        return (sums, counts)
    }

    /// The new centroids from summed members: each cluster's mean direction; an empty one kept as it was.
    public static func update(centroids: [Float], sums: [Int64], counts: [Int64], dimension d: Int) -> [Float] {
        var next = centroids
        for j in counts.indices where counts[j] > 0 {
            let mean = (0..<d).map { Double(sums[j * d + $0]) / scale }
            let norm = mean.reduce(0) { $0 + $1 * $1 }.squareRoot()
            guard norm > 0 else { continue }
            for c in 0..<d { next[j * d + c] = Float(mean[c] / norm) }
        }
        return next
    }

    /// The k-means++ initial centroids [k, d] and the pool rows they are; collective (see `run`).
    public static func initialCentroids(
        rows: UnsafePointer<Float>, range: Range<Int>, poolSize n: Int, dimension d: Int, k: Int, seed: UInt64,
        excluded: [Bool] = [], communicator comm: any Communicator
    ) throws -> (centroids: [Float], rows: [Int]) {
        precondition(k <= n, "k-means: \(k) clusters for \(n) rows")
        let isExcluded = { (i: Int) in !excluded.isEmpty && excluded[i] }
        let stream = RandomStream(seed: seed, purpose: .curation)
        var centroids: [Float] = [], chosen: [Int] = []
        // The first centroid: the included row of smallest random key (as `randomRows` picks).
        var row = try randomRows(range: range, count: 1, seed: seed, excluded: excluded, communicator: comm)[0]
        // Squared distance to the nearest centroid so far, 2 - 2 cos for unit vectors, in fixed point.
        var weights = [Int64](repeating: Int64.max, count: range.count)
        for j in 0..<k {
            let centroid = try gatherRows([row], rows: rows, range: range, dimension: d, communicator: comm)
            centroids += centroid
            chosen.append(row)
            guard j + 1 < k else { break }
            for i in 0..<range.count {
                // A fixed-order dot product: a row's weight must not depend on how the pool is cut.
                var dot: Float = 0
                for c in 0..<d { dot += rows[i * d + c] * centroid[c] }
                let weight = Int64((Swift.max(0, 2 - 2 * Double(dot)) * scale).rounded())
                weights[i] = Swift.min(weights[i], weight)
            }
            for i in chosen where range.contains(i) { weights[i - range.lowerBound] = 0 }
            for i in 0..<range.count where isExcluded(i) { weights[i] = 0 }
            let local = weights.reduce(0, +)
            var totals = [Int64](repeating: 0, count: comm.worldSize)
            try [local].withUnsafeBufferPointer { mine in
                try totals.withUnsafeMutableBufferPointer { try comm.allGather(mine, into: $0) }
            }
            let total = totals.reduce(0, +)
            guard total > 0 else {
                // Every row is a chosen one or a copy of one: the rest are drawn uniformly.
                var draw = UInt64(j + 1) << 32
                repeat {
                    row = Int(stream.bits(draw) % UInt64(n))
                    draw += 1
                } while chosen.contains(row) || (range.contains(row) && isExcluded(row - range.lowerBound))
                continue
            }
            let target = Swift.min(total - 1, Int64(stream.uniform(UInt64(j + 1)) * Double(total)))
            // The rank whose share of the cumulative weight holds `target` finds the row; the rest add 0.
            let before = totals[..<comm.rank].reduce(0, +)
            var found: Int64 = 0
            if target >= before && target < before + local {
                var cumulative = before
                for i in 0..<range.count {
                    cumulative += weights[i]
                    if cumulative > target {
                        found = Int64(range.lowerBound + i)
                        break
                    }
                }
            }
            var picked = [found]
            try picked.withUnsafeMutableBufferPointer { try comm.allReduce($0, op: .sum) }
            row = Int(picked[0])
        }
        return (centroids, chosen)
    }

    /// k-means++, then `iterations` Lloyd steps; collective: every rank passes its shard (`rows`, global
    /// row range `range` of a pool of `poolSize`, from ExactSearch.shard). Returns the centroids [k, d]
    /// (the same on every rank) and this rank's rows' final assignment.
    public static func run(
        rows: UnsafePointer<Float>, range: Range<Int>, poolSize: Int, dimension d: Int, k: Int, iterations: Int,
        seed: UInt64, initialisation: Initialisation = .kMeansPlusPlus, excluded: [Bool] = [],
        communicator comm: any Communicator
    ) throws -> (centroids: [Float], assignment: [(cluster: Int, similarity: Float)]) {
        precondition(range.lowerBound % ExactSearch.blockRows == 0, "a shard starts on a block boundary")
        var centroids: [Float]
        switch initialisation {
        case .kMeansPlusPlus:
            centroids = try initialCentroids(
                rows: rows, range: range, poolSize: poolSize, dimension: d, k: k, seed: seed, excluded: excluded,
                communicator: comm
            ).centroids
        case .random:
            let chosen = try randomRows(range: range, count: k, seed: seed, excluded: excluded, communicator: comm)
            centroids = try gatherRows(chosen, rows: rows, range: range, dimension: d, communicator: comm)
        }
        var assignment = assign(rows: rows, count: range.count, dimension: d, centroids: centroids, k: k)
        for _ in 0..<iterations {
            var (sums, counts) = accumulate(
                rows: rows, dimension: d, assignment: assignment, k: k, excluded: excluded)
            try sums.withUnsafeMutableBufferPointer { try comm.allReduce($0, op: .sum) }
            try counts.withUnsafeMutableBufferPointer { try comm.allReduce($0, op: .sum) }
            centroids = update(centroids: centroids, sums: sums, counts: counts, dimension: d)
            assignment = assign(rows: rows, count: range.count, dimension: d, centroids: centroids, k: k)
        }
        return (centroids, assignment)
    }
}
