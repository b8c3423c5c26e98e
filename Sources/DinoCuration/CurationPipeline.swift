// `dinov2-fsdp curate` after its features exist: the stages of DINOv2's curation (section 3) over a pool
// sharded across ranks, each stage's result a file in the output folder that a rerun with the same inputs
// and settings reads instead of recomputing (a killed run continues where it stopped):
//   index.h5        (inverted index only) the coarse centroids and every pool row's list (copy-index.h5:
//                   the same for separate copy-detection features);
//   dedup.json      copy groups, rows removed as copies and as near-duplicates of evaluation images;
//   retrieval.json  the pool rows retrieved per curated image;
// then the outputs: curated.txt (a list file `train --data` reads), report.json and contact-sheet.png.
// A stage file records the settings and inputs it was computed from (its `parameters`, which include the
// previous stage's), so changing a setting recomputes that stage and the ones after it. Rank 0 writes
// every file through a temporary name renamed when complete; every rank computes the same results.

import DinoCheckpoint
import DinoCore
import Foundation

/// The settings of a curation run.
public struct CurationOptions: Sendable {
    public enum IndexChoice: String, Sendable, CaseIterable {
        case automatic = "auto"
        case exact
        case inverted = "ivf"
    }

    public enum RetrievalChoice: String, Sendable, CaseIterable {
        case automatic = "auto"
        case nearest
        case clusters
    }

    public enum Stage: String, Sendable, CaseIterable {
        case features, index, dedup, retrieval
    }

    public var output: String
    /// Cosine similarity above which two pool images are copies.
    public var copyThreshold: Float = 0.6
    /// Cosine similarity above which a pool image is a near-duplicate of an evaluation image.
    public var evaluationThreshold: Float = 0.45
    public var neighbors = Deduplication.defaultNeighbors
    public var index = IndexChoice.automatic
    /// Inverted lists (nil: IVFIndex.defaultLists) and lists visited per query.
    public var lists: Int?
    public var probes = 16
    public var retrieval = RetrievalChoice.automatic
    /// Sample-based retrieval: pool images per curated image.
    public var perQuery = 4
    /// Cluster-based retrieval: clusters (nil: pool / 100, at least 1), images per selected cluster, a
    /// cluster is selected with more than `minimumQueries` curated images, at most `cap` images in all.
    public var clusters: Int?
    public var perCluster = 10_000
    public var minimumQueries = 3
    public var cap = 1_000_000
    public var clusterIterations = 20
    public var seed: UInt64 = 0
    /// Also list the curated images themselves ("as is" in the paper's Table 15).
    public var includeQueries = false
    /// Queries shown in the contact sheet.
    public var contactSheetQueries = 8
    /// Ends the run after this stage (its file written).
    public var stopAfter: Stage?

    /// Pools up to this size are searched exactly by `auto`.
    public static let exactSearchLimit = 200_000
    /// Curated sets from this size use sample-based retrieval under `auto` (the paper's 1M rule).
    public static let nearestRetrievalFrom = 1_000_000

    public init(output: String) { self.output = output }

    /// Refuses settings that cannot work, naming the option.
    public func validate() throws {
        func require(_ condition: Bool, _ text: String) throws {
            if !condition { throw CurationError.input(text) }
        }
        try require(copyThreshold > 0 && copyThreshold <= 1, "--copy-threshold must be in (0, 1]")
        try require(evaluationThreshold > 0 && evaluationThreshold <= 1, "--evaluation-threshold must be in (0, 1]")
        try require(neighbors > 0, "--neighbors must be positive")
        try require(probes > 0, "--probes must be positive")
        try require((lists ?? 1) > 0, "--lists must be positive")
        try require(perQuery > 0, "--per-query must be positive")
        try require((clusters ?? 1) > 0, "--clusters must be positive")
        try require(perCluster > 0, "--per-cluster must be positive")
        try require(minimumQueries >= 0, "--minimum-queries must be at least 0")
        try require(cap > 0, "--cap must be positive")
        try require(clusterIterations >= 0, "--cluster-iterations must be at least 0")
    }
}

