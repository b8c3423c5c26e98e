// Exact cosine nearest neighbours among a pool of vectors sharded over ranks (data curation, issue #19:
// the retrieval and the copy-detection graph of DINOv2 section 3 on a pool small enough to search
// exactly). Every rank holds pool rows [first, first + count) of [n, d], L2-normalised; every rank has
// the queries [q, d]. A rank scores its rows block by block (blocks of `blockRows` pool rows, counted
// from row 0, so a rank's shard is whole blocks and each block is the same single-threaded sgemm
// [q, d] x [d, rows] whatever the rank count), keeps each query's best k, and the ranks' candidates
// are gathered and merged: every rank returns the same k neighbours per query, by similarity, ties by
// the smaller pool index, and 1 rank returns what N ranks return, bit for bit.

import DinoCore
import DinoKernels

/// One neighbour of a query: its row in the pool and the cosine similarity (dot product of unit vectors).
public struct Neighbor: Equatable, Sendable {
    public var index: Int
    public var similarity: Float

    public init(index: Int, similarity: Float) {
        self.index = index
        self.similarity = similarity
    }

    /// Whether `self` ranks before `other`: higher similarity, then the smaller index.
    @inlinable
    public func ranksBefore(_ other: Neighbor) -> Bool {
        similarity > other.similarity || (similarity == other.similarity && index < other.index)
    }
}

/// Exact k-nearest-neighbour search over a sharded pool.
public enum ExactSearch {
    /// Pool rows scored by one GEMM: 4096 rows of 384 floats are 6 MiB, and the scores of 1024 queries
    /// against them 16 MiB.
    public static let blockRows = 4096

    /// The pool rows rank `rank` of `worldSize` holds: whole blocks, as evenly as blocks allow.
    public static func shard(poolSize n: Int, rank: Int, worldSize: Int) -> Range<Int> {
        let blocks = (n + blockRows - 1) / blockRows
        let firstBlock = blocks * rank / worldSize, endBlock = blocks * (rank + 1) / worldSize
        return Swift.min(n, firstBlock * blockRows)..<Swift.min(n, endBlock * blockRows)
    }

    /// Each query's best `k` among pool rows `rows` (held at `pool`, [rows.count, d] row-major), sorted,
    /// leaving out held rows whose `excluded` is true (none when empty).
    /// `rows` must start on a block boundary (as `shard` gives) for results equal over rank counts.
    public static func localCandidates(
        queries: UnsafePointer<Float>, queryCount q: Int, dimension d: Int, pool: UnsafePointer<Float>,
        rows: Range<Int>, k: Int, excluded: [Bool] = []
    ) -> [[Neighbor]] {
        precondition(rows.lowerBound % blockRows == 0, "a shard starts on a block boundary")
        var best = [[Neighbor]](repeating: [], count: q)
        for i in 0..<q { best[i].reserveCapacity(k + 1) }
        guard q > 0, k > 0, !rows.isEmpty else { return best }
        var scores = [Float](repeating: 0, count: q * Swift.min(blockRows, rows.count))
        var start = 0
        while start < rows.count {
            let count = Swift.min(blockRows, rows.count - start)
            scores.withUnsafeMutableBufferPointer { s in
                guard let c = s.baseAddress else { return }
                BLAS.withThreadCount(1) {
                    BLAS.sgemm(
                        transposeA: false, transposeB: true, m: q, n: count, k: d, a: queries, lda: d,
                        b: pool + start * d, ldb: d, c: c, ldc: count)
                }
            }
            // Rows are scanned in increasing index, so a score equal to a full list's last never ranks
            // before it: only scores above that floor can enter.
            scores.withUnsafeBufferPointer { s in
                for i in 0..<q {
                    var floor = best[i].count == k ? best[i][k - 1].similarity : -Float.infinity
                    let row = s.baseAddress! + i * count
                    for j in 0..<count where row[j] > floor && (excluded.isEmpty || !excluded[start + j]) {
                        insert(Neighbor(index: rows.lowerBound + start + j, similarity: row[j]), into: &best[i], k: k)
                        if best[i].count == k { floor = best[i][k - 1].similarity }
                    }
                }
            }
            start += count
        }
        return best
    }

