// A rank's part of the pool: rows [first, first + count) of the pool's features as unit vectors
// [count, D] (whole blocks of ExactSearch.blockRows, from ExactSearch.shard), and which of them take no
// part in a search (images that could not be read, copies removed by deduplication).

/// The pool rows one rank holds.
public struct PoolShard {
    public let poolSize: Int
    public let dimension: Int
    /// Global pool rows held.
    public let rows: Range<Int>
    /// [rows.count, dimension], unit rows.
    public let vectors: [Float]
    /// Per held row: true when it is left out of searches and clustering.
    public var excluded: [Bool]

    public init(poolSize: Int, dimension: Int, rows: Range<Int>, vectors: [Float], excluded: [Bool]? = nil) {
        precondition(vectors.count == rows.count * dimension, "pool shard: \(vectors.count) values for \(rows)")
        self.poolSize = poolSize
        self.dimension = dimension
        self.rows = rows
        self.vectors = vectors
        self.excluded = excluded ?? [Bool](repeating: false, count: rows.count)
    }

    /// Rank `rank`'s shard of the pool in `file`, its unreadable images excluded.
    public static func read(_ file: FeatureFile, rank: Int, worldSize: Int) throws -> PoolShard {
        let rows = ExactSearch.shard(poolSize: file.count, rank: rank, worldSize: worldSize)
        let excluded = rows.map { file.unreadable.contains($0) }
        return PoolShard(
            poolSize: file.count, dimension: file.dimension, rows: rows, vectors: try file.normalizedRows(rows),
            excluded: excluded)
    }

    /// Excludes every global row of `removed` that this shard holds.
    public mutating func exclude(_ removed: some Sequence<Int>) {
        for row in removed where rows.contains(row) { excluded[row - rows.lowerBound] = true }
    }
}
