// Full training steps, timed per step on every rank, on synthetic crops (no data pipeline: data
// wait is 0) or, with a dataset, on real images through the training loader (decoding and
// multi-crop on background threads; the wait for a batch counts in the step): images/s in total and
// per rank, tokens/s, model GFLOP/s and MFU, the time split (phases, compute, total and exposed
// communication, optimizer, EMA) and peak RSS per rank during the steps (the high-water mark is reset
// after the peak measurement before them, and read before the one after them).
// MFU's denominator is the peak of the cores the run uses, measured uncontended before and after
// the steps: on each node the first rank times GEMMs on all the cores the node's ranks use (cores
// per node capped at the processor count) while the node's other ranks sleep, best of the four
// trials (on a shared host one measurement can land in a slow spell); nodes add up. fp32 runs use
// the sgemm peak (best of 1024^3 and 2048^3), runs with any bf16 module the bf16 GEMM peak (best of
// 2048^3 and 1024 x 1024 x 4096, oneDNN), so no run's MFU exceeds 1 by running faster kernels than
// its reference.
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
    /// The fp32 sgemm peak of the run's cores (the MFU denominator of fp32 runs).
    public var sgemmPeakGFLOPs: Double
    /// The bf16 GEMM peak of the run's cores, measured for runs with a bf16 module (their denominator).
    public var bf16PeakGFLOPs: Double?
    /// "fp32" or "bf16 (oneDNN ISA)", or the fallback: what the modules computed in.
    public var computePrecision: String?
    public var timeStep: Double
    public var timeCompute: Double
    public var timeCommunicationTotal: Double
    public var timeCommunicationExposed: Double
    public var timeCommunicationExposedGathers: Double
    public var timeCommunicationExposedReductions: Double
    public var timeCommunicationExposedObjective: Double
    public var timeDataWait: Double
    // Optional: reports written before the phases were timed still decode (scaling-report).
    public var timeTeacherForward: Double?
    public var timeStudentForward: Double?
    public var timeBackward: Double?
    public var timeOptimizer: Double
    public var timeEMA: Double
    public var maxRSSBytes: Int
    public var rssBytesPerRank: [Int]
    /// Whether the student recomputed its blocks in backward (optional: older reports lack it).
    public var activationCheckpointing: Bool?
    /// Rank 0's buffers by category after the timed steps (optional: older reports lack it).
    public var memory: [MemoryCategory]?
    /// The memory model's prediction for one rank, by category (MemoryModel; optional as `memory`).
    public var memoryPredicted: [MemoryCategory]?
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
        case bf16PeakGFLOPs = "bf16_peak_gflops"
        case computePrecision = "compute_precision"
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
        case activationCheckpointing = "activation_checkpointing"
        case memory
        case memoryPredicted = "memory_predicted"
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
        seed: UInt64, threads: Int, data: ImageDataset? = nil, prediction: MemoryPrediction? = nil
    ) throws -> StepReport {
        let model = try SelfDistillation(config: config, communicator: comm, seed: seed, threads: threads)
        let bf16 = model.precisionReport.map { !$0.isFallback } ?? false
        func measurePeaks() throws -> (sgemm: Double, bf16: Double?) {
            let sgemm = try nodePeak(communicator: comm, threads: threads) { cores in
                AttentionBenchmark.sgemmPeak(threads: cores, repeats: 3)
            }
            let bf16Peak =
                bf16
                ? try nodePeak(communicator: comm, threads: threads) { AttentionBenchmark.bf16Peak(threads: $0) ?? 0 }
                : nil
            return (sgemm, bf16Peak)
        }
        let peaksBefore = try measurePeaks()
        // Every GEMM, attention and element-wise loop runs on the model's `threads` workers; OpenBLAS
        // inside them stays serial (ParallelGEMM says why).
        BLAS.threadCount = 1
        // Peak RSS is that of the steps: the peak measurement's matrices (48 MiB at 2048^3) do not count.
        ResidentMemory.resetPeak()
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
            for step in 0..<(warmup + steps) {
                let batch = try loader.batch(step: step)
                let wait = loader.takeWaitSeconds()
                let masks = config.stepMasks(
                    seed: seed, iteration: step, globalImages: b * world, firstImage: comm.rank * b, count: b)
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
        let rss = Int64(Trainer.peakRSSBytes())
        let peaksAfter = try measurePeaks()
        let sgemmPeak = Swift.max(peaksBefore.sgemm, peaksAfter.sgemm)
        let bf16Peak = peaksBefore.bf16.map { Swift.max($0, peaksAfter.bf16 ?? 0) }
        let peak = bf16Peak ?? sgemmPeak
        func median(_ column: Int) -> Double { Statistics.median(rows.map { $0[column] }) }
        let stepTime = median(0)
        let a = model.architecture
        let tokensPerImage =
            2 * a.tokens(cropSize: config.crops.globalCropsSize)
            + config.crops.localCropsNumber * a.tokens(cropSize: config.crops.localCropsSize)
        let flopsPerStep = Statistics.median(flops)
        var rssPerRank = [Int64](repeating: 0, count: world)
        try [rss].withUnsafeBufferPointer { mine in
            try rssPerRank.withUnsafeMutableBufferPointer { try comm.allGather(mine, into: $0) }
        }
        let images = Double(b * world)
        return StepReport(
            imagesPerSecond: images / stepTime, imagesPerSecondPerRank: images / stepTime / Double(world),
            tokensPerSecond: images * Double(tokensPerImage) / stepTime,
            modelGFLOPsPerSecond: flopsPerStep / stepTime / 1e9, mfu: flopsPerStep / stepTime / 1e9 / peak,
            sgemmPeakGFLOPs: sgemmPeak, bf16PeakGFLOPs: bf16Peak,
            computePrecision: model.precisionReport?.text ?? "fp32", timeStep: stepTime, timeCompute: median(1),
            timeCommunicationTotal: median(2),
            timeCommunicationExposed: median(3), timeCommunicationExposedGathers: median(7),
            timeCommunicationExposedReductions: median(8),
            timeCommunicationExposedObjective: median(9), timeDataWait: median(6), timeTeacherForward: median(10),
            timeStudentForward: median(11), timeBackward: median(12), timeOptimizer: median(4),
            timeEMA: median(5),
            maxRSSBytes: Int(rssPerRank.max() ?? 0), rssBytesPerRank: rssPerRank.map { Int($0) },
            activationCheckpointing: model.checkpointsActivations,
            memory: model.memoryBreakdown, memoryPredicted: prediction?.categories, worldSize: world,
            imagesPerRank: b, steps: steps, flopsPerStep: flopsPerStep, config: ConfigLoader.yaml(config))
    }

    /// The summed peak of every node's cores (see the file header): the node's first rank measures
    /// with the cores its ranks use while the others sleep in short naps on a pending all-reduce
    /// (an MPI barrier would spin on the very cores being measured).
    static func nodePeak(
        communicator comm: any Communicator, threads: Int, measure: (Int) -> Double
    ) throws -> Double {
        let node = try comm.splitByNode()
        let cores = Swift.min(ProcessInfo.processInfo.activeProcessorCount, node.worldSize * threads)
        try node.barrier()
        var mine = [0.0]
        if node.rank == 0 { mine[0] = Swift.max(measure(cores), measure(cores)) }
        try mine.withUnsafeMutableBufferPointer { buffer in
            let done = try node.startAllReduce(buffer, op: .max)
            while try !done.test() { usleep(node.rank == 0 ? 0 : 5000) }
        }
        return try comm.allReduce(node.rank == 0 ? mine[0] : 0, op: .sum)
    }
}
