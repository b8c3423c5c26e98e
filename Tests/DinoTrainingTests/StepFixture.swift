// One group of a training-step fixture (step_reference.h5, official_parity.h5): the initial state
// in the official names loaded into student and teacher, the stored inputs, and the comparison of
// the parameters after the steps with the stored ones.

import DinoCheckpoint
import DinoTestSupport
import DinoTraining
import Testing

struct StepFixture {
    let file: HDF5File
    let group: String

    func doubles(_ name: String) throws -> [Double] { try file.readDoubles("\(group)/\(name)") }
    func floats(_ name: String) throws -> [Float] { try doubles(name).map { Float($0) } }

    /// Student and teacher of every part set to the fixture's initial tensors.
    func loadInitialState(into model: SelfDistillation) throws {
        for part in model.parts {
            for entry in part.table.entries {
                let values = try floats("initial/\(part.name)/\(entry.name)")
                part.student.setTensor(entry.name, values)
                part.teacher.setTensor(entry.name, values)
            }
        }
    }

    /// Runs `steps` steps of `model` on the fixture's crops with `masks`, each loss term within 1e-4 of
    /// the fixture's `losses` and the clipped gradients after step 1 within 1e-4 of its `gradients`;
    /// `beforeStep` sees each step's index first (checks of the schedules).
    func expectSteps(
        of model: SelfDistillation, masks: [Bool], steps: Int = 3, beforeStep: (Int) throws -> Void = { _ in }
    ) throws {
        let globalCrops = try floats("global_crops"), localCrops = try floats("local_crops")
        let expectedLosses = try doubles("losses")
        for step in 0..<steps {
            try beforeStep(step)
            let losses = try globalCrops.withUnsafeBufferPointer { g in
                try localCrops.withUnsafeBufferPointer { l in
                    try model.step(
                        iteration: step, globalImages: g.baseAddress!, localImages: l.baseAddress!, masks: masks,
                        images: model.config.train.batchSizePerRank)
                }
            }
            let got = [losses.dinoLocal, losses.dinoGlobal, losses.ibot, losses.koleo]
            for (i, name) in ["dino local", "dino global", "ibot", "koleo"].enumerated() {
                let expected = expectedLosses[step * 4 + i]
                #expect(
                    abs(got[i] - expected) <= 1e-4 * max(abs(expected), 1e-2),
                    "\(group) step \(step + 1) \(name): \(got[i]) vs \(expected)")
            }
            guard step == 0 else { continue }
            for part in model.parts {
                for entry in part.table.entries {
                    let reference = try doubles("gradients/\(part.name)/\(entry.name)")
                    let error = normwiseError(try part.student.gatherGradient(entry.name), reference)
                    #expect(error <= 1e-4, "\(group) gradient of \(part.name) \(entry.name): \(error)")
                }
            }
        }
    }

    /// Student and teacher after the steps against the fixture's, normwise within 1e-4 over the
    /// entries Adam moves by well-conditioned amounts (adamWellConditioned), at most 5 % left out.
    func expectFinalParameters(of model: SelfDistillation) throws {
        var compared = 0, left = 0
        for part in model.parts {
            for entry in part.table.entries {
                let keep = adamWellConditioned(firstGradient: try doubles("gradients/\(part.name)/\(entry.name)"))
                compared += keep.filter { $0 }.count
                left += keep.filter { !$0 }.count
                let student = try doubles("final_student/\(part.name)/\(entry.name)")
                let teacher = try doubles("final_teacher/\(part.name)/\(entry.name)")
                let studentError = normwiseError(
                    kept(try part.student.gatherTensor(entry.name), keep), kept(student, keep))
                let teacherError = normwiseError(
                    kept(try part.teacher.gatherTensor(entry.name), keep), kept(teacher, keep))
                #expect(studentError <= 1e-4, "\(group) student \(part.name) \(entry.name): \(studentError)")
                #expect(teacherError <= 1e-4, "\(group) teacher \(part.name) \(entry.name): \(teacherError)")
            }
        }
        #expect(
            Double(left) <= 0.05 * Double(compared + left), "\(group): \(left) of \(compared + left) entries left out")
    }
}
