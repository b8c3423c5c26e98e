// An inverted-file index (IVF-Flat, Faiss's `IVFx,Flat`) over a pool sharded across ranks, for pools too
// large to search exactly. Training: spherical k-means (random initial rows, as Faiss does, 10 Lloyd
// steps) on a strided subset of about 64 pool rows per list, the subset itself sharded over the ranks.
// Adding: every rank files its own pool rows under their most similar centroid (the k-means assignment,
// scored in the pool's blocks, so any rank count files a row under the same list). Search: the `probes`
// lists whose centroids are most similar to the query (ties: smaller list), every member of them that a
// rank holds scored exactly with a fixed-order dot product, each rank's best k merged across ranks as in
// ExactSearch: 1 rank and N ranks return the same neighbours. Similarities are exact (no compression);
// the approximation is only which lists are visited.
// Shapes: centroids [lists, D]; a rank's members [m] and their vectors [m, D], grouped by list.

import DinoCore
import DinoKernels

/// A pool whose rows can be read as unit vectors by global row range.
public protocol PoolSource {
    var count: Int { get }
    var dimension: Int { get }
    /// Rows never searched (images that could not be read).
    var unreadable: Set<Int> { get }
    /// Rows `rows` as unit vectors [rows.count, dimension].
    func normalizedRows(_ rows: Range<Int>) throws -> [Float]
}

extension FeatureFile: PoolSource {}

/// An inverted-file index over a sharded pool.
public struct IVFIndex {
    public let dimension: Int
    public let lists: Int
    /// Unit centroids [lists, dimension], the same on every rank.
    public let centroids: [Float]
    /// This rank's members of list l: `members[offsets[l]..<offsets[l + 1]]`, vectors in the same order.
    let offsets: [Int]
    let members: [Int]
    let vectors: [Float]
    var memberExcluded: [Bool]

    /// Training rows per list (Faiss warns below 39 and subsamples above 256).
    public static let trainingRowsPerList = 64
    /// Lloyd steps of the coarse quantizer (Faiss's IVF training uses 10).
    public static let trainingIterations = 10

    /// Lists for a pool of `n`: 4 sqrt(n) (Faiss's guidance for pools below 10^6 is 4 to 16 sqrt(n)).
    public static func defaultLists(poolSize n: Int) -> Int {
        Swift.max(1, Int((4 * Double(n).squareRoot()).rounded()))
    }

    /// Distance between training rows: every `step`-th pool row is in the training subset.
    public static func trainingStep(poolSize n: Int, lists: Int) -> Int {
        Swift.max(1, n / (trainingRowsPerList * lists))
    }

    /// The coarse centroids [lists, D] trained on `pool`'s strided subset; collective (every rank reads its
    /// shard of the subset).
    public static func trainCentroids(
        pool: some PoolSource, lists: Int, seed: UInt64, communicator comm: any Communicator
    ) throws -> [Float] {
        let n = pool.count, d = pool.dimension, step = trainingStep(poolSize: n, lists: lists)
        let subsetSize = (n + step - 1) / step
        let mine = ExactSearch.shard(poolSize: subsetSize, rank: comm.rank, worldSize: comm.worldSize)
        var rows = [Float](repeating: 0, count: mine.count * d)
        var excluded = [Bool](repeating: false, count: mine.count)
        let chunk = 1024
        for first in stride(from: mine.lowerBound, to: mine.upperBound, by: chunk) {
            let last = Swift.min(mine.upperBound, first + chunk)
            let read = try pool.normalizedRows((first * step)..<((last - 1) * step + 1))
            for j in first..<last {
                let source = (j - first) * step
                for c in 0..<d { rows[(j - mine.lowerBound) * d + c] = read[source * d + c] }
                excluded[j - mine.lowerBound] = pool.unreadable.contains(j * step)
            }
        }
        let included = try comm.allReduce(Int64(excluded.filter { !$0 }.count), op: .sum)
        guard included >= lists else {
            throw CurationError.input(
                "the index needs at least \(lists) readable training rows and the pool gives \(included); use "
                    + "fewer lists or the exact search")
        }
        return try rows.withUnsafeBufferPointer { r in
            try KMeans.run(
                rows: r.baseAddress!, range: mine, poolSize: subsetSize, dimension: d, k: lists,
                iterations: trainingIterations, seed: seed, initialisation: .random, excluded: excluded,
                communicator: comm
            ).centroids
        }
    }

    /// The list of every row of `shard` (its most similar centroid).
    public static func assignLists(_ shard: PoolShard, centroids: [Float], lists: Int) -> [Int] {
        shard.vectors.withUnsafeBufferPointer { rows in
            KMeans.assign(
                rows: rows.baseAddress!, count: shard.rows.count, dimension: shard.dimension, centroids: centroids,
                k: lists
            ).map(\.cluster)
        }
    }

