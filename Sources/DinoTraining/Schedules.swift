// The official schedules (dinov2/utils/utils.py CosineScheduler, train/train.py build_schedulers),
// all indexed by the global iteration:
//   CosineScheduler(base, final, total, warmup, start): linspace(start, base, warmup) (endpoints
//   included), then final + 0.5 (base - final) (1 + cos(pi i / L)) for i in 0..<L, L = total - warmup;
//   `final` from `total` on.
//   lr:          base optim.lr (scaled), final min_lr, warmup warmup_epochs x epoch length
//   last layer:  lr, but 0 during the first freeze_last_layer_epochs x epoch length iterations
//   wd:          weight_decay -> weight_decay_end, no warmup
//   momentum:    momentum_teacher -> final_momentum_teacher, no warmup
//   teacher temperature: linear warmup_teacher_temp -> teacher_temp over its warm-up, then constant

import DinoConfig
import Foundation

/// One schedule of the official form.
public struct CosineSchedule: Sendable, Equatable {
    public let base: Double, final: Double, total: Int, warmup: Int, start: Double

    public init(base: Double, final: Double, total: Int, warmup: Int = 0, start: Double = 0) {
        self.base = base
        self.final = final
        self.total = total
        self.warmup = warmup
        self.start = start
    }

    /// The value at `iteration`.
    public func value(at iteration: Int) -> Double {
        if iteration >= total { return final }
        if iteration < warmup {
            // numpy linspace(start, base, warmup): start + i (base - start) / (warmup - 1).
            return warmup == 1 ? start : start + Double(iteration) * (base - start) / Double(warmup - 1)
        }
        let length = total - warmup
        let i = Double(iteration - warmup)
        return final + 0.5 * (base - final) * (1 + cos(Double.pi * i / Double(length)))
    }
}

/// Every scheduled value at one iteration.
public struct ScheduleValues: Sendable, Equatable {
    public var lr: Double
    public var lastLayerLR: Double
    public var weightDecay: Double
    public var momentum: Double
    public var teacherTemperature: Double

    public init(lr: Double, lastLayerLR: Double, weightDecay: Double, momentum: Double, teacherTemperature: Double) {
        self.lr = lr
        self.lastLayerLR = lastLayerLR
        self.weightDecay = weightDecay
        self.momentum = momentum
        self.teacherTemperature = teacherTemperature
    }
}

/// The schedules of a run.
public struct TrainingSchedules: Sendable {
    public let lr: CosineSchedule
    public let weightDecay: CosineSchedule
    public let momentum: CosineSchedule
    public let teacherTemperature: CosineSchedule
    public let freezeLastLayerIterations: Int

    /// Built from a config whose `optim.lr` is already scaled (`TrainingConfig.resolved(worldSize:)`).
    public init(_ config: TrainingConfig) {
        let epoch = config.train.officialEpochLength
        let total = config.optim.epochs * epoch
        lr = CosineSchedule(
            base: config.optim.lr, final: config.optim.minLR, total: total,
            warmup: config.optim.warmupEpochs * epoch)
        weightDecay = CosineSchedule(base: config.optim.weightDecay, final: config.optim.weightDecayEnd, total: total)
        momentum = CosineSchedule(
            base: config.teacher.momentumTeacher, final: config.teacher.finalMomentumTeacher,
            total: total)
        let temperatureWarmup = config.teacher.warmupTeacherTempEpochs * epoch
        teacherTemperature = CosineSchedule(
            base: config.teacher.teacherTemp, final: config.teacher.teacherTemp,
            total: temperatureWarmup, warmup: temperatureWarmup,
            start: config.teacher.warmupTeacherTemp)
        freezeLastLayerIterations = config.optim.freezeLastLayerEpochs * epoch
    }

    public func values(at iteration: Int) -> ScheduleValues {
        let rate = lr.value(at: iteration)
        return ScheduleValues(
            lr: rate, lastLayerLR: iteration < freezeLastLayerIterations ? 0 : rate,
            weightDecay: weightDecay.value(at: iteration), momentum: momentum.value(at: iteration),
            teacherTemperature: teacherTemperature.value(at: iteration))
    }
}
