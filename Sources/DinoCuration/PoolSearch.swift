// Nearest-neighbour search over the sharded pool, exact or through the inverted-file index: what the
// deduplication and retrieval stages ask, whichever index answers. Queries come in blocks (every rank
// the same block), answers are the same on every rank.

import DinoCore

/// The pool searched by the curation stages.
public struct PoolSearch {
    public enum Method: Sendable, Equatable {
        case exact
        /// IVF-Flat visiting `probes` lists per query.
        case inverted(probes: Int)
    }

    public private(set) var shard: PoolShard
    public private(set) var index: IVFIndex?
    public let method: Method
    /// Queries per search call (the exact search scores a block of pool rows against all of them at once).
    public static let queryBlock = 1024

    public init(shard: PoolShard, index: IVFIndex?, method: Method) {
        precondition((index == nil) == (method == .exact), "an inverted search needs its index")
        self.shard = shard
        self.index = index
        self.method = method
    }

    /// Leaves the pool rows `removed` out of every later search.
    public mutating func exclude(_ removed: Set<Int>) {
        shard.exclude(removed)
        index?.exclude(removed)
    }

    /// Each query's best `k` [q][<= k] among the rows not excluded; collective.
    public func search(queries: [Float], k: Int, communicator comm: any Communicator) throws -> [[Neighbor]] {
        switch method {
        case .exact: return try ExactSearch.search(queries: queries, in: shard, k: k, communicator: comm)
        case .inverted(let probes): return try index!.search(queries: queries, k: k, probes: probes, communicator: comm)
        }
    }

    /// Searches every row of `source` as a query, a block at a time, calling `body(firstRow, answers)`;
    /// unreadable rows get no neighbours. Collective.
    public func searchAll(
        of source: some PoolSource, k: Int, communicator comm: any Communicator,
        _ body: (_ first: Int, _ answers: [[Neighbor]]) throws -> Void
    ) throws {
        for first in stride(from: 0, to: source.count, by: Self.queryBlock) {
            let rows = first..<Swift.min(source.count, first + Self.queryBlock)
            var answers = try search(queries: try source.normalizedRows(rows), k: k, communicator: comm)
            for row in rows where source.unreadable.contains(row) { answers[row - first] = [] }
            try body(first, answers)
        }
    }
}
