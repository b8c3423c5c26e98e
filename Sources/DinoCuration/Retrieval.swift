// The retrieval stage (DINOv2 section 3, appendix A.4): pool images similar to a curated set. Sample-based
// (large curated sets): each curated image's N nearest pool images (N = 4 in the paper). Cluster-based
// (small sets): spherical k-means of the deduplicated pool; every cluster holding more than
// `minimumQueries` curated images (3 in the paper) gives `perCluster` of its images (10,000 in the paper),
// drawn uniformly without replacement (each row's random key depends only on the seed and the row, and
// a cluster gives its rows of smallest keys), up to `cap` images (clusters taken by their count of
// curated images, most first). Both are collective and answer the same on every rank count.

import DinoCore

/// The pool rows retrieved for a curated set.
public struct RetrievalResult: Codable, Equatable, Sendable {
    /// Per curated image, the pool rows retrieved for it (sample-based) or sampled from its cluster
    /// (cluster-based; empty when its cluster was not selected).
    public var perQuery: [[Int]]
    /// The distinct retrieved rows, ascending.
    public var retrieved: [Int]
    /// Cluster-based only: each pool row's cluster (-1 for excluded rows), the curated images' clusters,
    /// and the clusters selected, in the order they were taken.
    public var poolClusters: [Int] = []
    public var queryClusters: [Int] = []
    public var selectedClusters: [Int] = []

    /// Retrievals that named a row another query had already retrieved.
    public var collisions: Int { perQuery.reduce(0) { $0 + $1.count } - retrieved.count }
}

/// Sample-based and cluster-based retrieval.
public enum Retrieval {
    /// Each query's `n` nearest pool rows among those not excluded.
    public static func nearest(
        search: PoolSearch, queries: some PoolSource, n: Int, communicator comm: any Communicator
    ) throws -> RetrievalResult {
        var perQuery = [[Int]](repeating: [], count: queries.count)
        try search.searchAll(of: queries, k: n, communicator: comm) { first, answers in
            for (offset, neighbors) in answers.enumerated() { perQuery[first + offset] = neighbors.map(\.index) }
        }
        return RetrievalResult(perQuery: perQuery, retrieved: Array(Set(perQuery.joined())).sorted())
    }

