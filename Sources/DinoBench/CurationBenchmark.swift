// `bench curation`: the nearest-neighbour search of the curation stages on generated features
// (SyntheticFeatures: `pool` unit vectors of `dimension` around `classes` directions, the queries more
// rows of the same classes), on this job's ranks. Times, in one run: the exact search (queries/s of the
// job, pool vectors scored per second per rank), the inverted index's training (k-means on its strided
// subset), filling (vectors/s per rank) and search at each probe count (queries/s, recall@k against the
// exact answers of the same queries). With --dump (1 rank) the pool and queries go to raw float32
// files, so another library can be timed on the same vectors. Search times are the median of `repeats`.

import DinoCore
import DinoCuration
import Foundation

/// The result of `bench curation`.
public struct CurationBenchmarkReport: Codable, Sendable {
    public struct Probe: Codable, Sendable {
        public var probes: Int
        public var queriesPerSecond: Double
        public var recall: Double
    }

    public var pool: Int
    public var dimension: Int
    public var queries: Int
    public var k: Int
    public var ranks: Int
    public var lists: Int
    public var exactQueriesPerSecond: Double
    /// Pool vectors scored per second per rank by the exact search (queries x pool / ranks / seconds).
    public var exactVectorsScoredPerSecondPerRank: Double
    public var trainSeconds: Double
    /// Pool vectors filed under their list per second per rank.
    public var addVectorsPerSecondPerRank: Double
    public var inverted: [Probe]
}

/// Times exact and inverted search over a generated sharded pool.
public enum CurationBenchmark {
    public static func run(
        pool n: Int, dimension d: Int, queries q: Int, classes: Int, k: Int, lists: Int, probes: [Int], seed: UInt64,
        repeats: Int = 3, dump: String?, communicator comm: any Communicator, log: (String) -> Void
    ) throws -> CurationBenchmarkReport {
        let features = SyntheticFeatures(count: n + q, dimension: d, classes: classes, seed: seed)
        let source = SyntheticFeatures(count: n, dimension: d, classes: classes, seed: seed)
        let rows = ExactSearch.shard(poolSize: n, rank: comm.rank, worldSize: comm.worldSize)
        var started = Date()
        let shard = PoolShard(poolSize: n, dimension: d, rows: rows, vectors: try features.normalizedRows(rows))
        let queries = try features.normalizedRows(n..<(n + q))
        try comm.barrier()
        log(
            String(
                format: "generated %d x %d pool vectors (this rank %d) in %.1f s", n, d, rows.count,
                seconds(since: started)))
        if let dump {
            guard comm.worldSize == 1 else { throw CurationError.input("--dump needs 1 rank") }
            try Data(bytes: shard.vectors, count: shard.vectors.count * 4).write(
                to: URL(fileURLWithPath: dump + "/pool.f32"))
            try Data(bytes: queries, count: queries.count * 4).write(to: URL(fileURLWithPath: dump + "/queries.f32"))
        }
        /// Median seconds of `repeats` runs of `body` (ranks in step), and its last answers.
        func timed(_ body: ([Float]) throws -> [[Neighbor]]) throws -> (seconds: Double, answers: [[Neighbor]]) {
            var times: [Double] = [], answers: [[Neighbor]] = []
            for _ in 0..<repeats {
                try comm.barrier()
                let start = Date()
                answers = []
                for first in stride(from: 0, to: q, by: PoolSearch.queryBlock) {
                    answers += try body(Array(queries[(first * d)..<(Swift.min(q, first + PoolSearch.queryBlock) * d)]))
                }
                try comm.barrier()
                times.append(seconds(since: start))
            }
            return (times.sorted()[times.count / 2], answers)
        }
        // Exact: every query against the whole pool.
        let (exactSeconds, exact) = try timed {
            try ExactSearch.search(queries: $0, in: shard, k: k, communicator: comm)
        }
        log(String(format: "exact: %d queries in %.2f s: %.1f queries/s", q, exactSeconds, Double(q) / exactSeconds))
        // Inverted index: train, fill, search.
        started = Date()
        let centroids = try IVFIndex.trainCentroids(pool: source, lists: lists, seed: seed, communicator: comm)
        try comm.barrier()
        let trainSeconds = seconds(since: started)
        started = Date()
        let index = IVFIndex(
            shard: shard, centroids: centroids, lists: lists,
            assignment: IVFIndex.assignLists(shard, centroids: centroids, lists: lists))
        let addSeconds = seconds(since: started)
        try comm.barrier()
        log(
            String(
                format: "ivf: %d lists trained in %.1f s, %d vectors filed in %.2f s (%.0f vectors/s per rank)", lists,
                trainSeconds, rows.count, addSeconds, Double(rows.count) / addSeconds))
        var results: [CurationBenchmarkReport.Probe] = []
        for p in probes {
            let (elapsed, found) = try timed { try index.search(queries: $0, k: k, probes: p, communicator: comm) }
            let recall =
                zip(found, exact).map { Double(Set($0.map(\.index)).intersection($1.map(\.index)).count) }
                .reduce(0, +) / Double(q * k)
            results.append(.init(probes: p, queriesPerSecond: Double(q) / elapsed, recall: recall))
            log(String(format: "ivf probes %d: %.1f queries/s, recall@%d %.4f", p, Double(q) / elapsed, k, recall))
        }
        return CurationBenchmarkReport(
            pool: n, dimension: d, queries: q, k: k, ranks: comm.worldSize, lists: lists,
            exactQueriesPerSecond: Double(q) / exactSeconds,
            exactVectorsScoredPerSecondPerRank: Double(q) * Double(n) / Double(comm.worldSize) / exactSeconds,
            trainSeconds: trainSeconds, addVectorsPerSecondPerRank: Double(rows.count) / addSeconds, inverted: results)
    }

    static func seconds(since start: Date) -> Double { Date().timeIntervalSince(start) }
}
