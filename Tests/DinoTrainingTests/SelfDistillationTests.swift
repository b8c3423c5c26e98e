// The training step's wiring beyond the reference fixture: a separate iBOT head, stochastic depth,
// the official initialisation, and that repeated steps on one batch lower the objective.

import DinoConfig
import DinoCore
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("self-distillation step")
struct SelfDistillationTests {
    @Test("separate iBOT head, drop path and official init: finite losses, every part learns, loss goes down")
    func separateHead() throws {
        let config = try ConfigLoader.load(file: TestPaths.packageRoot.appendingPathComponent("Configs/tests/tiny.yaml").path,
                                           overrides: ["ibot.separate_head=true", "student.drop_path_rate=0.3",
                                                       "optim.base_lr=0.05", "optim.warmup_epochs=0"])
            .resolved(worldSize: 1)
        let model = try SelfDistillation(config: config, communicator: SingleProcessCommunicator(), seed: 5)
        #expect(model.parts.map(\.name) == ["backbone", "dino_head", "ibot_head"])
        var random = TestRandom(seed: 3)
        let b = config.train.batchSizePerRank
        let global = random.normals(2 * b * 3 * 28 * 28).map { Float($0) }
        let local = random.normals(config.crops.localCropsNumber * b * 3 * 14 * 14).map { Float($0) }
        var masks = [Bool](repeating: false, count: 2 * b * 4)
        masks[1] = true
        masks[2] = true
        masks[4 * 3] = true
        var totals: [Double] = []
        let before = try model.parts.map { part in try part.table.entries.map { try part.student.gatherTensor($0.name) } }
        for iteration in 0..<6 {
            let losses = try global.withUnsafeBufferPointer { g in
                try local.withUnsafeBufferPointer { l in
                    try model.step(iteration: iteration, globalImages: g.baseAddress!, localImages: l.baseAddress!,
                                   masks: masks, images: b)
                }
            }
            #expect(losses.total.isFinite && losses.ibot > 0 && losses.koleo.isFinite)
            totals.append(losses.total)
        }
        for (p, part) in model.parts.enumerated() {
            let after = try part.table.entries.map { try part.student.gatherTensor($0.name) }
            #expect(zip(before[p], after).contains { $0 != $1 }, "\(part.name) did not change")
        }
        #expect(totals.last! < totals.first!, "objective did not decrease: \(totals)")
    }

    @Test("a non-finite loss stops the step before any parameter changes, naming the term and iteration")
    func nonFinite() throws {
        let config = try ConfigLoader.load(file: TestPaths.packageRoot.appendingPathComponent("Configs/tests/tiny.yaml").path)
            .resolved(worldSize: 1)
        let model = try SelfDistillation(config: config, communicator: SingleProcessCommunicator(), seed: 1)
        let b = config.train.batchSizePerRank
        var global = [Float](repeating: 0.1, count: 2 * b * 3 * 28 * 28)
        global[5] = .nan
        let local = [Float](repeating: 0.1, count: config.crops.localCropsNumber * b * 3 * 14 * 14)
        let before = try model.parts.map { part in try part.table.entries.map { try part.student.gatherTensor($0.name) } }
        do {
            _ = try global.withUnsafeBufferPointer { g in
                try local.withUnsafeBufferPointer { l in
                    try model.step(iteration: 7, globalImages: g.baseAddress!, localImages: l.baseAddress!,
                                   masks: [Bool](repeating: false, count: 2 * b * 4), images: b)
                }
            }
            Issue.record("a NaN input did not stop the step")
        } catch let error as TrainingError {
            #expect("\(error)".contains("iteration 7") && "\(error)".contains("loss"), "\(error)")
        }
        let after = try model.parts.map { part in try part.table.entries.map { try part.student.gatherTensor($0.name) } }
        #expect(before == after)
    }

    @Test("bf16 all-gathers are refused with a message, not silently ignored")
    func bf16() throws {
        let config = try ConfigLoader.load(file: TestPaths.packageRoot.appendingPathComponent("Configs/tests/tiny.yaml").path,
                                           overrides: ["fsdp.allgather_dtype=bf16"]).resolved(worldSize: 1)
        #expect(throws: TrainingError.self) {
            _ = try SelfDistillation(config: config, communicator: SingleProcessCommunicator(), seed: 1)
        }
    }
}
