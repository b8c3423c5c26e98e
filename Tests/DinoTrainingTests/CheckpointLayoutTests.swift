// Checkpoints are matched tensor by tensor, not unit by unit: a run whose heads' last layers are cut
// into units of another size (a different piece layout) loads a checkpoint exactly. The quickstart
// model (separate iBOT head, 256 prototypes) trains 2 steps with whole last layers, saves; a model
// with last layers in units of 100 prototypes (100, 100, 56) loads it and must hold the same tensors,
// bit for bit, in student, teacher and both AdamW moments; then the reverse direction.

import DinoCheckpoint
import DinoConfig
import DinoCore
import DinoModel
import DinoSharding
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("checkpoints across unit layouts")
struct CheckpointLayoutTests {
    /// Every tensor of every part (pieces joined in order), for student and teacher parameters.
    func tensors(_ model: SelfDistillation) throws -> [String: [Float]] {
        var result: [String: [Float]] = [:]
        for part in model.parts {
            for entry in part.table.entries {
                result["\(part.name)/student/\(entry.tensor)", default: []] += try part.student.gatherTensor(entry.name)
                result["\(part.name)/teacher/\(entry.tensor)", default: []] += try part.teacher.gatherTensor(entry.name)
            }
        }
        return result
    }

    @Test("whole last layers <-> last layers in units of 100 prototypes: every tensor loads bit for bit")
    func acrossPieces() throws {
        let config = try ConfigLoader.load(
            file: TestPaths.packageRoot.appendingPathComponent("Configs/quickstart.yaml").path,
            overrides: ["train.batch_size_per_gpu=2"]
        )
        .resolved(worldSize: 1)
        let world = SingleProcessCommunicator()
        for (saving, loading) in [(0, 100), (100, 0)] {
            let source = try SelfDistillation(
                config: config, communicator: world, seed: 3, threads: 2, headPrototypesPerUnit: saving)
            let target = try SelfDistillation(
                config: config, communicator: world, seed: 4, threads: 2, headPrototypesPerUnit: loading)
            #expect(source.dinoHead.table.units.count != target.dinoHead.table.units.count)
            _ = try runSyntheticSteps(source, steps: 2, seed: 5, communicator: world)
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("layout-\(UUID().uuidString)")
                .path
            defer { try? FileManager.default.removeItem(atPath: folder) }
            try ShardedCheckpoint.save(source, to: folder, iteration: 2)
            #expect(try ShardedCheckpoint.load(into: target, from: folder) == 2)
            let expected = try tensors(source), loaded = try tensors(target)
            #expect(expected.keys.sorted() == loaded.keys.sorted() && !expected.isEmpty)
            var differing = 0
            for (name, values) in expected {
                let other = loaded[name] ?? []
                differing +=
                    values.count == other.count
                    ? zip(values, other).filter { $0.bitPattern != $1.bitPattern }.count : values.count
            }
            #expect(differing == 0, "\(differing) values differ (saved in units of \(saving), loaded in \(loading))")
            // The optimizer state came along: one more step from both gives the same losses (the
            // heads' backward sums over units in another order, so equal to float32 roundings only).
            let next = try runSyntheticSteps(source, steps: 1, seed: 5, communicator: world, firstIteration: 2)
            let resumed = try runSyntheticSteps(target, steps: 1, seed: 5, communicator: world, firstIteration: 2)
            #expect(abs(next[0].total - resumed[0].total) <= 1e-5 * abs(next[0].total))
            #expect(target.optimizerSteps == source.optimizerSteps)
        }
    }
}

@Suite("checkpoint copy plans")
struct CheckpointCopyPlanTests {
    @Test("a backbone saved in units of 2-block chunks on 3 shards fills today's per-block units on 2 ranks")
    func chunkUnitsIntoBlockUnits() throws {
        var student = StudentConfig()
        student.arch = .vitSmall
        student.patchSize = 14
        student.embedDim = 16
        student.depth = 4
        student.numHeads = 2
        student.blockChunks = 2
        let table = ParameterLayout(try ViTArchitecture(student: student, imageSize: 28)).table
        // The layout of a checkpoint written when units were chunks: embed, blocks.0 (blocks 0-1),
        // blocks.1 (blocks 2-3), norm; tensors in the same order, offsets running on within a chunk.
        var tensors: [CheckpointManifest.Tensor] = []
        var unitCounts: [Int] = []
        for entry in table.entries {
            let unit =
                entry.name.hasPrefix("blocks.")
                ? 1 + Int(entry.name.split(separator: ".")[1])! : (entry.name.hasPrefix("norm.") ? 3 : 0)
            while unitCounts.count <= unit { unitCounts.append(0) }
            var tensor = CheckpointManifest.Tensor(entry)
            tensor.unit = unit
            tensor.offset = unitCounts[unit]
            unitCounts[unit] += entry.count
            tensors.append(tensor)
        }
        #expect(unitCounts.count == 4 && table.units.count == 6)
        // Saved values: a function of (tensor, element), so every element's origin can be checked.
        func value(_ tensor: String, _ element: Int) -> Float { Float(abs(tensor.hashValue % 1000) * 10_000 + element) }
        var saved = unitCounts.map { [Float](repeating: -1, count: $0) }
        for tensor in tensors {
            for element in 0..<tensor.shape.reduce(1, *) {
                saved[tensor.unit][tensor.offset + element] = value(tensor.name, element)
            }
        }
        let manifestPart = CheckpointManifest.Part(name: "backbone", unitCounts: unitCounts, tensors: tensors)
        var filled = 0, wrong = 0
        for shard in 0..<2 {
            let plan = ShardPlan(table: table, shards: 2, shardIndex: shard)
            let part = CheckpointPart(name: "backbone", table: table, plan: plan) { _ in [] }
            let copies = try ShardedCheckpoint.copyPlan(for: part, saved: manifestPart, shards: 3)
            var shards = table.units.indices.map { [Float](repeating: .nan, count: plan.shardCount($0)) }
            for copy in copies {
                for (k, x) in copy.source.enumerated() {
                    shards[copy.unit][copy.targetInShard + k] = saved[copy.sourceUnit][x]
                }
            }
            for entry in table.entries {
                guard let slice = plan.localSlice(of: entry) else { continue }
                for (i, j) in zip(slice.inEntry, slice.inShard) {
                    if shards[entry.unit][j] != value(entry.name, i) { wrong += 1 }
                    filled += 1
                }
            }
        }
        #expect(filled == table.parameterCount && wrong == 0, "\(wrong) of \(filled) elements from the wrong place")
    }
}
