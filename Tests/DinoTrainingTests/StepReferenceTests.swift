// Three training steps of a tiny model against an independent PyTorch implementation
// (Fixtures/generate_step_reference.py): each step's DINO local / global, iBOT and KoLeo losses,
// the clipped gradients of backbone and head after step 1, and student and teacher parameters after
// step 3 (AdamW with the official multipliers, teacher EMA), for softmax centering and Sinkhorn-Knopp.

import DinoCheckpoint
import DinoConfig
import DinoCore
import DinoModel
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("training step vs PyTorch reference")
struct StepReferenceTests {
    static let fixture = TestPaths.packageRoot
        .appendingPathComponent("Tests/DinoTrainingTests/Fixtures/step_reference.h5").path

    static func config(centering: String) throws -> TrainingConfig {
        try ConfigLoader.load(
            file: nil,
            overrides: [
                "student.arch=vit_small", "student.embed_dim=16", "student.depth=2", "student.num_heads=2",
                "student.patch_size=2", "student.num_register_tokens=1", "student.drop_path_rate=0",
                "crops.global_crops_size=8", "crops.local_crops_size=4", "crops.local_crops_number=2",
                "dino.head_n_prototypes=12", "dino.head_bottleneck_dim=8", "dino.head_hidden_dim=24",
                "ibot.head_n_prototypes=12", "train.batch_size_per_gpu=2", "train.centering=\(centering)",
            ])
    }

    @Test("losses, gradients and three AdamW + EMA steps within 1e-4", arguments: ["centering", "sinkhorn_knopp"])
    func threeSteps(centering: String) throws {
        let file = try HDF5File.open(Self.fixture)
        let model = try SelfDistillation(
            config: try Self.config(centering: centering),
            communicator: SingleProcessCommunicator(), seed: 0)
        let fixture = StepFixture(file: file, group: centering)
        try fixture.loadInitialState(into: model)
        let globalImages = try fixture.floats("global_images")
        let localImages = try fixture.floats("local_images")
        let masks = try fixture.doubles("masks").map { $0 != 0 }
        let schedule = try fixture.doubles("schedule")
        let expectedLosses = try fixture.doubles("losses")
        for step in 0..<3 {
            let values = ScheduleValues(
                lr: schedule[step * 5], lastLayerLR: schedule[step * 5 + 1],
                weightDecay: schedule[step * 5 + 2], momentum: schedule[step * 5 + 3],
                teacherTemperature: schedule[step * 5 + 4])
            let losses = try globalImages.withUnsafeBufferPointer { g in
                try localImages.withUnsafeBufferPointer { l in
                    try model.step(
                        iteration: step, globalImages: g.baseAddress!, localImages: l.baseAddress!, masks: masks,
                        images: 2, schedule: values)
                }
            }
            let got = [losses.dinoLocal, losses.dinoGlobal, losses.ibot, losses.koleo]
            for (i, name) in ["dino local", "dino global", "ibot", "koleo"].enumerated() {
                let expected = expectedLosses[step * 4 + i]
                #expect(
                    abs(got[i] - expected) <= 1e-4 * abs(expected), "step \(step + 1) \(name): \(got[i]) vs \(expected)"
                )
            }
            if step == 0 {
                for part in model.parts {
                    for entry in part.table.entries {
                        let reference = try fixture.doubles("gradients/\(part.name)/\(entry.name)")
                        let mine = try part.student.gatherGradient(entry.name)
                        let error = normwiseError(mine, reference)
                        #expect(error <= 1e-4, "gradient of \(part.name) \(entry.name): \(error)")
                        // The key third of attn.qkv.bias has an exactly zero gradient: adding a constant to
                        // every key adds the same q . b_k to a row's scores, which softmax ignores.
                        if entry.name.hasSuffix("attn.qkv.bias") {
                            let scale = mine.map { abs(Double($0)) }.max() ?? 0
                            #expect(
                                mine[16..<32].allSatisfy { abs(Double($0)) <= 1e-5 * scale },
                                "key bias gradient is not ~0")
                            #expect(reference[16..<32].allSatisfy { abs($0) <= 1e-12 * scale })
                        }
                    }
                }
            }
        }
        try fixture.expectFinalParameters(of: model)
    }
}