    /// Cluster-based retrieval over `shard` (excluded rows take no part), `clusters` k-means clusters.
    public static func clusterSampling(
        shard: PoolShard, queries: some PoolSource, clusters k: Int, iterations: Int,
        initialisation: KMeans.Initialisation, minimumQueries: Int, perCluster: Int, cap: Int, seed: UInt64,
        communicator comm: any Communicator
    ) throws -> RetrievalResult {
        let d = shard.dimension
        let included = try comm.allReduce(Int64(shard.excluded.filter { !$0 }.count), op: .sum)
        guard included >= k else {
            throw CurationError.input(
                "cluster-based retrieval asks for \(k) clusters of \(included) pool images left after deduplication; "
                    + "pass fewer clusters")
        }
        let (centroids, assignment) = try shard.vectors.withUnsafeBufferPointer { rows in
            try KMeans.run(
                rows: rows.baseAddress!, range: shard.rows, poolSize: shard.poolSize, dimension: d, k: k,
                iterations: iterations, seed: seed, initialisation: initialisation, excluded: shard.excluded,
                communicator: comm)
        }
        // The curated images' clusters: every rank reads them all and assigns them the same way.
        var queryClusters: [Int] = []
        for first in stride(from: 0, to: queries.count, by: PoolSearch.queryBlock) {
            let rows = first..<Swift.min(queries.count, first + PoolSearch.queryBlock)
            let vectors = try queries.normalizedRows(rows)
            let assigned = vectors.withUnsafeBufferPointer {
                KMeans.assign(rows: $0.baseAddress!, count: rows.count, dimension: d, centroids: centroids, k: k)
            }
            queryClusters += rows.map { queries.unreadable.contains($0) ? -1 : assigned[$0 - first].cluster }
        }
        var queriesPerCluster = [Int](repeating: 0, count: k)
        for cluster in queryClusters where cluster >= 0 { queriesPerCluster[cluster] += 1 }
        let selected = (0..<k).filter { queriesPerCluster[$0] > minimumQueries }
            .sorted {
                queriesPerCluster[$0] > queriesPerCluster[$1]
                    || (queriesPerCluster[$0] == queriesPerCluster[$1] && $0 < $1)
            }
        // Each rank's candidates: per selected cluster, its held rows of smallest keys.
        let stream = RandomStream(seed: seed, purpose: .curation, 2)
        var position = [Int](repeating: -1, count: k)
        for (j, cluster) in selected.enumerated() { position[cluster] = j }
        var candidates = [[(key: UInt64, row: Int)]](repeating: [], count: selected.count)
        for (i, member) in assignment.enumerated() where !shard.excluded[i] && position[member.cluster] >= 0 {
            let row = shard.rows.lowerBound + i
            candidates[position[member.cluster]].append((stream.bits(UInt64(row)) >> 11, row))
        }
        var flat: [Double] = []
        for j in selected.indices {
            candidates[j].sort { $0.key < $1.key || ($0.key == $1.key && $0.row < $1.row) }
            for candidate in candidates[j].prefix(perCluster) {
                flat += [Double(j), Double(candidate.key), Double(candidate.row)]
            }
        }
        let counts = try comm.allGatherCounts(flat.count)
        var all = [Double](repeating: 0, count: counts.reduce(0, +))
        try flat.withUnsafeBufferPointer { mine in
            try all.withUnsafeMutableBufferPointer { try comm.allGather(mine, counts: counts, into: $0) }
        }
        var merged = [[(key: Double, row: Int)]](repeating: [], count: selected.count)
        for at in stride(from: 0, to: all.count, by: 3) { merged[Int(all[at])].append((all[at + 1], Int(all[at + 2]))) }
        var sampled = [[Int]](repeating: [], count: k), total = 0
        for (j, cluster) in selected.enumerated() where total < cap {
            let rows = merged[j].sorted { $0.key < $1.key || ($0.key == $1.key && $0.row < $1.row) }
                .prefix(Swift.min(perCluster, cap - total)).map(\.row)
            sampled[cluster] = rows.sorted()
            total += rows.count
        }
        var mine = [Int64](repeating: -1, count: shard.rows.count)
        for (i, member) in assignment.enumerated() where !shard.excluded[i] { mine[i] = Int64(member.cluster) }
        let poolClusters = try comm.allGatherRows(mine).map { Int($0) }
        let perQuery = queryClusters.map { $0 >= 0 ? sampled[$0] : [] }
        return RetrievalResult(
            perQuery: perQuery, retrieved: sampled.joined().sorted(), poolClusters: poolClusters,
            queryClusters: queryClusters, selectedClusters: selected.filter { !sampled[$0].isEmpty })
    }
}

extension Communicator {
    /// Every rank's values for its pool rows, concatenated in rank order: one value per pool row when the
    /// ranks hold consecutive shards (ExactSearch.shard).
    public func allGatherRows(_ mine: [Int64]) throws -> [Int64] {
        let counts = try allGatherCounts(mine.count)
        var all = [Int64](repeating: 0, count: counts.reduce(0, +))
        try mine.withUnsafeBufferPointer { m in
            try all.withUnsafeMutableBufferPointer { try allGather(m, counts: counts, into: $0) }
        }
        return all
    }

    /// Every rank's `count`, rank order.
    public func allGatherCounts(_ count: Int) throws -> [Int] {
        var all = [Int64](repeating: 0, count: worldSize)
        try [Int64(count)].withUnsafeBufferPointer { mine in
            try all.withUnsafeMutableBufferPointer { try allGather(mine, into: $0) }
        }
        return all.map { Int($0) }
    }
}