/// The curation stages over feature files.
public final class CurationPipeline {
    public let options: CurationOptions
    public let pool: FeatureFile
    public let queries: FeatureFile
    public let evaluation: FeatureFile?
    private let comm: any Communicator
    /// Features for the copy rule when they are not `pool`'s and `evaluation`'s (the paper deduplicates
    /// with a copy-detection descriptor, SSCD, and retrieves with another model): the same images, rows
    /// and paths.
    public let copyPool: FeatureFile?
    public let copyEvaluation: FeatureFile?
    private let log: (String) -> Void

    public init(
        options: CurationOptions, pool: FeatureFile, queries: FeatureFile, evaluation: FeatureFile?,
        copyPool: FeatureFile? = nil, copyEvaluation: FeatureFile? = nil, communicator: any Communicator,
        log: @escaping (String) -> Void
    ) throws {
        try options.validate()
        guard pool.count > pool.unreadable.count else {
            throw CurationError.input("the pool \(pool.path) holds no readable image; nothing to curate")
        }
        guard queries.count > queries.unreadable.count else {
            throw CurationError.input("the curated set \(queries.path) holds no readable image; nothing to retrieve")
        }
        try pool.checkSameDimension(as: queries)
        if let evaluation { try pool.checkSameDimension(as: evaluation) }
        try Self.checkCopyFeatures(copyPool, of: pool)
        try Self.checkCopyFeatures(copyEvaluation, of: evaluation)
        if copyPool != nil, evaluation != nil, copyEvaluation == nil {
            throw CurationError.input(
                "copy features are given for the pool but not for the evaluation images; pass both or neither")
        }
        if let copyPool, let copyEvaluation { try copyPool.checkSameDimension(as: copyEvaluation) }
        self.copyPool = copyPool
        self.copyEvaluation = copyEvaluation
        self.options = options
        self.pool = pool
        self.queries = queries
        self.evaluation = evaluation
        self.comm = communicator
        self.log = log
    }

    /// Ranks of the job.
    public var worldSize: Int { comm.worldSize }

    /// Refuses copy features that are not of the same images, in the same order, as `main`.
    static func checkCopyFeatures(_ copy: FeatureFile?, of main: FeatureFile?) throws {
        guard let copy else { return }
        guard let main else {
            throw CurationError.input("\(copy.path): copy features are given for a set that is not")
        }
        guard copy.count == main.count, copy.paths == main.paths else {
            throw CurationError.input(
                "\(copy.path) does not list the images of \(main.path) in the same order (\(copy.count) rows "
                    + "against \(main.count)); embed the same folder or list file with both models")
        }
    }

    /// The features the copy rule reads: the copy features when given.
    var dedupPool: FeatureFile { copyPool ?? pool }
    var dedupEvaluation: FeatureFile? { copyPool == nil ? evaluation : copyEvaluation }
    var copyIndexFile: String { options.output + "/copy-index.h5" }

    var indexFile: String { options.output + "/index.h5" }
    var dedupFile: String { options.output + "/dedup.json" }
    var retrievalFile: String { options.output + "/retrieval.json" }
    public var listFile: String { options.output + "/curated.txt" }
    public var reportFile: String { options.output + "/report.json" }
    public var contactSheetFile: String { options.output + "/contact-sheet.png" }

    /// The inverted index is used for pools above `exactSearchLimit` under `auto`.
    public var usesInvertedIndex: Bool {
        switch options.index {
        case .automatic: return pool.count > CurationOptions.exactSearchLimit
        case .exact: return false
        case .inverted: return true
        }
    }

    public var listCount: Int { options.lists ?? IVFIndex.defaultLists(poolSize: pool.count) }

    public var usesClusters: Bool {
        switch options.retrieval {
        case .automatic: return queries.count < CurationOptions.nearestRetrievalFrom
        case .nearest: return false
        case .clusters: return true
        }
    }

    public var clusterCount: Int { options.clusters ?? Swift.max(1, pool.count / 100) }

    /// Identifies a feature file's content for the stage parameters.
    private func identity(_ file: FeatureFile) -> String {
        let attributes = try? FileManager.default.attributesOfItem(atPath: file.path)
        let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
        let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        return "\(file.path)|\(file.count)x\(file.dimension)|\(size)|\(Int64(modified * 1000))"
    }

