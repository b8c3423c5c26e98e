// The copy-detection model in curation, end to end on 2 ranks: a tiny model trained with the copy loss
// (and one without, for retrieval; LayerScale 1 so that 8 steps give image-dependent features), then
// `curate --copy-checkpoint` on a planted pool of images (PlantedCopies: validation images of the
// embedded dataset with exact copies, JPEG re-encodings, 85 %-area crops and colour shifts). The copy
// model embeds the pool into features/pool-copy.h5 (the main model into features/pool.h5, for
// retrieval), and at a threshold where the two models' features would group the pool differently, the
// copy groups are exactly the connected components of the copy features' pairs above it (brute force in
// float64), exact copies among them. Whether a trained copy model finds the planted copies is measured
// by Benchmarks/copy-detection.py on Configs/copy-detection.yaml (1000 iterations, beyond a test's
// budget; Benchmarks/RESULTS.md). `calibrate-copies` on a tiny copy model: its threshold is the best cut of
// the planted pairs as a scan here finds it on `embed`'s features, and `curate --copy-checkpoint` then uses
// it without --copy-threshold; a calibration of another checkpoint is refused, and so are other scales than
// the calibration's. The copy features are the multi-scale descriptor: `embed --scales 1,1.5,2` gives the
// normalised sum of the normalised rows `embed` gives at each scale alone.

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
        // Copy features are the multi-scale descriptor by default; retrieval features one scale.
        #expect(try copyFile.stringAttribute("scales") == "1,1.5,2" && mainFile.stringAttribute("scales") == "1")
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

    @Test("calibrate-copies: the threshold of a scan over the planted pairs, curate's default with that model")
    func calibration() throws {
        let root = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try TrainingRuns.synthesize(into: root + "/data", valPerClass: 6)
        let train = try ProcessRunner.mpirun(
            ranks: 2,
            [
                "train", "--config", "Configs/tests/tiny.yaml", "--data", root + "/data/train", "--output",
                root + "/copy", "train.OFFICIAL_EPOCH_LENGTH=4", "student.layerscale=1.0",
                "copy_detection.loss_weight=1", "dino.loss_weight=0",
            ], timeout: 240)
        #expect(train.status == 0, "\(train.stdout)\n\(train.stderr)")
        // 24 held-out images (the val split), a copy of every 3rd: 8 copy pairs among 32 images. The planted
        // images go unless kept; kept, the same calibration (to another file) and the images to check it on.
        func calibrate(_ extra: [String]) throws {
            let result = try ProcessRunner.mpirun(
                ranks: 2,
                [
                    "calibrate-copies", "--checkpoint", root + "/copy", "--images", root + "/data/val", "--count",
                    "24", "--every", "3",
                ] + extra, timeout: 240)
            #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        }
        try calibrate([])
        #expect(!FileManager.default.fileExists(atPath: root + "/copy/copy-calibration.json.images"))
        // Kept, with relative paths (from `root`): the planted list names its files, not the folder again.
        let kept = try ProcessRunner.run(
            URL(fileURLWithPath: "/bin/bash"),
            [
                "-c", "cd \"$0\" && exec bash \"$@\"", root, TestPaths.mpirunWrapper.path, "-n", "2",
                TestPaths.executable.path, "calibrate-copies", "--checkpoint", "copy", "--images", "data/val",
                "--count", "24", "--every", "3", "--keep-images", "planted", "--output", "kept.json",
            ], timeout: 240)
        #expect(kept.status == 0, "\(kept.stdout)\n\(kept.stderr)")
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: root + "/kept.json"))
                == Data(contentsOf: URL(fileURLWithPath: root + "/copy/copy-calibration.json")))
        // Fewer images (24) than --every: refused in one sentence, no planted folder left behind.
        let tooFew = try ProcessRunner.mpirun(
            ranks: 2,
            [
                "calibrate-copies", "--checkpoint", root + "/copy", "--images", root + "/data/val", "--every", "30",
                "--output", root + "/few.json",
            ], timeout: 120)
        #expect(tooFew.status != 0)
        #expect(tooFew.stderr.contains("24 of 24 images could be read, too few to plant a copy per --every 30"))
        #expect(!FileManager.default.fileExists(atPath: root + "/few.json.images"))
        let calibration = try JSONDecoder().decode(
            CopyCalibration.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/copy/copy-calibration.json")))
        #expect(calibration.checkpoint.contains("/copy/checkpoints/"))
        #expect(calibration.sourceImages == 24 && calibration.copyPairs == 8)
        #expect(calibration.otherPairs == 32 * 31 / 2 - 8)
        #expect(calibration.scales == [1, 1.5, 2])
        // The same planted images embedded by `embed` at the calibration's scales (and at each alone), the best
        // cut found by a scan in float64 here.
        for scales in ["1,1.5,2", "1", "1.5", "2"] {
            let embedded = try ProcessRunner.mpirun(
                ranks: 1,
                [
                    "embed", "--checkpoint", root + "/copy", "--data", root + "/planted/pool.txt", "--output",
                    root + "/planted-\(scales).h5", "--scales", scales,
                ], timeout: 120)
            #expect(embedded.status == 0, "\(embedded.stderr)")
        }
        // The multi-scale rows are the normalised sum of the single-scale rows normalised (float32 sums of three
        // unit vectors: 1e-5 is ~100 roundings), and the scales give different features (other input sizes).
        let multi = try Self.unitRows(HDF5File.open(root + "/planted-1,1.5,2.h5"))
        let single = try ["1", "1.5", "2"].map { try Self.unitRows(HDF5File.open(root + "/planted-\($0).h5")) }
        #expect(try HDF5File.open(root + "/planted-1,1.5,2.h5").stringAttribute("scales") == "1,1.5,2")
        for (i, row) in multi.enumerated() {
            let sum = row.indices.map { c in single.reduce(0) { $0 + $1[i][c] } }
            let norm = sum.reduce(0) { $0 + $1 * $1 }.squareRoot()
            #expect(zip(row, sum).allSatisfy { abs($0 - $1 / norm) < 1e-5 }, "image \(i)")
            #expect(zip(single[0][i], single[2][i]).contains { abs($0 - $1) > 1e-3 }, "image \(i)")
        }
        let similarities = try Self.similarities(HDF5File.open(root + "/planted-1,1.5,2.h5"))
        let copies = Set((0..<8).map { [$0 * 3, 24 + $0] })
        var pairs: [(similarity: Double, isCopy: Bool)] = []
        for (i, row) in similarities.enumerated() {
            for (offset, value) in row.enumerated() { pairs.append((value, copies.contains([i, i + 1 + offset]))) }
        }
        // Every cut: just below each similarity.
        let bestScore = pairs.map { pair in
            let rates = CopyCalibration.rates(pairs, above: pair.similarity - 1e-9)
            return min(rates.recall, rates.precision)
        }.max()
        #expect(min(calibration.recall, calibration.precision) == bestScore)
        let rates = CopyCalibration.rates(pairs, above: calibration.threshold)
        #expect(rates.recall == calibration.recall && rates.precision == calibration.precision)
        // No similarity within 1e-5 of the threshold (it is the middle of a gap; `embed` and the calibration
        // normalise in different precisions, ~1e-7 apart).
        #expect(pairs.allSatisfy { abs($0.similarity - calibration.threshold) > 1e-5 })

        // curate with the copy model and no --copy-threshold uses the calibration.
        try TrainingRuns.synthesize(into: root + "/main-data")
        func curate(_ output: String, _ extra: [String] = []) throws -> ProcessResult {
            try ProcessRunner.mpirun(
                ranks: 2,
                [
                    "curate", "--pool", root + "/planted/pool.txt", "--queries", root + "/main-data/val",
                    "--checkpoint", root + "/copy", "--copy-checkpoint", root + "/copy", "--output", output,
                    "--retrieval", "nearest", "--per-query", "1",
                ] + extra, timeout: 300)
        }
        let curated = try curate(root + "/curated")
        #expect(curated.status == 0, "\(curated.stdout)\n\(curated.stderr)")
        let report = try JSONDecoder().decode(
            ThresholdProbe.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/curated/report.json")))
        #expect(Float(report.dedup.copyThreshold) == Float(calibration.threshold))
        #expect(try HDF5File.open(root + "/curated/features/pool-copy.h5").stringAttribute("scales") == "1,1.5,2")
        // Other scales than the calibration's: its threshold does not hold; refused in one sentence.
        let otherScales = try curate(root + "/other-scales", ["--copy-scales", "1"])
        #expect(otherScales.status != 0)
        #expect(otherScales.stderr.contains("copy-calibration.json holds the threshold for --copy-scales 1,1.5,2"))
        #expect(!FileManager.default.fileExists(atPath: root + "/other-scales/curated.txt"))
        // A calibration of another checkpoint folder is refused in one sentence, nothing curated.
        var stale = calibration
        stale.checkpoint = root + "/copy/checkpoints/elsewhere"
        try JSONEncoder().encode(stale).write(to: URL(fileURLWithPath: root + "/copy/copy-calibration.json"))
        let refused = try curate(root + "/refused")
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("calibrate-copies") && refused.stderr.contains("copy-calibration.json"))
        #expect(!FileManager.default.fileExists(atPath: root + "/refused/curated.txt"))
    }

    struct ThresholdProbe: Decodable {
        struct Dedup: Decodable {
            var copyThreshold: Double
            enum CodingKeys: String, CodingKey { case copyThreshold = "copy_threshold" }
        }
        var dedup: Dedup
    }

    /// The rows of an `embed` file's `cls`, each divided by its norm (in float64).
    static func unitRows(_ file: HDF5File) throws -> [[Double]] {
        let d = try file.shape(of: "cls")[1], values = try file.readDoubles("cls")
        return (0..<(values.count / d)).map { i -> [Double] in
            let row = Array(values[(i * d)..<((i + 1) * d)])
            let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return row.map { $0 / norm }
        }
    }

    /// Cosine similarities of the rows of an `embed` file's `cls`, upper triangle: row i holds (i, j > i).
    static func similarities(_ file: HDF5File) throws -> [[Double]] {
        let unit = try unitRows(file)
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