    /// The index of `shard`'s rows filed under `assignment` (their lists, from `assignLists`); rows the
    /// shard excludes are filed but never returned.
    public init(shard: PoolShard, centroids: [Float], lists: Int, assignment: [Int]) {
        precondition(assignment.count == shard.rows.count, "one list per held row")
        dimension = shard.dimension
        self.lists = lists
        self.centroids = centroids
        var counts = [Int](repeating: 0, count: lists + 1)
        for list in assignment { counts[list + 1] += 1 }
        for l in 0..<lists { counts[l + 1] += counts[l] }
        offsets = counts
        var next = counts, members = [Int](repeating: 0, count: assignment.count)
        var vectors = [Float](repeating: 0, count: shard.vectors.count)
        var excluded = [Bool](repeating: false, count: assignment.count)
        let d = shard.dimension
        for (i, list) in assignment.enumerated() {
            let slot = next[list]
            next[list] += 1
            members[slot] = shard.rows.lowerBound + i
            excluded[slot] = shard.excluded[i]
            for c in 0..<d { vectors[slot * d + c] = shard.vectors[i * d + c] }
        }
        self.members = members
        self.vectors = vectors
        memberExcluded = excluded
    }

    /// Leaves the held rows of `removed` out of later searches.
    public mutating func exclude(_ removed: Set<Int>) {
        for slot in members.indices where removed.contains(members[slot]) { memberExcluded[slot] = true }
    }

    /// The `probes` lists most similar to each query [q, D] (ties: the smaller list), best first.
    public func probedLists(queries: [Float], probes: Int) -> [[Int]] {
        let q = queries.count / dimension, probes = Swift.min(probes, lists)
        var scores = [Float](repeating: 0, count: q * lists)
        queries.withUnsafeBufferPointer { query in
            centroids.withUnsafeBufferPointer { c in
                scores.withUnsafeMutableBufferPointer { s in
                    BLAS.withThreadCount(1) {
                        BLAS.sgemm(
                            transposeA: false, transposeB: true, m: q, n: lists, k: dimension, a: query.baseAddress!,
                            lda: dimension, b: c.baseAddress!, ldb: dimension, c: s.baseAddress!, ldc: lists)
                    }
                }
            }
        }
        return (0..<q).map { i in
            var best: [Neighbor] = []
            best.reserveCapacity(probes + 1)
            for l in 0..<lists {
                ExactSearch.insert(Neighbor(index: l, similarity: scores[i * lists + l]), into: &best, k: probes)
            }
            return best.map(\.index)
        }
    }

    /// Each query's best `k` among the members of its probed lists over the whole pool; collective.
    public func search(
        queries: [Float], k: Int, probes: Int, communicator comm: any Communicator
    ) throws -> [[Neighbor]] {
        let probed = probedLists(queries: queries, probes: probes)
        let d = dimension
        var local = [[Neighbor]](repeating: [], count: probed.count)
        queries.withUnsafeBufferPointer { query in
            vectors.withUnsafeBufferPointer { v in
                for (i, lists) in probed.enumerated() {
                    var best: [Neighbor] = []
                    best.reserveCapacity(k + 1)
                    let q = query.baseAddress! + i * d
                    for list in lists {
                        for slot in offsets[list]..<offsets[list + 1] where !memberExcluded[slot] {
                            let similarity = Self.dot(q, v.baseAddress! + slot * d, d)
                            ExactSearch.insert(
                                Neighbor(index: members[slot], similarity: similarity), into: &best, k: k)
                        }
                    }
                    local[i] = best
                }
            }
        }
        return try ExactSearch.mergeAcrossRanks(local, k: k, communicator: comm)
    }

    /// The dot product of two d-vectors, summed in an order fixed by d alone (four 16-lane accumulators,
    /// then the tail), so a pair scores the same bits wherever it is computed.
    @inlinable
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ d: Int) -> Float {
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var s0 = SIMD16<Float>(), s1 = SIMD16<Float>(), s2 = SIMD16<Float>(), s3 = SIMD16<Float>()
        var c = 0
        while c + 64 <= d {
            s0 = s0.addingProduct(
                ra.loadUnaligned(fromByteOffset: c * 4, as: SIMD16<Float>.self),
                rb.loadUnaligned(fromByteOffset: c * 4, as: SIMD16<Float>.self))
            s1 = s1.addingProduct(
                ra.loadUnaligned(fromByteOffset: (c + 16) * 4, as: SIMD16<Float>.self),
                rb.loadUnaligned(fromByteOffset: (c + 16) * 4, as: SIMD16<Float>.self))
            s2 = s2.addingProduct(
                ra.loadUnaligned(fromByteOffset: (c + 32) * 4, as: SIMD16<Float>.self),
                rb.loadUnaligned(fromByteOffset: (c + 32) * 4, as: SIMD16<Float>.self))
            s3 = s3.addingProduct(
                ra.loadUnaligned(fromByteOffset: (c + 48) * 4, as: SIMD16<Float>.self),
                rb.loadUnaligned(fromByteOffset: (c + 48) * 4, as: SIMD16<Float>.self))
            c += 64
        }
        while c + 16 <= d {
            s0 = s0.addingProduct(
                ra.loadUnaligned(fromByteOffset: c * 4, as: SIMD16<Float>.self),
                rb.loadUnaligned(fromByteOffset: c * 4, as: SIMD16<Float>.self))
            c += 16
        }
        var sum = ((s0 + s1) + (s2 + s3)).sum()
        while c < d {
            sum += a[c] * b[c]
            c += 1
        }
        return sum
    }
}
