// Full training steps, timed per step on every rank, on synthetic crops (no data pipeline: data
// wait is 0) or, with a dataset, on real images through the training loader (decoding and
// multi-crop on background threads; the wait for a batch counts in the step): images/s in total and per rank,
// tokens/s, model GFLOP/s and MFU
// against the sgemm peak measured on every rank at the start (summed over ranks), the time
// split (compute, total and exposed communication, optimizer, EMA) and peak RSS per rank.
// The peak is the better of 1024^3 and 2048^3 sgemm; a model whose GEMMs run faster than that
// reference shows an MFU near or slightly above 1.
// A step's time is the slowest rank's; every reported time is the median over the timed steps.

import DinoConfig
import DinoCore
import DinoData
import DinoKernels
import DinoModel
import DinoTraining
import Foundation

/// The result of `bench step`.
public struct StepReport: Codable, Sendable {
    public var imagesPerSecond: Double
    public var imagesPerSecondPerRank: Double
    public var tokensPerSecond: Double
    public var modelGFLOPsPerSecond: Double
    public var mfu: Double
    public var sgemmPeakGFLOPs: Double
    public var timeStep: Double
    public var timeCompute: Double
    public var timeCommunicationTotal: Double
    public var timeCommunicationExposed: Double
    public var timeCommunicationExposedGathers: Double
    public var timeCommunicationExposedReductions: Double
    public var timeCommunicationExposedObjective: Double
    public var timeDataWait: Double
    public var timeTeacherForward: Double
    public var timeStudentForward: Double
    public var timeBackward: Double
    public var timeOptimizer: Double
    public var timeEMA: Double
    public var maxRSSBytes: Int
    public var rssBytesPerRank: [Int]
    public var worldSize: Int
    public var imagesPerRank: Int
    public var steps: Int
    public var flopsPerStep: Double
    public var config: String

    enum CodingKeys: String, CodingKey {
        case imagesPerSecond = "images_per_sec"
        case imagesPerSecondPerRank = "images_per_sec_per_rank"
        case tokensPerSecond = "tokens_per_sec"
        case modelGFLOPsPerSecond = "model_gflops_per_sec"
        case mfu
        case sgemmPeakGFLOPs = "sgemm_peak_gflops"
        case timeStep = "time_step"
        case timeCompute = "time_compute"
        case timeCommunicationTotal = "time_comm_total"
        case timeCommunicationExposed = "time_comm_exposed"
        case timeCommunicationExposedGathers = "time_comm_exposed_gathers"
        case timeCommunicationExposedReductions = "time_comm_exposed_reductions"
        case timeCommunicationExposedObjective = "time_comm_exposed_objective"
        case timeDataWait = "time_data_wait"
        case timeTeacherForward = "time_teacher_forward"
        case timeStudentForward = "time_student_forward"
        case timeBackward = "time_backward"
        case timeOptimizer = "time_optimizer"
        case timeEMA = "time_ema"
        case maxRSSBytes = "max_rss_bytes"
        case rssBytesPerRank = "rss_bytes_per_rank"
        case worldSize = "world_size"
        case imagesPerRank = "images_per_rank"
        case steps
        case flopsPerStep = "flops_per_step"
        case config
    }
}

