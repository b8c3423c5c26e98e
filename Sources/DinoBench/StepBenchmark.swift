// Full training steps on synthetic crops (the data pipeline is not involved: data wait is 0),
// timed per step on every rank: images/s in total and per rank, tokens/s, model GFLOP/s and MFU
// against the sgemm peak measured on every rank at the start (summed over ranks), the time
// split (compute, total and exposed communication, optimizer, EMA) and peak RSS per rank.
// The peak is the better of 1024^3 and 2048^3 sgemm; a model whose GEMMs run faster than that
// reference shows an MFU near or slightly above 1.
// A step's time is the slowest rank's; every reported time is the median over the timed steps.

import DinoConfig
import DinoCore
import DinoKernels
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
    public var timeDataWait: Double
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
        case timeDataWait = "time_data_wait"
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
    public static func run(config: TrainingConfig, communicator comm: any Communicator, steps: Int, warmup: Int,
                           seed: UInt64, threads: Int) throws -> StepReport {
        let peak = try comm.allReduce(AttentionBenchmark.sgemmPeak(threads: threads, repeats: 3), op: .sum)
        BLAS.threadCount = 1
        let model = try SelfDistillation(config: config, communicator: comm, seed: seed, threads: threads)
        var rows: [[Double]] = []  // per timed step: slowest rank's [total, compute, comm total, exposed, optimizer, ema]
        var flops: [Double] = []
        _ = try runSyntheticSteps(model, steps: warmup + steps, seed: seed, communicator: comm) { step, _, timing in
            guard step >= warmup else { return }
            let values = [timing.total, timing.compute, timing.totalCommunication, timing.exposedCommunication,
                          timing.optimizer, timing.ema]
            rows.append(try comm.allReduce(values, op: .max))
            flops.append(try comm.allReduce(model.stepFLOPs(images: config.train.batchSizePerRank,
                                                            maskedTokens: timing.maskedTokens), op: .sum))
        }
        func median(_ column: Int) -> Double { Statistics.median(rows.map { $0[column] }) }
        let stepTime = median(0)
        let b = config.train.batchSizePerRank, world = comm.worldSize
        let a = model.architecture
        let tokensPerImage = 2 * a.tokens(cropSize: config.crops.globalCropsSize)
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
            timeCommunicationExposed: median(3), timeDataWait: 0, timeOptimizer: median(4), timeEMA: median(5),
            maxRSSBytes: Int(rssPerRank.max() ?? 0), rssBytesPerRank: rssPerRank.map { Int($0) }, worldSize: world,
            imagesPerRank: b, steps: steps, flopsPerStep: flopsPerStep, config: ConfigLoader.yaml(config))
    }
}
