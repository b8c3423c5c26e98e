// `dinov2-fsdp curate` under mpirun. Feature files with planted structure (PlantedPool, 18000 + planted
// rows in 128 dims: 5 pool blocks, so 4 ranks hold 1, 1, 1 and 2 blocks): 1 rank and 4 ranks write the
// same stage files and the same curated list, with the exact search and cluster retrieval and with the
// inverted index and nearest retrieval. Images: 2 ranks embed a folder holding one broken image with a
// checkpoint's teacher (skipped and counted), a rerun on 1 rank reads the saved features and writes the
// same list, and the list opens as a `--data` list file; `embed`, which does not skip, stops at the broken
// image naming it and leaves no file. Bad invocations end with one sentence.

import DinoCheckpoint
import DinoCuration
import DinoData
import DinoTestSupport
import Foundation
import Testing

@Suite("curate under mpirun", .serialized)
struct CurationTests {
    static let thresholds = ["--copy-threshold", "0.9", "--evaluation-threshold", "0.7"]

    func read(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    @Test(
        "1 rank and 4 ranks: the same stage files and curated list (exact + clusters, ivf + nearest)",
        arguments: [
            ["--index", "exact", "--clusters", "8", "--per-cluster", "40"],
            ["--index", "ivf", "--retrieval", "nearest"],
        ])
    func ranksAgree(settings: [String]) throws {
        let root = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let truth = try PlantedPool.write(to: root, baseRows: 18000, dimension: 128)
        func curate(ranks: Int) throws -> String {
            let output = "\(root)/out\(ranks)"
            let arguments =
                [
                    "curate", "--pool", truth.poolFile, "--queries", truth.queriesFile, "--evaluation",
                    truth.evaluationFile, "--output", output,
                ] + Self.thresholds + settings
            let result = try ProcessRunner.ranked(ranks, arguments, timeout: 300)
            guard result.status == 0 else {
                throw TestFailure(message: "\(ranks) ranks:\n\(result.stdout)\n\(result.stderr)")
            }
            return output
        }
        let one = try curate(ranks: 1), four = try curate(ranks: 4)
        for name in ["dedup.json", "retrieval.json", "curated.txt"] {
            #expect(try read("\(one)/\(name)") == read("\(four)/\(name)"), "\(name)")
        }
        let dedup = try JSONDecoder().decode(GroupsProbe.self, from: read(one + "/dedup.json"))
        #expect(dedup.result.groups == truth.copyGroups || settings.contains("ivf"))
        #expect(Set(dedup.result.evaluationOverlaps) == Set(truth.evaluationCopies) || settings.contains("ivf"))
        if settings.contains("ivf") {
            let a = try HDF5File.open(one + "/index.h5"), b = try HDF5File.open(four + "/index.h5")
            #expect(try a.readDoubles("list") == b.readDoubles("list"))
            #expect(try a.readDoubles("centroids") == b.readDoubles("centroids"))
        }
        // The reports differ only in the rank count (and the list's folder).
        let reports = try [one, four].map {
            try String(contentsOfFile: $0 + "/report.json", encoding: .utf8).split(separator: "\n")
        }
        #expect(reports[0].contains("  \"ranks\" : 1,") && reports[1].contains("  \"ranks\" : 4,"))
        let kept = reports.map { $0.filter { !$0.contains("\"ranks\"") && !$0.contains("\"curated_list\"") } }
        #expect(kept[0] == kept[1] && kept[0].count > 30)
    }

    @Test("images: a broken image skipped and counted on 2 ranks, features reused on 1 rank, the list opens")
    func images() throws {
        let root = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        try TrainingRuns.synthesize(into: root.path, valPerClass: 2)
        let run = root.path + "/run"
        let train = try ProcessRunner.dinov2(
            [
                "train", "--config", "Configs/tests/tiny.yaml", "--data", root.path + "/train", "--output", run,
                "train.OFFICIAL_EPOCH_LENGTH=1",
            ], timeout: 240)
        #expect(train.status == 0, "\(train.stderr)")
        let classes = try FileManager.default.contentsOfDirectory(atPath: root.path + "/train").sorted()
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: "\(root.path)/train/\(classes[0])/broken.png"))
        let arguments = [
            "curate", "--pool", root.path + "/train", "--queries", root.path + "/val", "--checkpoint", run,
            "--retrieval", "nearest", "--per-query", "2", "--copy-threshold", "0.999",
        ]
        let two = try ProcessRunner.mpirun(ranks: 2, arguments + ["--output", root.path + "/c"], timeout: 240)
        #expect(two.status == 0, "\(two.stdout)\n\(two.stderr)")
        #expect(two.stdout.contains("1 unreadable skipped"), "\(two.stdout)")
        let report = try JSONSerialization.jsonObject(with: read(root.path + "/c/report.json")) as? [String: Any]
        #expect((report?["pool"] as? [String: Any])?["unreadable"] as? Int == 1)
        #expect((report?["pool"] as? [String: Any])?["images"] as? Int == 17)
        let list = try String(contentsOfFile: root.path + "/c/curated.txt", encoding: .utf8)
        #expect(!list.contains("broken.png"))
        let dataset = try ImageDataset(path: root.path + "/c/curated.txt")
        #expect(dataset.count == (report?["curated_images"] as? Int) && dataset.count > 0)
        #expect(dataset.samples.allSatisfy { FileManager.default.fileExists(atPath: $0.path) })
        // A rerun reads the saved features and stage files and writes the same list.
        try FileManager.default.removeItem(atPath: root.path + "/c/curated.txt")
        let again = try ProcessRunner.dinov2(arguments + ["--output", root.path + "/c"], timeout: 240)
        #expect(again.status == 0 && again.stdout.contains("features: read"), "\(again.stdout)\n\(again.stderr)")
        #expect(again.stdout.contains("dedup: read") && again.stdout.contains("retrieval: read"))
        #expect(try String(contentsOfFile: root.path + "/c/curated.txt", encoding: .utf8) == list)
        // `embed` does not skip: the broken image stops it with its path, and no file is left behind.
        let embed = try ProcessRunner.dinov2(
            ["embed", "--checkpoint", run, "--data", root.path + "/train", "--output", root.path + "/e.h5"],
            timeout: 240)
        #expect(embed.status != 0 && embed.stderr.contains("\(classes[0])/broken.png"), "\(embed.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root.path).allSatisfy { !$0.hasPrefix("e.h5") })
    }

    @Test("bad invocations: an image source without --checkpoint, features of two dimensions, copy model on features")
    func badInvocations() throws {
        let root = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let a = try PlantedPool.write(to: root, baseRows: 200, dimension: 64)
        try FileManager.default.createDirectory(atPath: root + "/b", withIntermediateDirectories: true)
        let b = try PlantedPool.write(to: root + "/b", baseRows: 200, dimension: 32)
        let images = try ProcessRunner.dinov2([
            "curate", "--pool", root, "--queries", a.queriesFile, "--output", root + "/o",
        ])
        #expect(images.status != 0 && images.stderr.contains("pass --checkpoint"), "\(images.stderr)")
        let mixed = try ProcessRunner.dinov2([
            "curate", "--pool", a.poolFile, "--queries", b.queriesFile, "--output", root + "/o",
        ])
        #expect(mixed.status != 0, "\(mixed.stdout)")
        #expect(mixed.stderr.contains("32-dimensional") && mixed.stderr.contains(b.queriesFile), "\(mixed.stderr)")
        #expect(!mixed.stderr.contains("Foundation"))
        let copyOfFeatures = try ProcessRunner.dinov2([
            "curate", "--pool", a.poolFile, "--queries", a.queriesFile, "--copy-checkpoint", root, "--output",
            root + "/o",
        ])
        #expect(copyOfFeatures.status != 0, "\(copyOfFeatures.stdout)")
        #expect(copyOfFeatures.stderr.contains("\(a.poolFile) is a feature file"), "\(copyOfFeatures.stderr)")
    }
}

struct GroupsProbe: Decodable {
    struct Result: Decodable {
        var groups: [[Int]]
        var evaluationOverlaps: [Int]
    }
    var result: Result
}