    private func indexParameters(_ features: FeatureFile) -> String {
        guard usesInvertedIndex else { return "exact" }
        return "ivf lists=\(listCount) seed=\(options.seed) pool=\(identity(features))"
    }

    private var indexParameters: String { indexParameters(pool) }

    private var dedupParameters: String {
        "\(indexParameters(dedupPool)); probes=\(usesInvertedIndex ? options.probes : 0) "
            + "copy>\(options.copyThreshold) evaluation>\(options.evaluationThreshold) k=\(options.neighbors) "
            + "pool=\(identity(dedupPool)) evaluation=\(dedupEvaluation.map(identity) ?? "none")"
    }

    private var retrievalParameters: String {
        let method =
            usesClusters
            ? "clusters k=\(clusterCount) m=\(options.perCluster) min>\(options.minimumQueries) cap=\(options.cap) "
                + "iterations=\(options.clusterIterations) seed=\(options.seed)"
            : "nearest n=\(options.perQuery)"
        return "\(dedupParameters); \(indexParameters) \(method) queries=\(identity(queries))"
    }

    /// Runs (or resumes) every stage and writes the outputs; collective. Returns the report (nil when
    /// stopped early by `stopAfter`).
    @discardableResult
    public func run() throws -> CurationReport? {
        try FileManager.default.createDirectory(atPath: options.output, withIntermediateDirectories: true)
        var shard = try PoolShard.read(pool, rank: comm.rank, worldSize: comm.worldSize)
        var index: IVFIndex?
        let method: PoolSearch.Method = usesInvertedIndex ? .inverted(probes: options.probes) : .exact
        if usesInvertedIndex { index = try buildIndex(pool, shard: shard, file: indexFile) }
        // The copy rule's own search when it reads other features (rows unreadable in either left out).
        var copySearch: PoolSearch?
        if let copyPool {
            var copyShard = try PoolShard.read(copyPool, rank: comm.rank, worldSize: comm.worldSize)
            copyShard.exclude(pool.unreadable)
            let copyIndex = usesInvertedIndex ? try buildIndex(copyPool, shard: copyShard, file: copyIndexFile) : nil
            copySearch = PoolSearch(shard: copyShard, index: copyIndex, method: method)
            shard.exclude(copyPool.unreadable)
        }
        if options.stopAfter == .index { return nil }
        var search = PoolSearch(shard: shard, index: index, method: method)
        let dedup = try stage(dedupFile, parameters: dedupParameters, name: "dedup") {
            try Deduplication.run(
                search: copySearch ?? search, pool: dedupPool, evaluation: dedupEvaluation,
                neighbors: options.neighbors, copyThreshold: options.copyThreshold,
                evaluationThreshold: options.evaluationThreshold, communicator: comm)
        }
        log(
            "dedup: \(dedup.groups.count) copy groups, \(dedup.copies.count) copies removed, "
                + "\(dedup.evaluationOverlaps.count) pool images removed as near-duplicates of "
                + "\(dedup.evaluationImagesMatched) evaluation images")
        if options.stopAfter == .dedup { return nil }
        let removed = Set(dedup.removed)
        search.exclude(removed)
        shard.exclude(removed)
        let retrieval = try stage(retrievalFile, parameters: retrievalParameters, name: "retrieval") {
            if usesClusters {
                return try Retrieval.clusterSampling(
                    shard: shard, queries: queries, clusters: clusterCount, iterations: options.clusterIterations,
                    initialisation: clusterCount <= 1024 ? .kMeansPlusPlus : .random,
                    minimumQueries: options.minimumQueries, perCluster: options.perCluster, cap: options.cap,
                    seed: options.seed, communicator: comm)
            }
            return try Retrieval.nearest(search: search, queries: queries, n: options.perQuery, communicator: comm)
        }
        log("retrieval: \(retrieval.retrieved.count) distinct pool images for \(queries.count) curated images")
        if options.stopAfter == .retrieval { return nil }
        let report = CurationReport(pipeline: self, dedup: dedup, retrieval: retrieval, index: index)
        if comm.rank == 0 {
            try writeList(retrieval)
            try write(try report.json(), to: reportFile)
            let sheet = try ContactSheet.render(
                queries: queries, pool: pool, retrieval: retrieval, rows: options.contactSheetQueries)
            try write(sheet, to: contactSheetFile)
        }
        try comm.barrier()
        return report
    }

