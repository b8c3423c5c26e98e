// Distillation (DINOv2 section 5) against a reference built from the official modules
// (Fixtures/distillation_reference.h5, generate_distillation_reference.py): a frozen teacher of another
// architecture (wider, deeper, other FFN and registers) saved as a checkpoint of its own run and read
// through `distillation.checkpoint_path`; three steps of the student without masks or drop path, the
// iBOT loss over every global-crop patch, a spare EMA of the student. Every loss term of every step, the
// clipped gradients after step 1, the student and its EMA after step 3 within 1e-4 (the bound of the
// official-parity test: float32 against a float64 reference over three steps); the frozen teacher is
// the fixture's bit for bit before and after. Also: what a distillation config resolves to and refuses,
// and a distillation checkpoint restored (for eval, embed, export) as its spare EMA.

import DinoCheckpoint
import DinoConfig
import DinoCore
import DinoModel
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("distillation: the step against the official modules, the teacher frozen")
struct DistillationTests {
    static let fixture = TestPaths.packageRoot
        .appendingPathComponent("Tests/DinoTrainingTests/Fixtures/distillation_reference.h5").path

    /// Saves a run of the fixture's teacher configuration whose EMA teacher holds the fixture's frozen
    /// teacher and whose student holds other values (so that loading the wrong kind shows), as
    /// FOLDER/checkpoints/checkpoint-00000003; returns its configuration.
    @discardableResult
    func saveTeacherRun(
        _ fixture: StepFixture, into folder: String, headPrototypesPerUnit: Int = 0
    ) throws -> TrainingConfig {
        let overrides = try fixture.file.readStrings("\(fixture.group)/teacher_overrides")
        let config = try ConfigLoader.load(file: nil, overrides: overrides).resolved(worldSize: 1)
        let run = try SelfDistillation(
            config: config, communicator: SingleProcessCommunicator(), seed: 5,
            headPrototypesPerUnit: headPrototypesPerUnit)
        for part in run.parts {
            for entry in part.table.entries {
                // A piece of a tensor (last layers cut into units) takes its range of the whole.
                let whole = try fixture.floats("frozen_teacher/\(part.name)/\(entry.tensor)")
                part.teacher.setTensor(
                    entry.name, Array(whole[entry.tensorOffset..<(entry.tensorOffset + entry.count)]))
            }
        }
        try run.saveCheckpoint(to: folder + "/checkpoints/checkpoint-00000003", iteration: 3)
        return config
    }

