// Sharded checkpoints under mpirun: a run stopped after 3 steps and resumed for 2 more gives the
// losses and parameters of the straight 5-step run bit for bit (1, 2 and 4 ranks); a checkpoint
// written on 2 or 4 ranks loads on 2, 3 or 4 ranks into exactly the saved state; a damaged,
// truncated or unfinished checkpoint is refused with the file named.

import DinoCheckpoint
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

private let common = [
    "--config", "Configs/tests/tiny.yaml", "student.drop_path_rate=0", "dino.koleo_loss_weight=0",
    "train.centering=sinkhorn_knopp",
]

private func run(ranks: Int, _ arguments: [String]) throws -> (losses: [[Double]], parameters: [String: [Double]]) {
    let folder = try TestPaths.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: folder) }
    let json = folder.appendingPathComponent("out.json").path
    let all = ["selftest", "sharding"] + common + arguments + ["--json", json]
    let result = try ProcessRunner.ranked(ranks, all, timeout: 240)
    guard result.status == 0 else {
        throw TestFailure(message: "\(all) on \(ranks) ranks:\n\(result.stdout)\n\(result.stderr)")
    }
    let object =
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any] ?? [:]
    let parameters = ((object["parameters"] as? [String: [Any]]) ?? [:]).mapValues {
        $0.compactMap { ($0 as? NSNumber)?.doubleValue }
    }
    return ((object["losses"] as? [[Double]]) ?? [], parameters)
}

@Suite("sharded checkpoints under mpirun", .serialized)
struct CheckpointTests {
    @Test("stop after 3 steps, resume for 2: bit-exact against the straight run", arguments: [1, 2, 4])
    func bitExactResume(ranks: Int) throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let batch = "train.batch_size_per_gpu=\(8 / ranks)"
        let straight = try run(ranks: ranks, [batch, "--steps", "5"])
        let saving = try run(
            ranks: ranks, [batch, "--steps", "3", "--save-at", "3", "--checkpoint", folder.path + "/c"])
        #expect(saving.losses == Array(straight.losses.prefix(3)))
        let resumed = try run(ranks: ranks, [batch, "--steps", "2", "--resume", folder.path + "/c"])
        #expect(resumed.losses == Array(straight.losses.suffix(2)), "losses differ after resuming")
        #expect(resumed.parameters == straight.parameters, "parameters differ after resuming")
    }

    @Test("a checkpoint from N ranks loads exactly on M ranks", arguments: [(4, 2), (2, 4), (2, 3)])
    func resharding(from: Int, to: Int) throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let saved = try run(
            ranks: from,
            [
                "train.batch_size_per_gpu=\(8 / from)", "--steps", "3", "--save-at", "3",
                "--checkpoint", folder.path + "/c",
            ])
        let loaded = try run(ranks: to, ["train.batch_size_per_gpu=2", "--steps", "0", "--resume", folder.path + "/c"])
        #expect(!saved.parameters.isEmpty && loaded.parameters == saved.parameters)
    }

    @Test("damaged, truncated and unfinished checkpoints are refused, naming the problem")
    func badCheckpoints() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.path + "/c"
        _ = try run(ranks: 2, ["train.batch_size_per_gpu=4", "--steps", "1", "--save-at", "1", "--checkpoint", path])
        let good = try ProcessRunner.dinov2(["checkpoint", "verify", path])
        #expect(good.status == 0 && good.stdout.contains("ok:"))

        // Flip one byte of rank 1's file.
        let file = path + "/rank-00001.h5"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: file))
        let damaged = try ProcessRunner.dinov2(["checkpoint", "verify", path])
        #expect(damaged.status != 0 && damaged.stderr.contains("rank-00001.h5") && damaged.stderr.contains("checksum"))
        let resume = try ProcessRunner.dinov2(["selftest", "sharding"] + common + ["--steps", "0", "--resume", path])
        #expect(resume.status != 0 && resume.stderr.contains("rank-00001.h5"))

        // Truncate it.
        try bytes.prefix(bytes.count / 3).write(to: URL(fileURLWithPath: file))
        let truncated = try ProcessRunner.dinov2(["checkpoint", "verify", path])
        #expect(truncated.status != 0 && truncated.stderr.contains("truncated"))

        // No manifest: an interrupted save.
        try FileManager.default.removeItem(atPath: path + "/manifest.json")
        let unfinished = try ProcessRunner.dinov2(["checkpoint", "info", path])
        #expect(unfinished.status != 0 && unfinished.stderr.contains("incomplete"))
        let missing = try ProcessRunner.dinov2(["checkpoint", "verify", folder.path + "/nothing"])
        #expect(missing.status != 0 && missing.stderr.contains("no checkpoint folder"))
    }

    @Test("export writes the backbone under the official names with the saved values")
    func export() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let saved = try run(
            ranks: 2,
            [
                "train.batch_size_per_gpu=4", "student.block_chunks=2", "--steps", "2", "--save-at", "2",
                "--checkpoint", folder.path + "/c",
            ])
        let output = folder.path + "/teacher.h5"
        let result = try ProcessRunner.dinov2(["checkpoint", "export", folder.path + "/c", "--output", output])
        #expect(result.status == 0, "\(result.stderr)")
        let file = try HDF5File.open(output)
        let shapes = try ["cls_token", "pos_embed", "register_tokens", "patch_embed.proj.weight"].map {
            try file.shape(of: $0)
        }
        #expect(shapes == [[1, 1, 32], [1, 5, 32], [1, 2, 32], [32, 3, 14, 14]])
        // Chunked names (blocks.<chunk>.<i>) come out as the hub's blocks.<i>.
        for (name, values) in saved.parameters where name.hasPrefix("teacher/backbone/") {
            let official = CheckpointExport.officialName(String(name.dropFirst("teacher/backbone/".count)))
            #expect(!official.hasPrefix("blocks.1.1."), "chunk prefix left in \(official)")
            // The JSON holds each float32 in its shortest decimal form: compare as float32.
            #expect(try file.readDoubles(official).map { Float($0) } == values.map { Float($0) }, "\(official)")
        }
    }
}