    /// The inverted index of `pool`'s features, read from `indexFile` when it matches, else trained, filled
    /// and saved.
    private func buildIndex(_ pool: FeatureFile, shard: PoolShard, file indexFile: String) throws -> IVFIndex {
        let lists = listCount, indexParameters = indexParameters(pool)
        if let saved = try? HDF5File.open(indexFile), (try? saved.stringAttribute("parameters")) == indexParameters {
            var centroids = [Float](repeating: 0, count: lists * pool.dimension)
            try centroids.withUnsafeMutableBufferPointer { try saved.read("centroids", range: 0..<$0.count, into: $0) }
            let all = try saved.readDoubles("list")
            log("index: read \(indexFile) (\(lists) lists)")
            return IVFIndex(
                shard: shard, centroids: centroids, lists: lists, assignment: shard.rows.map { Int(all[$0]) })
        }
        guard lists <= pool.count - pool.unreadable.count else {
            throw CurationError.input(
                "--lists \(lists) exceeds the \(pool.count - pool.unreadable.count) readable pool images")
        }
        let started = Date()
        let centroids = try IVFIndex.trainCentroids(pool: pool, lists: lists, seed: options.seed, communicator: comm)
        let assignment = IVFIndex.assignLists(shard, centroids: centroids, lists: lists)
        let all = try comm.allGatherRows(assignment.map { Int64($0) })
        if comm.rank == 0 {
            let temporary = indexFile + ".tmp-\(getpid())"
            do {
                let file = try HDF5File.create(temporary, truncate: true)
                try centroids.withUnsafeBufferPointer {
                    try file.write("centroids", values: $0, shape: [lists, pool.dimension])
                }
                try file.write("list", integers: all, shape: [pool.count])
                try file.setAttribute("parameters", string: indexParameters)
                try file.flush()
            }
            try FileSafety.durableRename(temporary, to: indexFile)
        }
        try comm.barrier()
        log(
            "index: \(lists) lists trained and filled in \(String(format: "%.1f", Date().timeIntervalSince(started))) s"
        )
        return IVFIndex(shard: shard, centroids: centroids, lists: lists, assignment: assignment)
    }

    /// A stage's result: read from `path` when its parameters match, else computed and saved.
    private func stage<Result: Codable>(
        _ path: String, parameters: String, name: String, compute: () throws -> Result
    ) throws -> Result {
        if let data = FileManager.default.contents(atPath: path),
            let saved = try? JSONDecoder().decode(StageFile<Result>.self, from: data), saved.parameters == parameters
        {
            log("\(name): read \(path)")
            return saved.result
        }
        let result = try compute()
        if comm.rank == 0 {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try write(try encoder.encode(StageFile(parameters: parameters, result: result)), to: path)
        }
        try comm.barrier()
        return result
    }

    /// The curated list: one pool image per line (absolute path, then its label when it has one), the
    /// curated images first when they are included.
    private func writeList(_ retrieval: RetrievalResult) throws {
        let directory = FileManager.default.currentDirectoryPath
        func line(_ path: String, _ label: Int) -> String {
            let absolute = path.hasPrefix("/") ? path : directory + "/" + path
            return label >= 0 ? "\(absolute) \(label)" : absolute
        }
        var lines: [String] = []
        if options.includeQueries {
            for row in 0..<queries.count where !queries.unreadable.contains(row) {
                lines.append(line(queries.paths[row], queries.labels[row]))
            }
        }
        for row in retrieval.retrieved { lines.append(line(pool.paths[row], pool.labels[row])) }
        try write(Data((lines.joined(separator: "\n") + "\n").utf8), to: listFile)
    }

    private func write(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        try data.write(to: URL(fileURLWithPath: temporary))
        try FileSafety.durableRename(temporary, to: path)
    }
}

/// A stage's saved result and the parameters it was computed from.
struct StageFile<Result: Codable>: Codable {
    var parameters: String
    var result: Result
}
