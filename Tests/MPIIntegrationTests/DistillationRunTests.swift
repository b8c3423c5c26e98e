// Distillation under mpirun. The teacher is a checkpoint of the tiny config at another architecture
// (width 48, depth 3, 3 heads, 48 prototypes) written on 2 ranks by `selftest sharding`. The student is
// the tiny config (width 32, depth 2, its 64 prototypes resized to the teacher's 48): 5 synthetic steps
// on 1 rank against 2 and 4 ranks in FULL_SHARD, SHARD_GRAD_OP and HYBRID_SHARD give the same losses and
// parameters within 1e-5 (the bound and reason of ShardingTests), and on every rank count the frozen
// teacher after the steps is bit for bit the teacher run's saved EMA teacher; stopped after 3 steps and
// resumed for 2 the run is bit-exact against the straight one. Through `train` on 2 ranks: the log names
// the teacher, the resolved config fixes its checkpoint folder and the student's prototypes, and a rerun
// after the last checkpoint is removed computes the removed iterations' losses bit for bit again.

import DinoTestSupport
import Foundation
import Testing

@Suite("distillation under mpirun", .serialized)
struct DistillationRunTests {
    static let teacherArchitecture = [
        "student.embed_dim=48", "student.depth=3", "student.num_heads=3", "dino.head_n_prototypes=48",
        "ibot.head_n_prototypes=48",
    ]

    /// The teacher run's checkpoint folder and its saved tensors (`teacher/<part>/<tensor>`).
    static func teacher(in folder: String) throws -> (folder: String, tensors: [String: [Double]]) {
        let json = folder + "/teacher.json"
        let result = try ProcessRunner.mpirun(
            ranks: 2,
            [
                "selftest", "sharding", "--config", "Configs/tests/tiny.yaml", "train.batch_size_per_gpu=4",
                "--steps", "2", "--save-at", "2", "--checkpoint", folder + "/teacher", "--json", json,
            ] + teacherArchitecture, timeout: 240)
        guard result.status == 0 else { throw TestFailure(message: "teacher run:\n\(result.stdout)\n\(result.stderr)") }
        let object =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        let parameters = ((object?["parameters"] as? [String: [Any]]) ?? [:]).mapValues {
            $0.compactMap { ($0 as? NSNumber)?.doubleValue }
        }
        return (folder + "/teacher", parameters.filter { $0.key.hasPrefix("teacher/") })
    }

