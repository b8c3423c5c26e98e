// The command line as a user meets it: config printing, the error messages for bad keys and
// values.

import DinoTestSupport
import Foundation
import Testing

@Suite("dinov2-fsdp command line", .serialized)
struct CLITests {
    @Test("config layers a file and an override")
    func configOverride() throws {
        let result = try ProcessRunner.dinov2(["config", "--config", "Configs/vits14.yaml", "optim.base_lr=0.002"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        func section(_ name: String) -> [String] {
            guard let start = lines.firstIndex(of: "\(name):") else { return [] }
            return Array(lines[(start + 1)...].prefix { $0.hasPrefix("  ") })
        }
        #expect(section("optim").contains("  base_lr: 0.002"))
        #expect(section("student").contains("  arch: vit_small"))
        #expect(section("student").contains("  patch_size: 14"))
    }

    @Test("a mistyped key names the key and suggests the right one")
    func unknownKey() throws {
        let result = try ProcessRunner.dinov2(["config", "--config", "Configs/vits14.yaml", "optim.bse_lr=1"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("optim.bse_lr"))
        #expect(result.stderr.contains("did you mean 'optim.base_lr'"))
        #expect(result.stdout.isEmpty)
    }

    @Test("a value of the wrong type names the key")
    func wrongType() throws {
        let result = try ProcessRunner.dinov2(["config", "--config", "Configs/vits14.yaml", "optim.base_lr=abc"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("'optim.base_lr' expects a finite number, got 'abc'"))
    }

    @Test("a bad key inside a config file names the file and the key")
    func badFileKey() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("bad.yaml")
        try "crops:\n  local_crop_number: 4\n".write(to: file, atomically: true, encoding: .utf8)
        let result = try ProcessRunner.dinov2(["config", "--config", file.path])
        #expect(result.status != 0)
        #expect(result.stderr.contains(file.path))
        #expect(result.stderr.contains("crops.local_crop_number"))
        #expect(result.stderr.contains("crops.local_crops_number"))
    }

    @Test("under mpirun a config error is printed once, by rank 0")
    func configErrorOnce() throws {
        let result = try ProcessRunner.mpirun(ranks: 3, ["train", "optim.bse_lr=1"], timeout: 120)
        #expect(result.status != 0)
        let occurrences = result.stderr.components(separatedBy: "unknown config key 'optim.bse_lr'").count - 1
        #expect(occurrences == 1, "\(result.stderr)")
    }

    @Test(
        "every subcommand has help",
        arguments: [
            "train", "bench", "eval", "embed", "curate", "calibrate-copies", "pca", "checkpoint", "data", "config",
            "selftest",
        ])
    func help(command: String) throws {
        let result = try ProcessRunner.dinov2([command, "--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("USAGE: dinov2-fsdp \(command)"))
    }

    @Test("bench kernels writes every record with its ratio")
    func benchKernels() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let json = folder.appendingPathComponent("kernels.json")
        let result = try ProcessRunner.dinov2(
            ["bench", "kernels", "--images", "1", "--repeats", "1", "--json", json.path],
            timeout: 240)
        #expect(result.status == 0, "\(result.stderr)")
        let records = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [[String: Any]])
        let names = records.compactMap { $0["name"] as? String }
        for width in ["linear", "linear192"] {
            for layer in ["qkv", "proj", "fc1", "fc2"] {
                for direction in ["fwd", "bwd"] {
                    let name = "\(width)_\(layer)_\(direction)"
                    let record = try #require(records.first { $0["name"] as? String == name }, "\(names)")
                    #expect((record["sgemm_ratio"] as? Double ?? 0) > 0)
                    #expect((record["gflops"] as? Double ?? 0) > 0)
                    #expect((record["peak_ratio"] as? Double ?? 0) > 0, "\(name)")
                }
            }
        }
        let backbone = try #require(records.first { $0["name"] as? String == "vits14_backbone_fwd_bwd" })
        #expect((backbone["peak_ratio"] as? Double ?? 0) > 0, "\(names)")
    }

    @Test("bench step under mpirun writes every field of the report")
    func benchStep() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let json = folder.appendingPathComponent("step.json")
        let result = try ProcessRunner.mpirun(
            ranks: 2,
            [
                "bench", "step", "--config", "Configs/tests/tiny.yaml", "--steps", "2",
                "--warmup", "1", "--json", json.path,
            ], timeout: 240)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
        for key in [
            "images_per_sec", "images_per_sec_per_rank", "tokens_per_sec", "model_gflops_per_sec", "mfu",
            "sgemm_peak_gflops", "time_compute", "time_comm_total", "time_comm_exposed", "time_data_wait",
            "time_optimizer", "time_ema", "max_rss_bytes", "world_size", "config",
        ] {
            #expect(report[key] != nil, "missing \(key)")
        }
        #expect(report["world_size"] as? Int == 2)
        #expect((report["images_per_sec"] as? Double ?? 0) > 0 && (report["mfu"] as? Double ?? 0) > 0)
        #expect((report["config"] as? String ?? "").contains("batch_size_per_gpu: 2"))
    }

    @Test(
        "bench step --data trains on real images (data wait measured); scaling-report makes CSV and SVG of them"
    )
    func benchStepDataAndScalingReport() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let synth = try ProcessRunner.dinov2([
            "data", "synth", "--output", folder.path + "/images", "--classes", "4",
            "--per-class", "4", "--val-per-class", "0", "--size", "48", "--jpeg",
        ])
        try #require(synth.status == 0, "\(synth.stderr)")
        let sweep = folder.appendingPathComponent("sweep").path
        try FileManager.default.createDirectory(atPath: sweep, withIntermediateDirectories: true)
        for ranks in [1, 2] {
            let arguments = [
                "bench", "step", "--config", "Configs/tests/tiny.yaml", "--steps", "2", "--warmup", "1",
                "--data", folder.path + "/images/train", "--json", sweep + "/weak-FULL_SHARD-\(ranks).json",
            ]
            let result = try ProcessRunner.ranked(ranks, arguments, timeout: 240)
            #expect(result.status == 0 && result.stdout.contains("data wait"), "\(result.stdout)\n\(result.stderr)")
        }
        let two = try #require(
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: sweep + "/weak-FULL_SHARD-2.json"))) as? [String: Any])
        let one = try #require(
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: sweep + "/weak-FULL_SHARD-1.json"))) as? [String: Any])
        let wait = two["time_data_wait"] as? Double ?? -1, step = two["time_step"] as? Double ?? 0
        #expect(wait >= 0 && wait <= step)
        for key in ["time_comm_exposed_gathers", "time_comm_exposed_reductions", "time_comm_exposed_objective"] {
            #expect((two[key] as? Double ?? -1) >= 0, "missing \(key)")
        }

        let report = try ProcessRunner.dinov2(["bench", "scaling-report", sweep, "--cores", "2"])
        #expect(report.status == 0, "\(report.stderr)")
        let csv = try String(contentsOfFile: sweep + "/scaling.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 3 && csv[0].hasPrefix("mode,strategy,ranks,"))
        // Weak-scaling efficiency at 2 ranks = per-rank throughput over the 1-rank point's.
        let expected =
            (two["images_per_sec_per_rank"] as? Double ?? 0) / (one["images_per_sec_per_rank"] as? Double ?? 1)
        let fields = csv[2].split(separator: ",")
        #expect(
            fields[0] == "weak" && fields[2] == "2" && abs((Double(fields[6]) ?? -1) - expected) < 1e-3, "\(csv[2])")
        let svg = try String(contentsOfFile: sweep + "/scaling.svg", encoding: .utf8)
        #expect(
            svg.contains("Scaling efficiency") && svg.contains("limit of 2 cores") && svg.contains("weak FULL_SHARD"))
        let empty = try ProcessRunner.dinov2(["bench", "scaling-report", folder.path + "/images"])
        #expect(empty.status != 0 && empty.stderr.contains("run Benchmarks/scaling-sweep.sh first"))
    }

    @Test("bench data times decode and multi-crop on generated JPEGs and the share of a step")
    func benchData() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let json = folder.appendingPathComponent("data.json").path
        let result = try ProcessRunner.dinov2(
            [
                "bench", "data", "--config", "Configs/tests/tiny.yaml", "--images", "4",
                "--passes", "2", "--steps", "1", "--json", json,
            ], timeout: 240)
        #expect(result.status == 0 && result.stdout.contains("images/s per core"), "\(result.stdout)\n\(result.stderr)")
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        #expect(
            report["images"] as? Int == 4 && report["mean_width"] as? Double == 500
                && report["mean_height"] as? Double == 375)
        let decode = report["decode_images_per_sec_per_core"] as? Double ?? 0
        let pipeline = report["pipeline_images_per_sec_per_core"] as? Double ?? 0
        let perImage = report["step_seconds_per_image_per_core"] as? Double ?? 0,
            share = report["share_of_step"] as? Double ?? -1
        #expect(decode > 0 && pipeline > 0 && pipeline < decode)  // the pipeline includes the decode
        #expect(perImage > 0 && abs(share - (1 / pipeline) / perImage) < 1e-9 * max(1, share))
    }
}