    /// Keeps `list` the best `k` in rank order with `candidate` considered.
    @inlinable
    static func insert(_ candidate: Neighbor, into list: inout [Neighbor], k: Int) {
        if list.count == k, let last = list.last, !candidate.ranksBefore(last) { return }
        var position = list.count
        while position > 0, candidate.ranksBefore(list[position - 1]) { position -= 1 }
        list.insert(candidate, at: position)
        if list.count > k { list.removeLast() }
    }

    /// Merges candidate lists (one per rank, each query's sorted) into each query's best `k`.
    public static func merge(_ perRank: [[[Neighbor]]], k: Int) -> [[Neighbor]] {
        guard let first = perRank.first else { return [] }
        return first.indices.map { i in
            var best: [Neighbor] = []
            for lists in perRank { for candidate in lists[i] { insert(candidate, into: &best, k: k) } }
            return best
        }
    }

    /// Each query's best `k` in the whole pool; collective: every rank passes its shard (`rows`, from
    /// `shard`) and the same queries, and gets the same answer.
    public static func search(
        queries: UnsafePointer<Float>, queryCount q: Int, dimension d: Int, pool: UnsafePointer<Float>,
        rows: Range<Int>, k: Int, excluded: [Bool] = [], communicator comm: any Communicator
    ) throws -> [[Neighbor]] {
        let local = localCandidates(
            queries: queries, queryCount: q, dimension: d, pool: pool, rows: rows, k: k, excluded: excluded)
        return try mergeAcrossRanks(local, k: k, communicator: comm)
    }

    /// Each query's best `k` among the shard's rows that are not excluded, over the whole pool; collective.
    public static func search(
        queries: [Float], in shard: PoolShard, k: Int, communicator comm: any Communicator
    ) throws -> [[Neighbor]] {
        let q = queries.count / Swift.max(1, shard.dimension)
        return try queries.withUnsafeBufferPointer { query in
            try shard.vectors.withUnsafeBufferPointer { pool in
                try search(
                    queries: query.baseAddress!, queryCount: q, dimension: shard.dimension, pool: pool.baseAddress!,
                    rows: shard.rows, k: k, excluded: shard.excluded, communicator: comm)
            }
        }
    }

    /// Every rank's candidate lists (each query's, sorted) merged into each query's best `k`; collective:
    /// every rank gets the same lists.
    public static func mergeAcrossRanks(
        _ local: [[Neighbor]], k: Int, communicator comm: any Communicator
    ) throws -> [[Neighbor]] {
        let q = local.count
        guard comm.worldSize > 1 else { return local }
        // (similarity, index) pairs as doubles (exact for both), k per query, missing ones as (-inf, -1).
        var mine = [Double](repeating: 0, count: 2 * q * k)
        for i in 0..<q {
            for slot in 0..<k {
                let neighbor = slot < local[i].count ? local[i][slot] : nil
                mine[2 * (i * k + slot)] = neighbor.map { Double($0.similarity) } ?? -.infinity
                mine[2 * (i * k + slot) + 1] = Double(neighbor?.index ?? -1)
            }
        }
        var all = [Double](repeating: 0, count: mine.count * comm.worldSize)
        try mine.withUnsafeBufferPointer { shard in
            try all.withUnsafeMutableBufferPointer { try comm.allGather(shard, into: $0) }
        }
        let perRank = (0..<comm.worldSize).map { r in
            (0..<q).map { i in
                (0..<k).compactMap { slot -> Neighbor? in
                    let at = r * mine.count + 2 * (i * k + slot)
                    return all[at + 1] < 0 ? nil : Neighbor(index: Int(all[at + 1]), similarity: Float(all[at]))
                }
            }
        }
        return merge(perRank, k: k)
    }
}