    @Test("1 rank against 2 and 4 ranks in three strategies within 1e-5; the teacher bit for bit frozen; resume exact")
    func ranksAndResume() throws {
        let root = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let (folder, saved) = try Self.teacher(in: root.path)
        #expect(!saved.isEmpty)
        let distill = ["distillation.enabled=true", "distillation.checkpoint_path=\(folder)"]

        func expectFrozen(_ run: ShardingRun, _ label: String) {
            let frozen = run.parameters.filter { $0.key.hasPrefix("frozen_teacher/") }
            #expect(frozen.count == saved.count, "\(label): \(frozen.count) frozen tensors, \(saved.count) saved")
            for (name, values) in frozen {
                let savedName = "teacher/" + name.dropFirst("frozen_teacher/".count)
                #expect(values == saved[savedName], "\(label): \(name) is not the saved teacher's")
            }
        }
        let reference = try ShardingRun(ranks: 1, strategy: "FULL_SHARD", extra: distill)
        #expect(reference.losses.count == 5 && reference.losses.allSatisfy { $0.allSatisfy(\.isFinite) })
        expectFrozen(reference, "1 rank")
        for (ranks, strategy) in [(2, "FULL_SHARD"), (4, "SHARD_GRAD_OP"), (4, "HYBRID_SHARD")] {
            let run = try ShardingRun(ranks: ranks, strategy: strategy, extra: distill)
            let (lossError, parameterError) = reference.difference(to: run)
            #expect(lossError <= 1e-5 && parameterError <= 1e-5, "\(ranks) \(strategy): \(lossError) \(parameterError)")
            expectFrozen(run, "\(ranks) ranks \(strategy)")
        }

        // Stop after 3 steps, resume for 2 (the frozen teacher read again from its folder).
        func selftest(_ extra: [String]) throws -> (losses: [[Double]], parameters: [String: [Double]]) {
            let json = root.path + "/resume.json"
            let result = try ProcessRunner.mpirun(
                ranks: 2,
                [
                    "selftest", "sharding", "--config", "Configs/tests/tiny.yaml", "train.batch_size_per_gpu=4",
                    "--json", json,
                ] + distill + extra, timeout: 240)
            guard result.status == 0 else {
                throw TestFailure(message: "\(extra):\n\(result.stdout)\n\(result.stderr)")
            }
            let object =
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
            let parameters = ((object?["parameters"] as? [String: [Any]]) ?? [:]).mapValues {
                $0.compactMap { ($0 as? NSNumber)?.doubleValue }
            }
            return ((object?["losses"] as? [[Double]]) ?? [], parameters)
        }
        let straight = try selftest(["--steps", "5"])
        let first = try selftest(["--steps", "3", "--save-at", "3", "--checkpoint", root.path + "/student"])
        #expect(first.losses == Array(straight.losses.prefix(3)))
        let resumed = try selftest(["--steps", "2", "--resume", root.path + "/student"])
        #expect(resumed.losses == Array(straight.losses.suffix(2)), "losses differ after resuming")
        #expect(resumed.parameters == straight.parameters, "parameters differ after resuming")
    }

    @Test("train: the teacher named and fixed in config.yaml, heads resized, a rerun recomputes bit for bit")
    func trainCommand() throws {
        let root = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let (folder, _) = try Self.teacher(in: root.path)
        try TrainingRuns.synthesize(into: root.path + "/data", size: 40)
        let output = root.path + "/run"
        func train() throws -> ProcessResult {
            try ProcessRunner.mpirun(
                ranks: 2,
                [
                    "train", "--config", "Configs/tests/tiny.yaml", "--data", root.path + "/data/train", "--output",
                    output, "distillation.enabled=true", "distillation.checkpoint_path=\(root.path)",
                ], timeout: 240)
        }
        // The teacher's run folder is root (checkpoints/ below it): move the selftest's folder there.
        try FileManager.default.createDirectory(atPath: root.path + "/checkpoints", withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: folder, toPath: root.path + "/checkpoints/checkpoint-00000002")
        let first = try train()
        try #require(first.status == 0, "\(first.stdout)\n\(first.stderr)")
        let fixed = root.path + "/checkpoints/checkpoint-00000002"
        #expect(first.stdout.contains("distillation: frozen teacher \(fixed) (width 48, depth 3, patch 14)"))
        let config = try String(contentsOfFile: output + "/config.yaml", encoding: .utf8)
        #expect(config.contains("checkpoint_path: \(fixed)"), "\(config)")
        #expect(config.contains("head_n_prototypes: 48") && !config.contains("head_n_prototypes: 64"))
        let straight = try TrainingRuns.records(output).filter { $0["loss"] != nil }
        #expect(straight.count == 8)

        try FileManager.default.removeItem(atPath: output + "/checkpoints/checkpoint-00000008")
        let again = try train()
        try #require(again.status == 0, "\(again.stdout)\n\(again.stderr)")
        #expect(again.stdout.contains("resumed from \(output)/checkpoints/checkpoint-00000006 at iteration 6"))
        let rerun = try TrainingRuns.records(output).filter { $0["loss"] != nil }
        #expect(rerun.count == 8)
        for (a, b) in zip(straight, rerun) {
            #expect(a["iteration"] as? Int == b["iteration"] as? Int)
            #expect(a["loss"] as? Double == b["loss"] as? Double, "iteration \(a["iteration"] ?? "?")")
        }
    }
}
