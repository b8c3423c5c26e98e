// The memory model against the buffers a model really holds: tiny configurations trained a few steps
// on one rank, every category of MemoryModel.predict (sized for the most masked tokens the steps
// drew) equal to SelfDistillation.memoryBreakdown within 0.1 % or 4 KiB: the model leaves out the
// buffers of one element that a run never uses (4 bytes each; seen: up to 400 bytes a category).
// The multi-rank pool and the process's own memory are checked against peak RSS by
// Benchmarks/memory-table.sh (RESULTS.md), not here.

import DinoConfig
import DinoCore
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("memory model")
struct MemoryModelTests {
    static let variants: [[String]] = [
        [],
        ["activation_checkpoint.mode=full"],
        ["student.drop_path_rate=0.3"],
        ["student.drop_path_rate=0.3", "student.drop_path_uniform=true", "activation_checkpoint.mode=full"],
        ["ibot.separate_head=false", "train.centering=centering"],
        ["fsdp.allgather_dtype=bf16", "dino.koleo_loss_weight=0", "student.num_register_tokens=4"],
        ["copy_detection.loss_weight=1"],
    ]

    static let quickstart = TestPaths.packageRoot.appendingPathComponent("Configs/quickstart.yaml").path

    @Test("every category predicted equals the buffers after 3 steps (1 rank)", arguments: variants)
    func predictionMatchesBuffers(overrides: [String]) throws {
        try expectPredictionMatches(overrides: overrides)
    }

    @Test(
        "distillation: the frozen teacher (wider, deeper, registers, a separate iBOT head) predicted as held",
        arguments: [["ibot.separate_head=false"], ["ibot.separate_head=true", "activation_checkpoint.mode=full"]])
    func distillation(studentOverrides: [String]) throws {
        let folder = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let teacherConfig = try ConfigLoader.load(
            file: Self.quickstart,
            overrides: [
                "student.embed_dim=256", "student.depth=4", "student.num_heads=4", "student.num_register_tokens=4",
                "ibot.separate_head=true",
            ]
        ).resolved(worldSize: 1)
        let teacher = try SelfDistillation(config: teacherConfig, communicator: SingleProcessCommunicator(), seed: 4)
        try teacher.saveCheckpoint(to: folder + "/checkpoint-00000001", iteration: 1)
        try expectPredictionMatches(
            overrides: studentOverrides + [
                "distillation.enabled=true", "distillation.checkpoint_path=\(folder)/checkpoint-00000001",
            ])
    }

    func expectPredictionMatches(overrides: [String]) throws {
        let config = try ConfigLoader.load(file: Self.quickstart, overrides: ["train.batch_size_per_gpu=3"] + overrides)
            .resolved(worldSize: 1).resolvingDistillation()
        let world = SingleProcessCommunicator()
        let model = try SelfDistillation(config: config, communicator: world, seed: 1, threads: 2)
        var masked = 0
        _ = try runSyntheticSteps(model, steps: 3, seed: 2, communicator: world) { _, _, timing in
            masked = max(masked, timing.maskedTokens)
        }
        let prediction = try MemoryModel.predict(
            config: config, worldSize: 1, ranksPerNode: 1, threads: 2, maskedTokens: masked)
        let measured = model.memoryBreakdown
        #expect(measured.count >= 9)
        for category in measured {
            let predicted = prediction.bytes(category.name)
            let tolerance = max(category.bytes / 1000, 4096)
            #expect(
                abs(predicted - category.bytes) <= tolerance,
                "\(category.name): predicted \(predicted), holds \(category.bytes) (\(overrides))")
        }
        // The largest masked-token count the plan allows bounds what the steps drew.
        let bound = try MemoryModel.predict(config: config, worldSize: 1, ranksPerNode: 1, threads: 2)
        #expect(bound.maskedTokens >= masked && masked > 0)
        #expect(bound.total >= prediction.total)
    }
}