/// Times training steps of `config` on synthetic crops.
public enum StepBenchmark {
    public static func run(
        config: TrainingConfig, communicator comm: any Communicator, steps: Int, warmup: Int,
        seed: UInt64, threads: Int, data: ImageDataset? = nil
    ) throws -> StepReport {
        let peak = try comm.allReduce(AttentionBenchmark.sgemmPeak(threads: threads, repeats: 3), op: .sum)
        // Linear layers use OpenBLAS with `threads` threads, attention its own `threads` workers.
        BLAS.threadCount = threads
        let model = try SelfDistillation(config: config, communicator: comm, seed: seed, threads: threads)
        let b = config.train.batchSizePerRank, world = comm.worldSize
        // Per timed step, the slowest rank's [step, compute, comm total, exposed, optimizer, ema, data wait,
        // exposed gathers, exposed reductions, exposed objective, teacher forward, student forward, backward].
        var rows: [[Double]] = []
        var flops: [Double] = []
        func record(_ step: Int, _ timing: StepTiming, wait: Double) throws {
            guard step >= warmup else { return }
            let values = [
                timing.total + wait, timing.compute, timing.totalCommunication, timing.exposedCommunication,
                timing.optimizer, timing.ema, wait, timing.exposedGathers, timing.exposedReductions,
                timing.exposedObjective, timing.teacherForward, timing.studentForward, timing.backward,
            ]
            rows.append(try comm.allReduce(values, op: .max))
            flops.append(try comm.allReduce(model.stepFLOPs(images: b, maskedTokens: timing.maskedTokens), op: .sum))
        }
        if let data {
            guard data.count >= b * world else {
                throw TrainingError.data(
                    "\(data.root) holds \(data.count) images, fewer than one global batch of \(b * world)")
            }
            let loader = CropLoader.training(config, dataset: data, rank: comm.rank, worldSize: world, firstStep: 0)
            defer { loader.stop() }
            let grid = config.crops.globalCropsSize / config.student.patchSize
            for step in 0..<(warmup + steps) {
                let batch = try loader.batch(step: step)
                let wait = loader.takeWaitSeconds()
                let masks = MaskPlan(
                    seed: seed, iteration: UInt64(step), globalImages: b * world, grid: grid,
                    probability: config.ibot.maskSampleProbability, ratioRange: config.ibot.maskRatioMinMax
                )
                .masks(firstImage: comm.rank * b, count: b)
                _ = try withBase(batch.globalCrops) { g in
                    try withBase(batch.localCrops) { l in
                        try model.step(iteration: step, globalImages: g, localImages: l, masks: masks, images: b)
                    }
                }
                try record(step, model.lastTiming, wait: wait)
            }
        } else {
            _ = try runSyntheticSteps(model, steps: warmup + steps, seed: seed, communicator: comm) { step, _, timing in
                try record(step, timing, wait: 0)
            }
        }
        func median(_ column: Int) -> Double { Statistics.median(rows.map { $0[column] }) }
        let stepTime = median(0)
        let a = model.architecture
        let tokensPerImage =
            2 * a.tokens(cropSize: config.crops.globalCropsSize)
            + config.crops.localCropsNumber * a.tokens(cropSize: config.crops.localCropsSize)
        let flopsPerStep = Statistics.median(flops)
        let rss = Int64(Trainer.peakRSSBytes())
        var rssPerRank = [Int64](repeating: 0, count: world)
        try [rss].withUnsafeBufferPointer { mine in
            try rssPerRank.withUnsafeMutableBufferPointer { try comm.allGather(mine, into: $0) }
        }
        let images = Double(b * world)
        return StepReport(
            imagesPerSecond: images / stepTime, imagesPerSecondPerRank: images / stepTime / Double(world),
            tokensPerSecond: images * Double(tokensPerImage) / stepTime,
            modelGFLOPsPerSecond: flopsPerStep / stepTime / 1e9, mfu: flopsPerStep / stepTime / 1e9 / peak,
            sgemmPeakGFLOPs: peak, timeStep: stepTime, timeCompute: median(1), timeCommunicationTotal: median(2),
            timeCommunicationExposed: median(3), timeCommunicationExposedGathers: median(7),
            timeCommunicationExposedReductions: median(8),
            timeCommunicationExposedObjective: median(9), timeDataWait: median(6), timeTeacherForward: median(10),
            timeStudentForward: median(11), timeBackward: median(12), timeOptimizer: median(4),
            timeEMA: median(5),
            maxRSSBytes: Int(rssPerRank.max() ?? 0), rssBytesPerRank: rssPerRank.map { Int($0) }, worldSize: world,
            imagesPerRank: b, steps: steps, flopsPerStep: flopsPerStep, config: ConfigLoader.yaml(config))
    }
}
