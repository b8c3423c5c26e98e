// `dinov2-fsdp train`: the DINOv2 recipe end to end on one or many ranks.
//   1. resolve the config for the world size and write OUTPUT/config.yaml
//   2. open the training images (--data, or the embedded dataset, generated once into a cache)
//   3. build the model, and resume from the newest complete checkpoint in OUTPUT/checkpoints
//      (checkpoints that are incomplete or damaged are passed over with a warning)
//   4. for every iteration: the rank's crops from the prefetching loader, the step's masks planned
//      over the global batch, one training step; every train.log_every iterations a progress line
//      and a record in OUTPUT/metrics.jsonl (rank 0); checkpoints every checkpointing.period and at
//      the end, keeping max_to_keep (and every keep_every-th for good)
//   5. SIGUSR1 or SIGTERM: all ranks agree at the next iteration boundary, save, and return.

import DinoConfig
import DinoCore
import DinoData
import DinoKernels
import DinoModel
import Foundation

/// Set by the signal handler; read at iteration boundaries.
nonisolated(unsafe) private var stopRequested: sig_atomic_t = 0

/// What ended a training run.
public enum TrainingOutcome: Equatable, Sendable {
    case finished(iteration: Int)
    case preempted(iteration: Int)
}

/// Runs the training loop of one rank.
public enum Trainer {
    /// Where the embedded dataset is generated: $DINO_CACHE, or ~/.cache/dinov2-fsdp.
    public static var cacheFolder: String {
        if let cache = ProcessInfo.processInfo.environment["DINO_CACHE"], !cache.isEmpty { return cache }
        return NSHomeDirectory() + "/.cache/dinov2-fsdp"
    }

    /// Images per class of the embedded dataset's train and val splits: 4000 training images, enough
    /// that an hour of training sees each about 25 times rather than memorising a few hundred.
    public static let embeddedPerClass = (train: 500, val: 50)

    /// The embedded dataset's root, generated on first use (every rank drawing its share).
    public static func embeddedDataset(communicator comm: any Communicator, size: Int) throws -> String {
        let root = cacheFolder + "/embedded-v\(SyntheticImages.version)-\(size)px"
        let complete = FileManager.default.fileExists(atPath: root + "/complete")
        if try comm.allReduce(Int64(complete ? 0 : 1), op: .max) > 0 {
            func write(_ part: (index: Int, count: Int)) throws {
                try SyntheticImages.write(root: root, classes: SyntheticImages.classNames.count,
                                          trainPerClass: embeddedPerClass.train, valPerClass: embeddedPerClass.val,
                                          size: size, seed: 0, part: part, keepExisting: true)
            }
            try write((comm.rank, comm.worldSize))
            try comm.barrier()
            // On a shared cache this finds every file; where each node has its own, it draws the rest.
            if !complete { try write((0, 1)) }
            try "ok\n".write(toFile: root + "/complete", atomically: true, encoding: .utf8)
        }
        try comm.barrier()
        return root
    }

