// The curation stages on a planted pool (PlantedPool: 2000 class vectors in 128 dims plus planted
// copies, chains, near misses, near-copies of evaluation vectors, unreadable rows), one process:
// every planted copy group found whole and nothing else joined (exact search, and the inverted index
// at recall and precision >= 0.95), the evaluation copies removed, retrieval from the queries' two
// classes, unreadable rows never retrieved, a stopped run resumed to the same files, a changed setting
// recomputed, separate copy-detection features read by the copy rule, bad inputs refused in one
// sentence. Thresholds: copies 0.9 (planted copies are at about 0.97 and 0.93, near misses at 0.8),
// evaluation 0.7 (same-class similarities stay below ~0.6).

import DinoCheckpoint
import DinoCore
import DinoCuration
import DinoTestSupport
import Foundation
import Testing

@Suite("curation: the stages on a planted pool")
struct CurationPipelineTests {
    static func options(_ output: String) -> CurationOptions {
        var options = CurationOptions(output: output)
        options.copyThreshold = 0.9
        options.evaluationThreshold = 0.7
        options.clusters = 8
        options.perCluster = 40
        return options
    }

    static func pipeline(
        _ truth: PlantedPool.Truth, _ options: CurationOptions, log: @escaping (String) -> Void = { _ in }
    )
        throws -> CurationPipeline
    {
        try CurationPipeline(
            options: options, pool: FeatureFile(path: truth.poolFile), queries: FeatureFile(path: truth.queriesFile),
            evaluation: FeatureFile(path: truth.evaluationFile), communicator: SingleProcessCommunicator(), log: log)
    }

    /// Pair-level recall and precision of the found groups against the planted ones.
    static func pairScores(found: [[Int]], planted: [[Int]]) -> (recall: Double, precision: Double) {
        func pairs(_ groups: [[Int]]) -> Set<[Int]> {
            var all = Set<[Int]>()
            for g in groups { for i in g.indices { for j in g.indices where i < j { all.insert([g[i], g[j]]) } } }
            return all
        }
        let truth = pairs(planted), got = pairs(found)
        let hit = Double(truth.intersection(got).count)
        return (hit / Double(max(1, truth.count)), got.isEmpty ? 1 : hit / Double(got.count))
    }