    /// The frozen teacher's whole tensors (pieces put together), part by part, in the fixture's names.
    func frozenTensors(_ model: SelfDistillation) throws -> [String: [Float]] {
        var tensors: [String: [Float]] = [:]
        for (name, store) in try #require(model.distillationTeacher).stores {
            for entry in store.table.entries {
                let key = "\(name)/\(entry.tensor)"
                var whole = tensors[key] ?? [Float](repeating: .nan, count: entry.tensorShape.reduce(1, *))
                whole.replaceSubrange(
                    entry.tensorOffset..<(entry.tensorOffset + entry.count), with: try store.gatherTensor(entry.name))
                tensors[key] = whole
            }
        }
        return tensors
    }

    @Test(
        "losses, gradients, student and spare EMA after 3 steps within 1e-4; teacher bitwise frozen",
        arguments: ["sinkhorn_shared", "centering_separate"])
    func threeSteps(variant: String) throws {
        let folder = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let file = try HDF5File.open(Self.fixture)
        let fixture = StepFixture(file: file, group: variant)
        try saveTeacherRun(fixture, into: folder)
        let config = try ConfigLoader.load(
            file: nil,
            overrides: try file.readStrings("\(variant)/overrides") + [
                "distillation.enabled=true", "distillation.checkpoint_path=\(folder)",
            ]
        ).resolved(worldSize: 1).resolvingDistillation()
        #expect(config.distillation.checkpointPath == folder + "/checkpoints/checkpoint-00000003")
        let model = try SelfDistillation(config: config, communicator: SingleProcessCommunicator(), seed: 0)
        try fixture.loadInitialState(into: model)

        let before = try frozenTensors(model)
        for (name, values) in before {
            #expect(values == (try fixture.floats("frozen_teacher/\(name)")), "\(variant): teacher \(name) as saved")
        }
        let patches = model.architecture.patches(cropSize: config.crops.globalCropsSize)
        let masks = [Bool](repeating: true, count: 2 * config.train.batchSizePerRank * patches)
        try fixture.expectSteps(of: model, masks: masks)
        // final_teacher holds the reference's spare EMA: our parts' `teacher` buffers.
        try fixture.expectFinalParameters(of: model)
        let after = try frozenTensors(model)
        #expect(after == before, "\(variant): the frozen teacher changed")
    }

    @Test("a distillation config: the run folder fixed to its newest checkpoint, heads sized from the teacher")
    func resolution() throws {
        let folder = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let file = try HDF5File.open(Self.fixture)
        let fixture = StepFixture(file: file, group: "centering_separate")
        try saveTeacherRun(fixture, into: folder)
        // An incomplete newer save (no manifest) is passed over.
        try FileManager.default.createDirectory(
            atPath: folder + "/checkpoints/checkpoint-00000009", withIntermediateDirectories: true)
        let base = try file.readStrings("centering_separate/overrides")
        let config = try ConfigLoader.load(
            file: nil,
            overrides: base + [
                "dino.head_n_prototypes=7", "ibot.head_n_prototypes=5", "distillation.enabled=true",
                "distillation.checkpoint_path=\(folder)",
            ]
        ).resolvingDistillation()
        #expect(config.distillation.checkpointPath == folder + "/checkpoints/checkpoint-00000003")
        #expect(config.dino.headPrototypes == 24 && config.ibot.headPrototypes == 24)
        // Off: nothing read, nothing changed.
        let off = try ConfigLoader.load(file: nil, overrides: base + ["distillation.checkpoint_path=/nonexistent"])
        #expect(try off.resolvingDistillation() == off)

        func refusal(_ overrides: [String]) throws -> String {
            let config = try ConfigLoader.load(file: nil, overrides: base + ["distillation.enabled=true"] + overrides)
            do {
                _ = try config.resolvingDistillation()
                return ""
            } catch let error as TrainingError { return error.description }
        }
        #expect(
            try refusal(["distillation.checkpoint_path=\(folder)", "student.patch_size=2"])
                .contains("student.patch_size 2 differs from the teacher's 4"))
        #expect(try refusal(["distillation.checkpoint_path=\(folder)/none"]).contains("does not exist"))
        let empty = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: empty) }
        #expect(try refusal(["distillation.checkpoint_path=\(empty)"]).contains("holds no complete checkpoint"))
        #expect(throws: ConfigError.self) {
            try ConfigLoader.load(file: nil, overrides: ["distillation.enabled=true"])
        }
    }

    @Test("the teacher from an exported backbone and head file equals the teacher from its checkpoint")
    func exportedTeacher() throws {
        let folder = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let file = try HDF5File.open(Self.fixture)
        let fixture = StepFixture(file: file, group: "centering_separate")
        // Saved with last layers cut into units of 8 prototypes, read with units of 5: pieces on both sides.
        try saveTeacherRun(fixture, into: folder, headPrototypesPerUnit: 8)
        let checkpoint = folder + "/checkpoints/checkpoint-00000003"
        try CheckpointExport.export(checkpoint: checkpoint, to: folder + "/backbone.h5", which: "teacher")
        let written = try CheckpointExport.export(
            checkpoint: checkpoint, to: folder + "/heads.h5", which: "teacher", heads: true)
        #expect(written == 16, "two heads of 8 tensors each")
        let heads = try HDF5File.open(folder + "/heads.h5")
        #expect(try heads.shape(of: "ibot_head.last_layer.weight_v") == [24, 8])
        let base = try file.readStrings("centering_separate/overrides") + ["distillation.enabled=true"]
        func model(_ extra: [String]) throws -> SelfDistillation {
            let config = try ConfigLoader.load(file: nil, overrides: base + extra).resolved(worldSize: 1)
                .resolvingDistillation()
            return try SelfDistillation(
                config: config, communicator: SingleProcessCommunicator(), seed: 0, headPrototypesPerUnit: 5)
        }
        let exported = try model([
            "distillation.checkpoint_path=\(folder)/backbone.h5", "distillation.heads_path=\(folder)/heads.h5",
        ])
        #expect(exported.distillationTeacher?.source == folder + "/backbone.h5")
        let tensors = try frozenTensors(exported)
        // Two heads of 8 tensors; the backbone's 5 embedding tensors, 14 a block (MLP) in 3 blocks, the norm's 2.
        #expect(tensors.count == 2 * 8 + 5 + 14 * 3 + 2)
        for (name, values) in tensors {
            #expect(values == (try fixture.floats("frozen_teacher/\(name)")), "\(name) from the exported files")
        }
        #expect(try frozenTensors(model(["distillation.checkpoint_path=\(checkpoint)"])) == tensors)
        do {
            _ = try model(["distillation.checkpoint_path=\(folder)/backbone.h5"])
            Issue.record("an exported backbone without heads_path was accepted")
        } catch let error as TrainingError {
            #expect(error.description.contains("set distillation.heads_path"), "\(error)")
        }
    }

    @Test("a distillation checkpoint restores as its student's spare EMA, without the frozen teacher")
    func restoredAsEMA() throws {
        let folder = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let file = try HDF5File.open(Self.fixture)
        let fixture = StepFixture(file: file, group: "sinkhorn_shared")
        try saveTeacherRun(fixture, into: folder + "/teacher")
        let config = try ConfigLoader.load(
            file: nil,
            overrides: try file.readStrings("sinkhorn_shared/overrides") + [
                "distillation.enabled=true", "distillation.checkpoint_path=\(folder)/teacher",
            ]
        ).resolved(worldSize: 1).resolvingDistillation()
        let model = try SelfDistillation(config: config, communicator: SingleProcessCommunicator(), seed: 3)
        try fixture.loadInitialState(into: model)
        let crops = (try fixture.floats("global_crops"), try fixture.floats("local_crops"))
        let patches = model.architecture.patches(cropSize: config.crops.globalCropsSize)
        _ = try crops.0.withUnsafeBufferPointer { g in
            try crops.1.withUnsafeBufferPointer { l in
                try model.step(
                    iteration: 0, globalImages: g.baseAddress!, localImages: l.baseAddress!,
                    masks: [Bool](repeating: true, count: 2 * 4 * patches), images: 4)
            }
        }
        try model.saveCheckpoint(to: folder + "/student/checkpoints/checkpoint-00000001", iteration: 1)
        // The frozen teacher's folder gone: eval, embed and export still open the run.
        try FileManager.default.removeItem(atPath: folder + "/teacher")
        let restored = try SelfDistillation.restored(
            from: folder + "/student", communicator: SingleProcessCommunicator())
        #expect(restored.model.distillationTeacher == nil && restored.iteration == 1)
        for (part, saved) in zip(restored.model.parts, model.parts) {
            for entry in part.table.entries {
                #expect(try part.teacher.gatherTensor(entry.name) == saved.teacher.gatherTensor(entry.name))
            }
        }
    }
}