    public static func run(config loaded: TrainingConfig, output: String, data: String?, val: String? = nil,
                           communicator comm: any Communicator, log: Log) throws -> TrainingOutcome {
        let config = loaded.resolved(worldSize: comm.worldSize)
        // Data.
        let source: String
        var validation = val
        if let data {
            source = data
        } else if config.train.datasetPath == "embedded" {
            let root = try embeddedDataset(communicator: comm, size: 128)
            source = root + "/train"
            if validation == nil { validation = root + "/val" }
        } else {
            source = config.train.datasetPath
        }
        let valDataset = try validation.map { try ImageDataset(path: $0) }
        let dataset = try ImageDataset(path: source)
        let b = config.train.batchSizePerRank, globalBatch = b * comm.worldSize
        guard dataset.count >= globalBatch else {
            throw TrainingError.unsupported("\(source) holds \(dataset.count) images, fewer than one global batch of "
                + "\(globalBatch) (train.batch_size_per_gpu \(b) x \(comm.worldSize) ranks); add images or lower the batch")
        }

        // Model, resumed from the newest complete checkpoint. This comes before anything is written
        // to the output folder, so a checkpoint of another configuration is refused untouched.
        // Every rank must take the same checkpoint: one that fails on any rank (each checks the files it
        // reads) is passed over by all.
        // The model's own parallel loops (attention, element-wise kernels) take as many threads as
        // OpenBLAS was given (Launch/mpirun.sh: cores / ranks, at least 1). Results do not depend on it.
        let threads = BLAS.threadCount
        var model = try SelfDistillation(config: config, communicator: comm, seed: UInt64(config.train.seed), threads: threads)
        var start = 0, touched = false
        for folder in checkpoints(in: output).reversed() {
            var failure: CheckpointError?
            do {
                touched = true
                start = try model.loadCheckpoint(from: folder)
            } catch let error as CheckpointError {
                if case .mismatch(let why) = error {
                    // Another configuration (the same on every rank): never continue over it, never overwrite it.
                    throw TrainingError.unsupported("\(folder) was written by an incompatible configuration (\(why)); "
                        + "train into another --output, or use the configuration in \(output)/config.yaml")
                }
                failure = error
            }
            if let failure { Console.write("[rank \(comm.rank)] warning: passing over \(folder): \(failure)\n", to: 2) }
            if try comm.allReduce(Int64(failure == nil ? 0 : 1), op: .max) == 0 {
                log.main("resumed from \(folder) at iteration \(start)")
                touched = false
                break
            }
            start = 0
        }
        if touched {
            // Every checkpoint failed somewhere, but some loads succeeded here: start from a clean initialisation.
            model = try SelfDistillation(config: config, communicator: comm, seed: UInt64(config.train.seed), threads: threads)
        }
        if comm.rank == 0 {
            try FileManager.default.createDirectory(atPath: output + "/checkpoints", withIntermediateDirectories: true)
            try ConfigLoader.write(config, to: output + "/config.yaml")
        }
        try comm.barrier()
        let total = config.totalIterations
        if start >= total {
            log.main("nothing to do: \(output) already holds iteration \(start) of \(total)")
            return .finished(iteration: start)
        }

        let loader = CropLoader.training(config, dataset: dataset, rank: comm.rank, worldSize: comm.worldSize, firstStep: start)
        defer { loader.stop() }
        signal(SIGUSR1) { _ in stopRequested = 1 }
        signal(SIGTERM) { _ in stopRequested = 1 }
        let grid = config.crops.globalCropsSize / config.student.patchSize
        let metrics = output + "/metrics.jsonl"
        log.main("training \(config.student.arch) on \(comm.worldSize) rank(s), \(dataset.count) images, "
            + "global batch \(globalBatch), iterations \(start)..<\(total), output \(output)")

        // Wall time of this run (from here; a resumed run continues from the last record's value), for
        // learning curves against time.
        let clockStart = MonotonicClock.seconds() - lastElapsedSeconds(metrics: metrics, before: start)
        func elapsed() -> Double { MonotonicClock.seconds() - clockStart }
        let period = config.evaluation.evalPeriodIterations
        var initialKNN: (top1: Double, top5: Double)?
        if let valDataset, period > 0, start == 0 {
            // The curve's first point: the initial teacher (= student) before any step.
            let result = try KNN.evaluate(model: model, train: dataset, val: valDataset, communicator: comm)
            initialKNN = result
            log.main(String(format: "[0/%d] k-NN (k 20): top-1 %.1f%%, top-5 %.1f%%", total, result.top1, result.top5))
            if comm.rank == 0 {
                try append(["iteration": 0, "knn_top1": result.top1, "knn_top5": result.top5,
                            "elapsed_seconds": elapsed()], to: metrics)
            }
        }
        var window = (seconds: 0.0, wait: 0.0, exposed: 0.0, steps: 0, skipped: 0)
        for iteration in start..<total {
            if try comm.allReduce(Int64(stopRequested), op: .max) > 0 {
                try save(model, output: output, iteration: iteration, config: config, log: log)
                log.main("stop requested: saved iteration \(iteration); run the same command to continue")
                if comm.rank == 0 { writeCurves(output: output, log: log) }
                return .preempted(iteration: iteration)
            }
            let stepStart = MonotonicClock.seconds()
            let batch = try loader.batch(step: iteration)
            let masks = MaskPlan(seed: UInt64(config.train.seed), iteration: UInt64(iteration), globalImages: globalBatch,
                                 grid: grid, probability: config.ibot.maskSampleProbability,
                                 ratioRange: config.ibot.maskRatioMinMax).masks(firstImage: comm.rank * b, count: b)
            let losses = try withBase(batch.globalCrops) { g in
                try withBase(batch.localCrops) { l in
                    try model.step(iteration: iteration, globalImages: g, localImages: l, masks: masks, images: b)
                }
            }
            let seconds = MonotonicClock.seconds() - stepStart
            window.seconds += seconds
            window.wait += loader.takeWaitSeconds()
            window.exposed += model.lastTiming.exposedCommunication
            window.steps += 1
            window.skipped += batch.skipped

            let done = iteration + 1
            if done % config.train.logEvery == 0 || done == total {
                let mean = try comm.allReduce([losses.dinoLocal, losses.dinoGlobal, losses.ibot, losses.koleo], op: .sum)
                    .map { $0 / Double(comm.worldSize) }
                let slowest = try comm.allReduce([window.seconds, window.wait, window.exposed], op: .max)
                let skipped = try comm.allReduce(Int64(window.skipped), op: .sum)
                let rss = try comm.allReduce(Int64(peakRSSBytes()), op: .max)
                let s = model.schedules.values(at: iteration)
                let targets = try model.targetStatistics()
                let perSecond = Double(globalBatch * window.steps) / slowest[0]
                let record: [String: Any] = [
                    "iteration": done, "loss": mean.reduce(0, +), "dino_local_crops_loss": mean[0],
                    "dino_global_crops_loss": mean[1], "ibot_loss": mean[2], "koleo_loss": mean[3], "lr": s.lr,
                    "wd": s.weightDecay, "mom": s.momentum, "teacher_temp": s.teacherTemperature,
                    "images_per_sec": perSecond, "images_per_sec_per_rank": perSecond / Double(comm.worldSize),
                    "data_wait_fraction": slowest[1] / slowest[0], "comm_exposed_fraction": slowest[2] / slowest[0],
                    "max_rss_bytes": rss, "skipped_images": skipped,
                    "teacher_entropy": targets.meanEntropy, "teacher_mean_entropy": targets.entropyOfMean,
                    "teacher_prototypes_in_use": targets.prototypesInUse, "teacher_cls_spread": targets.clsSpread,
                    "teacher_head_spread": targets.headSpread, "elapsed_seconds": elapsed(),
                ]
                if comm.rank == 0 { try append(record, to: metrics) }
                let remaining = Double(total - done) * slowest[0] / Double(window.steps)
                log.main(String(format: "[%d/%d] loss %.4f (dino local %.4f global %.4f ibot %.4f koleo %.4f) lr %.2e "
                    + "teacher entropy %.2f / mean %.2f (%d prototypes, spread CLS %.3f head %.4f) %.2f img/s (%.2f per rank) "
                    + "ETA %.0f s",
                    done, total, mean.reduce(0, +), mean[0], mean[1], mean[2], mean[3], s.lr, targets.meanEntropy,
                    targets.entropyOfMean, targets.prototypesInUse, targets.clsSpread, targets.headSpread, perSecond,
                    perSecond / Double(comm.worldSize), remaining))
                window = (0, 0, 0, 0, 0)
            }
            if let valDataset, period > 0, done % period == 0, done < total {
                let result = try KNN.evaluate(model: model, train: dataset, val: valDataset, communicator: comm)
                log.main(String(format: "[%d/%d] k-NN (k 20): top-1 %.1f%%, top-5 %.1f%%", done, total, result.top1, result.top5))
                if comm.rank == 0 {
                    try append(["iteration": done, "knn_top1": result.top1, "knn_top5": result.top5,
                                "elapsed_seconds": elapsed()], to: metrics)
                }
            }
            if done % config.checkpointing.period == 0 || done == total {
                try save(model, output: output, iteration: done, config: config, log: log)
            }
        }
        if let valDataset {
            // k-NN of the teacher now and of the initialisation (measured before step 1, or a fresh
            // model of the same seed when this process resumed).
            let fresh = { try SelfDistillation(config: config, communicator: comm, seed: UInt64(config.train.seed),
                                               threads: threads) }
            let before = try initialKNN
                ?? KNN.evaluate(model: fresh(), train: dataset, val: valDataset, communicator: comm)
            let after = try KNN.evaluate(model: model, train: dataset, val: valDataset, communicator: comm)
            let line = String(format: "k-NN (k 20) on %@: top-1 %.1f%% (at initialisation %.1f%%, gain %+.1f points), "
                                  + "top-5 %.1f%%", validation ?? "", after.top1, before.top1, after.top1 - before.top1,
                              after.top5)
            log.main(line)
            if comm.rank == 0 {
                try append(["iteration": total, "knn_top1_init": before.top1, "knn_top1": after.top1,
                            "knn_top5": after.top5, "knn_gain": after.top1 - before.top1,
                            "elapsed_seconds": elapsed()], to: metrics)
            }
        }
        if comm.rank == 0 { writeCurves(output: output, log: log) }
        return .finished(iteration: total)
    }

