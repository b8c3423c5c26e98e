// The copy-detection model in curation, end to end on 2 ranks: a tiny model trained with the copy loss
// (and one without, for retrieval; LayerScale 1 so that 8 steps give image-dependent features), then
// `curate --copy-checkpoint` on a planted pool of images (PlantedCopies: validation images of the
// embedded dataset with exact copies, JPEG re-encodings, 85 %-area crops and colour shifts). The copy
// model embeds the pool into features/pool-copy.h5 (the main model into features/pool.h5, for
// retrieval), and at a threshold where the two models' features would group the pool differently, the
// copy groups are exactly the connected components of the copy features' pairs above it (brute force in
// float64), exact copies among them. Whether a trained copy model finds the planted copies is measured
// by Benchmarks/copy-detection.py on Configs/copy-detection.yaml (600 iterations, beyond a test's
// budget; Benchmarks/RESULTS.md).

import DinoCheckpoint
import DinoCuration
import DinoTestSupport
import Foundation
import Testing

@Suite("copy detection on images")
struct CopyDetectionTests {
    @Test("curate --copy-checkpoint: the copy model's features decide the copy groups, the main model retrieves")
    func copyCheckpoint() throws {
        let root = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try TrainingRuns.synthesize(into: root + "/data")
        for (run, extra) in [("main", [String]()), ("copy", ["copy_detection.loss_weight=1", "dino.loss_weight=0"])] {
            let train = try ProcessRunner.mpirun(
                ranks: 2,
                [
                    "train", "--config", "Configs/tests/tiny.yaml", "--data", root + "/data/train", "--output",
                    "\(root)/\(run)", "train.OFFICIAL_EPOCH_LENGTH=4", "student.layerscale=1.0",
                ] + extra, timeout: 240)
            #expect(train.status == 0, "\(train.stdout)\n\(train.stderr)")
        }
        let log = try String(contentsOfFile: root + "/copy/metrics.jsonl", encoding: .utf8)
        #expect(log.contains("\"copy_loss\""))
        let truth = try PlantedCopies.write(to: root + "/pool", perClass: 4, every: 2, size: 56)
        func curate(_ extra: [String]) throws {
            let result = try ProcessRunner.mpirun(
                ranks: 2,
                [
                    "curate", "--pool", truth.listFile, "--queries", root + "/data/val", "--checkpoint",
                    root + "/main", "--copy-checkpoint", root + "/copy", "--output", root + "/curated",
                    "--retrieval", "nearest", "--per-query", "1",
                ] + extra, timeout: 300)
            #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        }
        try curate(["--stop-after", "features"])
        let copyFile = try HDF5File.open(root + "/curated/features/pool-copy.h5")
        let mainFile = try HDF5File.open(root + "/curated/features/pool.h5")
        #expect(try copyFile.stringAttribute("checkpoint").contains("/copy/"))
        #expect(try mainFile.stringAttribute("checkpoint").contains("/main/"))
        let copySimilarities = try Self.similarities(copyFile), mainSimilarities = try Self.similarities(mainFile)
        // A threshold in a gap of the copy features' similarities (no pair within 1e-4 of it: curate compares
        // float32 dot products) where the two models group the pool differently, so the test tells them apart.
        let sorted = copySimilarities.flatMap { $0 }.sorted()
        var candidates: [Double] = []
        for (low, high) in zip(sorted, sorted.dropFirst()) where high - low > 2e-4 {
            candidates.append((low + high) / 2)
        }
        let differing = candidates.first { t in
            let copyGroups = Self.groups(copySimilarities, above: t)
            return copyGroups.count >= 2 && copyGroups != Self.groups(mainSimilarities, above: t)
        }
        let threshold = try #require(differing)
        try curate(["--copy-threshold", String(threshold)])
        let dedup = try JSONDecoder().decode(
            GroupsProbe.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/curated/dedup.json")))
        #expect(dedup.result.groups == Self.groups(copySimilarities, above: threshold), "threshold \(threshold)")
        // Exact copies embed to the same features (cosine 1, above any threshold found in the gaps).
        for copy in truth.copies where copy.kind == .exact {
            #expect(dedup.result.groups.contains { $0.contains(copy.source) && $0.contains(copy.copy) })
        }
    }

    /// Cosine similarities of the rows of an `embed` file's `cls`, upper triangle: row i holds (i, j > i).
    static func similarities(_ file: HDF5File) throws -> [[Double]] {
        let d = try file.shape(of: "cls")[1], values = try file.readDoubles("cls")
        let unit = (0..<(values.count / d)).map { i -> [Double] in
            let row = Array(values[(i * d)..<((i + 1) * d)])
            let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return row.map { $0 / norm }
        }
        return unit.indices.map { i in unit[(i + 1)...].map { zip(unit[i], $0).reduce(0) { $0 + $1.0 * $1.1 } } }
    }

    /// Connected components (two or more rows, each sorted, by smallest row) of the pairs above `threshold`.
    static func groups(_ similarities: [[Double]], above threshold: Double) -> [[Int]] {
        var parent = Array(similarities.indices)
        func root(_ i: Int) -> Int { parent[i] == i ? i : root(parent[i]) }
        for (i, row) in similarities.enumerated() {
            for (offset, value) in row.enumerated() where value > threshold {
                let (a, b) = (root(i), root(i + 1 + offset))
                parent[max(a, b)] = min(a, b)
            }
        }
        let members = Dictionary(grouping: similarities.indices, by: root)
        return members.values.filter { $0.count > 1 }.map { $0.sorted() }.sorted { $0[0] < $1[0] }
    }
}
