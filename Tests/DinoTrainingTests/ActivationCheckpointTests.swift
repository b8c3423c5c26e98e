// Activation checkpointing changes no result: the quickstart model (width 192, depth 6) with drop
// path 0.3 (so recomputation must replay the same kept crops) trained 3 steps on the same synthetic
// crops, once keeping every block's intermediates and once keeping only block inputs; losses and
// every student and teacher parameter must be bitwise equal (same threads, so the same GEMM pieces).
// It also checks the memory it is for: the checkpointed student holds far fewer activation bytes.

import DinoConfig
import DinoCore
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("activation checkpointing")
struct ActivationCheckpointTests {
    func run(_ mode: String) throws -> (losses: [Double], parameters: [[[Float]]], activationBytes: Int) {
        let config = try ConfigLoader.load(
            file: TestPaths.packageRoot.appendingPathComponent("Configs/quickstart.yaml").path,
            overrides: ["activation_checkpoint.mode=\(mode)", "student.drop_path_rate=0.3"]
        )
        .resolved(worldSize: 1)
        let model = try SelfDistillation(config: config, communicator: SingleProcessCommunicator(), seed: 7, threads: 2)
        let steps = try runSyntheticSteps(model, steps: 3, seed: 9, communicator: SingleProcessCommunicator())
        let parameters = try model.parts.map { part in
            try part.table.entries.flatMap {
                [try part.student.gatherTensor($0.name), try part.teacher.gatherTensor($0.name)]
            }
        }
        return (steps.map(\.total), parameters, model.studentActivationBytes)
    }

    @Test("3 steps with drop path: losses and parameters bitwise equal with and without it; less memory")
    func bitwiseEqual() throws {
        let kept = try run("none"), recomputed = try run("full")
        #expect(kept.losses == recomputed.losses)
        // Counted, not compared as arrays: a failure names how many values differ, not millions of them.
        let keptValues = kept.parameters.joined().joined(), recomputedValues = recomputed.parameters.joined().joined()
        #expect(keptValues.count == recomputedValues.count && keptValues.count > 0)
        let differing = zip(keptValues, recomputedValues).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(differing == 0, "\(differing) of \(keptValues.count) parameter values differ")
        #expect(kept.losses.allSatisfy(\.isFinite) && kept.losses.count == 3)
        print(
            "activation bytes, quickstart student: \(kept.activationBytes) kept, "
                + "\(recomputed.activationBytes) checkpointed"
        )
        #expect(Double(recomputed.activationBytes) < 0.5 * Double(kept.activationBytes))
    }

    @Test("auto checkpoints ViT-L and ViT-g widths, not smaller ones")
    func automatic() {
        #expect(ActivationCheckpointMode.auto.isEnabled(embedDim: 1024))
        #expect(ActivationCheckpointMode.auto.isEnabled(embedDim: 1536))
        #expect(!ActivationCheckpointMode.auto.isEnabled(embedDim: 768))
        #expect(ActivationCheckpointMode.full.isEnabled(embedDim: 192))
        #expect(!ActivationCheckpointMode.none.isEnabled(embedDim: 1536))
    }
}
