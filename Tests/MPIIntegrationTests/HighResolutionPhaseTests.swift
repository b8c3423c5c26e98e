// The high-resolution phase through the command line on 2 ranks: a run stopped at iteration 4 by
// train.stop_iteration, then a new run from its checkpoint (train.resume_from) at 42-px global and
// 28-px local crops instead of 28 and 14, which continues the schedules where the first stopped (the
// same lr, wd, momentum and teacher temperature as a straight 8-iteration run) and ends at 8; run
// again it has nothing to do; a resume_from without a checkpoint is refused in one sentence.

import DinoTestSupport
import Foundation
import Testing

@Suite("high-resolution phase under mpirun", .serialized)
struct HighResolutionPhaseTests {

    @Test("stop at 4, continue at a larger crop size from 4 to 8 with the schedules carried over")
    func phase() throws {
        let root = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        try TrainingRuns.synthesize(into: root.path, size: 48)
        func train(_ output: String, _ extra: [String]) throws -> ProcessResult {
            try ProcessRunner.mpirun(
                ranks: 2,
                ["train", "--config", "Configs/tests/tiny.yaml", "--data", root.path + "/train", "--output", output]
                    + extra, timeout: 240)
        }
        let straight = try train(root.path + "/straight", [])
        try #require(straight.status == 0, "\(straight.stdout)\n\(straight.stderr)")

        let base = try train(root.path + "/base", ["train.stop_iteration=4"])
        try #require(base.status == 0, "\(base.stdout)\n\(base.stderr)")
        #expect(base.stdout.contains("finished at iteration 4"), "\(base.stdout)")
        #expect(try TrainingRuns.records(root.path + "/base").compactMap { $0["iteration"] as? Int }.max() == 4)

        let phaseArguments = [
            "train.resume_from=\(root.path)/base", "crops.global_crops_size=42", "crops.local_crops_size=28",
        ]
        let phase = try train(root.path + "/phase", phaseArguments)
        try #require(phase.status == 0, "\(phase.stdout)\n\(phase.stderr)")
        #expect(
            phase.stdout.contains("starting from \(root.path)/base/checkpoints/checkpoint-00000004 at iteration 4")
                && phase.stdout.contains("global crops 28 -> 42 px, position embeddings resampled"), "\(phase.stdout)")
        #expect(phase.stdout.contains("finished at iteration 8"))
        let continued = try TrainingRuns.records(root.path + "/phase").filter { $0["loss"] != nil }
        #expect(continued.compactMap { $0["iteration"] as? Int } == [5, 6, 7, 8])
        let reference = try TrainingRuns.records(root.path + "/straight").filter { $0["loss"] != nil }.suffix(4)
        for (a, b) in zip(continued, reference) {
            for key in ["lr", "wd", "mom", "teacher_temp"] {
                #expect(a[key] as? Double == b[key] as? Double, "\(key) at \(a["iteration"] ?? "?")")
            }
            #expect((a["loss"] as? Double ?? .nan).isFinite)
        }
        #expect(
            FileManager.default.fileExists(atPath: root.path + "/phase/checkpoints/checkpoint-00000008/manifest.json"))

        // Its own checkpoint now comes first: nothing left to do.
        let again = try train(root.path + "/phase", phaseArguments)
        #expect(again.status == 0 && again.stdout.contains("nothing to do"), "\(again.stdout)\n\(again.stderr)")

        let nowhere = try train(root.path + "/nowhere", ["train.resume_from=\(root.path)/val"])
        #expect(nowhere.status != 0)
        #expect(
            nowhere.stderr.contains("train.resume_from: \(root.path)/val is neither a checkpoint folder"),
            "\(nowhere.stderr)")
    }
}