    /// OUTPUT/metrics.svg from the metrics so far; a failure only warns (the run itself succeeded).
    static func writeCurves(output: String, log: Log) {
        do {
            try TrainingCurves.write(output: output, to: output + "/metrics.svg")
            log.main("wrote \(output)/metrics.svg")
        } catch {
            log.warning("could not draw \(output)/metrics.svg: \(error)")
        }
    }

    // MARK: - Checkpoints

    /// Complete checkpoint folders of `output`, oldest first.
    public static func checkpoints(in output: String) -> [String] {
        let folder = output + "/checkpoints"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
            .filter { $0.hasPrefix("checkpoint-") }.sorted()
        return names.map { folder + "/" + $0 }
    }

    static func save(_ model: SelfDistillation, output: String, iteration: Int, config: TrainingConfig, log: Log) throws {
        let folder = output + "/checkpoints/" + String(format: "checkpoint-%08d", iteration)
        try model.saveCheckpoint(to: folder, iteration: iteration)
        log.main("saved \(folder)")
        // Retention (rank 0): keep the newest max_to_keep, and every keep_every-th save for good.
        guard model.communicatorRank == 0 else { return }
        let period = config.checkpointing.period, keepEvery = config.checkpointing.keepEvery
        let all = checkpoints(in: output)
        for old in all.dropLast(config.checkpointing.maxToKeep) {
            let number = Int(old.suffix(8)) ?? 0
            if keepEvery > 0 && number % (period * keepEvery) == 0 { continue }
            try? FileManager.default.removeItem(atPath: old)
        }
    }

    /// The largest `elapsed_seconds` among the records of `metrics` before iteration `start` (0 if none).
    static func lastElapsedSeconds(metrics: String, before start: Int) -> Double {
        guard start > 0, let records = try? TrainingCurves.records(path: metrics) else { return 0 }
        return records.filter { (TrainingCurves.number($0["iteration"]) ?? 0) <= Double(start) }
            .compactMap { TrainingCurves.number($0["elapsed_seconds"]) }.max() ?? 0
    }

    static func append(_ record: [String: Any], to path: String) throws {
        var data = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
        data.append(0x0A)
        if let handle = FileHandle(forWritingAtPath: path) {
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: data)
        } else {
            try data.write(to: URL(fileURLWithPath: path))
        }
    }

    /// This process's peak resident set size in bytes.
    public static func peakRSSBytes() -> Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Int(usage.ru_maxrss) * 1024
    }
}

extension SelfDistillation {
    var communicatorRank: Int { communicator.rank }
}
