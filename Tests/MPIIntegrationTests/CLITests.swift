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

    @Test("every subcommand has help", arguments: ["train", "bench", "eval", "embed", "pca", "checkpoint", "data", "config", "selftest"])
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
        let result = try ProcessRunner.dinov2(["bench", "kernels", "--images", "1", "--repeats", "1", "--json", json.path],
                                              timeout: 240)
        #expect(result.status == 0, "\(result.stderr)")
        let records = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [[String: Any]])
        let names = records.compactMap { $0["name"] as? String }
        for layer in ["qkv", "proj", "fc1", "fc2"] {
            for direction in ["fwd", "bwd"] {
                let record = try #require(records.first { $0["name"] as? String == "linear_\(layer)_\(direction)" })
                #expect((record["sgemm_ratio"] as? Double ?? 0) > 0)
                #expect((record["gflops"] as? Double ?? 0) > 0)
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
        let result = try ProcessRunner.mpirun(ranks: 2, ["bench", "step", "--config", "Configs/tests/tiny.yaml", "--steps", "2",
                                                         "--warmup", "1", "--json", json.path], timeout: 240)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
        for key in ["images_per_sec", "images_per_sec_per_rank", "tokens_per_sec", "model_gflops_per_sec", "mfu",
                    "sgemm_peak_gflops", "time_compute", "time_comm_total", "time_comm_exposed", "time_data_wait",
                    "time_optimizer", "time_ema", "max_rss_bytes", "world_size", "config"] {
            #expect(report[key] != nil, "missing \(key)")
        }
        #expect(report["world_size"] as? Int == 2)
        #expect((report["images_per_sec"] as? Double ?? 0) > 0 && (report["mfu"] as? Double ?? 0) > 0)
        #expect((report["config"] as? String ?? "").contains("batch_size_per_gpu: 2"))
    }
}