    @Test("exact search: every planted group whole, nothing else; evaluation copies removed; retrieval by class")
    func exactStages() throws {
        let root = try TestPaths.temporaryDirectory().path
        let truth = try PlantedPool.write(to: root)
        var options = Self.options(root + "/out")
        options.retrieval = CurationOptions.RetrievalChoice.nearest
        let pipeline = try Self.pipeline(truth, options)
        #expect(!pipeline.usesInvertedIndex)
        let report = try #require(try pipeline.run())
        let dedup = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: root + "/out/dedup.json")))
        let result = try #require(((dedup as? [String: Any])?["result"] as? [String: Any]))
        let groups = (result["groups"] as? [[Int]]) ?? []
        // The pool's groups are exactly the planted ones (those of evaluation copies too).
        #expect(groups == truth.copyGroups)
        let grouped = Set(groups.joined())
        for (a, b) in truth.nearMisses { #expect(!(grouped.contains(a) && grouped.contains(b))) }
        #expect(Set((result["evaluationOverlaps"] as? [Int]) ?? []) == Set(truth.evaluationCopies))
        #expect(report.dedup.evaluationImagesMatched == truth.matchedEvaluationImages)
        let evaluationRows = Set(truth.evaluationCopies)
        let plantedCopies = truth.copyGroups.filter { evaluationRows.isDisjoint(with: $0) }.map { $0.count - 1 }
            .reduce(0, +)
        #expect(report.dedup.copiesRemoved == plantedCopies)
        #expect(report.pool.unreadable == truth.unreadable.count)
        // Retrieval: 4 per query, all from the queries' classes, none removed or unreadable.
        let labels = try FeatureFile(path: truth.poolFile).labels
        let retrieval = try JSONDecoder().decode(
            StageProbe.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/out/retrieval.json")))
        let removed = Set(truth.evaluationCopies + truth.unreadable)
            .union(truth.copyGroups.flatMap { $0.dropFirst() })
        #expect(retrieval.result.perQuery.allSatisfy { $0.count == 4 })
        for (q, rows) in retrieval.result.perQuery.enumerated() {
            for row in rows {
                #expect(labels[row] == q % 2, "query \(q) retrieved row \(row) of class \(labels[row])")
                #expect(!removed.contains(row))
            }
        }
        // The list: one line per distinct retrieved row, readable as a list file.
        let lines = try String(contentsOfFile: pipeline.listFile, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == report.curatedImages && lines.count == Set(retrieval.result.retrieved).count)
        #expect(lines.allSatisfy { $0.hasPrefix("/nonexistent/pool/") })
        #expect(FileManager.default.fileExists(atPath: pipeline.contactSheetFile))
    }

    @Test("inverted index: copy pairs recall and precision >= 0.95; all lists probed = exact")
    func invertedIndex() throws {
        let root = try TestPaths.temporaryDirectory().path
        let truth = try PlantedPool.write(to: root)
        var options = Self.options(root + "/ivf")
        options.index = .inverted
        options.probes = 8
        options.stopAfter = .dedup
        let pipeline = try Self.pipeline(truth, options)
        #expect(pipeline.usesInvertedIndex)
        try pipeline.run()
        let dedup = try JSONDecoder().decode(
            DedupProbe.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/ivf/dedup.json")))
        let scores = Self.pairScores(found: dedup.result.groups, planted: truth.copyGroups)
        #expect(scores.recall >= 0.95 && scores.precision >= 0.95, "\(scores)")
        // Every list probed: the neighbours of the exact search.
        let pool = try FeatureFile(path: truth.poolFile)
        let shard = try PoolShard.read(pool, rank: 0, worldSize: 1)
        let comm = SingleProcessCommunicator()
        let centroids = try IVFIndex.trainCentroids(pool: pool, lists: 50, seed: 1, communicator: comm)
        let index = IVFIndex(
            shard: shard, centroids: centroids, lists: 50,
            assignment: IVFIndex.assignLists(shard, centroids: centroids, lists: 50))
        let queries = try pool.normalizedRows(0..<64)
        let exact = try ExactSearch.search(queries: queries, in: shard, k: 10, communicator: comm)
        let all = try index.search(queries: queries, k: 10, probes: 50, communicator: comm)
        for i in 0..<64 {
            #expect(all[i].map(\.index) == exact[i].map(\.index))
            for (a, b) in zip(all[i], exact[i]) { #expect(abs(a.similarity - b.similarity) < 1e-5) }
        }
        // Recall@10 at 8 of 50 lists on this pool.
        let probed = try index.search(queries: queries, k: 10, probes: 8, communicator: comm)
        let recall = zip(probed, exact).map { Double(Set($0.map(\.index)).intersection($1.map(\.index)).count) / 10 }
        #expect(recall.reduce(0, +) / 64 >= 0.9)
    }

    @Test("cluster retrieval: the queries' two classes only")
    func clusterRetrieval() throws {
        let root = try TestPaths.temporaryDirectory().path
        let truth = try PlantedPool.write(to: root)
        let report = try #require(try Self.pipeline(truth, Self.options(root + "/c")).run())
        #expect(report.retrieval.method == "clusters")
        let labels = try FeatureFile(path: truth.poolFile).labels
        let lines = try String(contentsOfFile: root + "/c/curated.txt", encoding: .utf8).split(separator: "\n")
        // Two clusters selected (12 queries each), 40 images from each.
        #expect(report.retrieval.selectedClusterSizes?.count == 2 && lines.count == 80)
        let classes = lines.map { labels[Int($0.split(separator: "/").last!.split(separator: ".")[0])!] }
        let inQueryClasses = classes.filter { truth.queryClasses.contains($0) }.count
        #expect(Double(inQueryClasses) / Double(classes.count) >= 0.95, "\(classes)")
    }

    @Test("a stopped run continues from its stage files to the same outputs; a changed setting recomputes")
    func resume() throws {
        let root = try TestPaths.temporaryDirectory().path
        let truth = try PlantedPool.write(to: root)
        try Self.pipeline(truth, Self.options(root + "/straight")).run()
        var stopped = Self.options(root + "/stopped")
        stopped.stopAfter = .dedup
        try Self.pipeline(truth, stopped).run()
        #expect(!FileManager.default.fileExists(atPath: root + "/stopped/retrieval.json"))
        var lines: [String] = []
        try Self.pipeline(truth, Self.options(root + "/stopped"), log: { lines.append($0) }).run()
        #expect(lines.contains { $0.hasPrefix("dedup: read") })
        #expect(!lines.contains { $0.hasPrefix("retrieval: read") })
        for name in ["dedup.json", "retrieval.json", "curated.txt"] {
            #expect(
                try Data(contentsOf: URL(fileURLWithPath: root + "/straight/" + name))
                    == Data(contentsOf: URL(fileURLWithPath: root + "/stopped/" + name)), "\(name)")
        }
        var changed = Self.options(root + "/stopped")
        changed.copyThreshold = 0.95
        lines = []
        try Self.pipeline(truth, changed, log: { lines.append($0) }).run()
        #expect(!lines.contains { $0.contains(": read") })
    }

    /// A feature file of the same images (paths, labels) as `file` whose vectors are fresh class vectors.
    static func unrelated(to file: String, at path: String, seed: UInt64) throws {
        let source = try FeatureFile(path: file)
        let generated = SyntheticFeatures(count: source.count, dimension: 96, classes: 8, seed: seed)
        let out = try HDF5File.create(path, truncate: true)
        try generated.normalizedRows(0..<source.count).withUnsafeBufferPointer {
            try out.write("cls", values: $0, shape: [source.count, 96])
        }
        try out.write("paths", strings: source.paths)
        try out.write("labels", integers: source.labels.map { Int64($0) }, shape: [source.count])
        try out.flush()
    }

    @Test("copy features of their own: the copy rule reads them, retrieval the main features")
    func copyFeatures() throws {
        let root = try TestPaths.temporaryDirectory().path
        let truth = try PlantedPool.write(to: root)
        try Self.unrelated(to: truth.poolFile, at: root + "/main-pool.h5", seed: 41)
        try Self.unrelated(to: truth.evaluationFile, at: root + "/main-eval.h5", seed: 42)
        try Self.unrelated(to: truth.queriesFile, at: root + "/main-queries.h5", seed: 43)
        func run(_ name: String, copies: Bool) throws -> (CurationReport, [[Int]]) {
            var options = Self.options(root + "/" + name)
            options.retrieval = CurationOptions.RetrievalChoice.nearest
            let pipeline = try CurationPipeline(
                options: options, pool: FeatureFile(path: root + "/main-pool.h5"),
                queries: FeatureFile(path: root + "/main-queries.h5"),
                evaluation: FeatureFile(path: root + "/main-eval.h5"),
                copyPool: copies ? FeatureFile(path: truth.poolFile) : nil,
                copyEvaluation: copies ? FeatureFile(path: truth.evaluationFile) : nil,
                communicator: SingleProcessCommunicator(), log: { _ in })
            let report = try #require(try pipeline.run())
            let dedup = try JSONDecoder().decode(
                DedupProbe.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/\(name)/dedup.json")))
            return (report, dedup.result.groups)
        }
        let (withCopies, groups) = try run("copies", copies: true)
        #expect(groups == truth.copyGroups)
        #expect(withCopies.dedup.features == truth.poolFile)
        #expect(withCopies.dedup.evaluationImagesMatched == truth.matchedEvaluationImages)
        // The main features hold no copies: without the copy features nothing is grouped.
        let (without, none) = try run("main", copies: false)
        #expect(none.isEmpty && without.dedup.copiesRemoved == 0)
        // Copy features of other images are refused, naming both files.
        #expect {
            try CurationPipeline(
                options: Self.options(root + "/x"), pool: FeatureFile(path: root + "/main-pool.h5"),
                queries: FeatureFile(path: root + "/main-queries.h5"), evaluation: nil,
                copyPool: FeatureFile(path: truth.queriesFile), communicator: SingleProcessCommunicator(), log: { _ in }
            )
        } throws: { "\($0)".contains(truth.queriesFile) && "\($0)".contains("main-pool.h5") }
    }

    @Test("an empty pool and features of another dimension are refused, naming the files")
    func badInputs() throws {
        let root = try TestPaths.temporaryDirectory().path
        let truth = try PlantedPool.write(to: root)
        let small = try TestPaths.temporaryDirectory().path
        let d64 = try PlantedPool.write(to: small, baseRows: 100, dimension: 64)
        #expect {
            try CurationPipeline(
                options: Self.options(root + "/x"), pool: FeatureFile(path: truth.poolFile),
                queries: FeatureFile(path: d64.queriesFile), evaluation: nil, communicator: SingleProcessCommunicator(),
                log: { _ in })
        } throws: { "\($0)".contains(d64.queriesFile) && "\($0)".contains("64-dimensional") }
        // A pool whose every image was unreadable.
        let empty = try HDF5File.create(small + "/empty.h5", truncate: true)
        try [Float](repeating: 0, count: 2 * 64).withUnsafeBufferPointer {
            try empty.write("cls", values: $0, shape: [2, 64])
        }
        try empty.write("paths", strings: ["a.png", "b.png"])
        try empty.write("unreadable", integers: [0, 1], shape: [2])
        try empty.flush()
        #expect {
            try CurationPipeline(
                options: Self.options(root + "/x"), pool: FeatureFile(path: small + "/empty.h5"),
                queries: FeatureFile(path: d64.queriesFile), evaluation: nil, communicator: SingleProcessCommunicator(),
                log: { _ in })
        } throws: { "\($0)".contains("no readable image") }
        #expect { try FeatureFile(path: small + "/missing.h5") } throws: { "\($0)".contains("missing.h5") }
    }
}

/// The parts of the stage files the tests read.
struct StageProbe: Decodable {
    struct Result: Decodable {
        var perQuery: [[Int]]
        var retrieved: [Int]
    }
    var result: Result
}

struct DedupProbe: Decodable {
    struct Result: Decodable { var groups: [[Int]] }
    var result: Result
}
