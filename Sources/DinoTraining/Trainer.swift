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

import DinoCheckpoint
import DinoConfig
import DinoCore
import DinoData
import DinoEval
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
                try SyntheticImages.write(
                    root: root, classes: SyntheticImages.classNames.count,
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

    /// `checkMemory(config, threads)` runs (collectively) once the data is known to be usable and
    /// before the model is allocated: the place to refuse a run that cannot fit.
    public static func run(
        config loaded: TrainingConfig, output: String, data: String?, val: String? = nil,
        communicator comm: any Communicator, log: Log,
        checkMemory: (TrainingConfig, Int) throws -> Void = { _, _ in }
    ) throws -> TrainingOutcome {
        // A distillation run fixes its teacher's folder and sizes its heads from it here, before the
        // config is compared across ranks and written.
        let config = try loaded.resolved(worldSize: comm.worldSize).resolvingDistillation()
        // Every collective of the run watched: a rank that stops is named instead of hanging the others.
        let watchdog =
            config.train.collectiveTimeout > 0
            ? CollectiveWatchdog(
                rank: comm.rank, worldSize: comm.worldSize, folder: output + "/.heartbeats",
                timeout: config.train.collectiveTimeout) : nil
        defer { watchdog?.stop() }
        let comm: any Communicator = watchdog.map { WatchedCommunicator(comm, watchdog: $0) } ?? comm
        try checkSameArguments([ConfigLoader.yaml(config), output, data ?? "", val ?? ""], communicator: comm)
        let images = try openData(config: config, data: data, val: val, communicator: comm)
        let b = config.train.batchSizePerRank, globalBatch = b * comm.worldSize
        guard images.train.count >= globalBatch else {
            throw TrainingError.data(
                "\(images.source) holds \(images.train.count) images, fewer than one global "
                    + "batch of \(globalBatch) (train.batch_size_per_gpu \(b) x \(comm.worldSize) ranks); add "
                    + "images or lower the batch"
            )
        }
        // The model's workers (GEMM pieces, attention, element-wise loops) are as many as OpenBLAS was
        // given threads (Launch/mpirun.sh: cores / ranks, at least 1). From here OpenBLAS inside them
        // stays serial: its own idle threads would spin on the cores the workers need (ParallelGEMM).
        let threads = BLAS.threadCount
        BLAS.threadCount = 1
        try checkMemory(config, threads)
        let freshModel = {
            try SelfDistillation(config: config, communicator: comm, seed: UInt64(config.train.seed), threads: threads)
        }
        // Resuming comes before anything is written to the output folder, so a checkpoint of another
        // configuration is refused untouched.
        var (model, start) = try resume(freshModel: freshModel, output: output, communicator: comm, log: log)
        if start == 0, !config.train.resumeFrom.isEmpty, checkpoints(in: output).isEmpty {
            start = try startFrom(config.train.resumeFrom, model: model, log: log)
        }
        if let teacher = model.distillationTeacher {
            let a = teacher.architecture
            log.main(
                "distillation: frozen teacher \(teacher.source) (width \(a.embedDim), depth \(a.depth), "
                    + "patch \(a.patchSize)); no masks, no drop path, iBOT on every global-crop patch; "
                    + "evaluations and checkpoints' `teacher` are the student's spare EMA")
        }
        if let report = model.precisionReport {
            if report.isFallback { log.warning(report.text) } else { log.main(report.text) }
        }
        if model.checkpointsActivations {
            log.main(
                "activation checkpointing: the student's blocks are recomputed in backward "
                    + "(activation_checkpoint.mode \(config.activationCheckpoint.mode.rawValue))")
        }
        var written = 1
        if comm.rank == 0 {
            do {
                try FileManager.default.createDirectory(
                    atPath: output + "/checkpoints", withIntermediateDirectories: true)
                try ConfigLoader.write(config, to: output + "/config.yaml")
            } catch {
                log.error(
                    "cannot create the output folder \(output) (\(String(cString: strerror(errno)))); "
                        + "choose a writable --output")
                written = 0
            }
        }
        // Every rank stops together when rank 0 could not write.
        guard try comm.allReduce(Int64(written), op: .min) == 1 else {
            throw TrainingError.configuration("the output folder \(output) could not be created (see rank 0)")
        }
        watchdog?.arm()
        let total = config.endIteration
        if start >= total {
            log.main("nothing to do: \(output) already holds iteration \(start) of \(total)")
            return .finished(iteration: start)
        }

        let loader = CropLoader.training(
            config, dataset: images.train, rank: comm.rank, worldSize: comm.worldSize,
            firstStep: start)
        defer { loader.stop() }
        catchStopSignals()
        let metrics = output + "/metrics.jsonl"
        let recorder = comm.rank == 0 ? RunRecorder(output: output, start: start, log: log) : nil
        if comm.rank == 0 {
            try MetricsFile.setAsideRecords(after: start, of: metrics, log: log)
            try RunLaunch(
                worldSize: comm.worldSize, firstIteration: start, data: images.source, validation: images.valSource,
                arguments: CommandLine.arguments
            ).record(in: output)
        }
        log.main(
            "training \(config.student.arch) on \(comm.worldSize) rank(s), \(images.train.count) images, "
                + "global batch \(globalBatch), iterations \(start)..<\(total), output \(output)")

        // Wall time of this run (from here; a resumed run continues from the last record's value), for
        // learning curves against time.
        let clockStart = MonotonicClock.seconds() - lastElapsedSeconds(metrics: metrics, before: start)
        var skippedSoFar = lastSkippedTotal(metrics: metrics, before: start)
        func elapsed() -> Double { MonotonicClock.seconds() - clockStart }
        let period = config.evaluation.evalPeriodIterations
        /// The teacher's k-NN on the validation split, logged and recorded at `iteration`.
        func evaluate(at iteration: Int) throws -> (top1: Double, top5: Double)? {
            guard let val = images.val, period > 0 else { return nil }
            let result = try KNN.evaluate(model: model, train: images.train, val: val, communicator: comm)
            log.main(
                String(
                    format: "[%d/%d] k-NN (k 20): top-1 %.1f%%, top-5 %.1f%%", iteration, total, result.top1,
                    result.top5))
            var record = MetricsRecord(iteration: iteration)
            (record.knnTop1, record.knnTop5, record.elapsedSeconds) = (result.top1, result.top5, elapsed())
            try recorder?.append(record)
            return result
        }
        // The curve's first point: the initial teacher (= student) before any step.
        let initialKNN = start == 0 ? try evaluate(at: 0) : nil
        var window = ThroughputWindow()
        for iteration in start..<total {
            if try comm.allReduce(Int64(stopRequested), op: .max) > 0 {
                try save(model, output: output, iteration: iteration, config: config, log: log)
                log.main("stop requested: saved iteration \(iteration); run the same command to continue")
                if comm.rank == 0 { writeCurves(output: output, log: log) }
                try reportUnreadable(loader, dataset: images.train, output: output, communicator: comm, log: log)
                writeReport(
                    model, validation: images.val, source: images.valSource, output: output, iteration: iteration,
                    log: log)
                return .preempted(iteration: iteration)
            }
            let stepStart = MonotonicClock.seconds()
            let batch = try loader.batch(step: iteration)
            let masks = config.stepMasks(
                seed: UInt64(config.train.seed), iteration: iteration, globalImages: globalBatch,
                firstImage: comm.rank * b, count: b)
            let losses = try withBase(batch.globalCrops) { g in
                try withBase(batch.localCrops) { l in
                    try model.step(iteration: iteration, globalImages: g, localImages: l, masks: masks, images: b)
                }
            }
            window.seconds += MonotonicClock.seconds() - stepStart
            window.wait += loader.takeWaitSeconds()
            window.exposed += model.lastTiming.exposedCommunication
            window.steps += 1
            window.skipped += batch.skipped

            let done = iteration + 1
            if done % config.train.logEvery == 0 || done == total {
                var record = try trainingRecord(
                    model, iteration: iteration, losses: losses, window: &window,
                    globalBatch: globalBatch, communicator: comm)
                record.elapsedSeconds = elapsed()
                skippedSoFar += record.skippedImages ?? 0
                record.skippedImagesTotal = skippedSoFar
                try recorder?.append(record)
                log.main(
                    progressLine(record, total: total, secondsPerStep: window.slowestSeconds / Double(window.steps)))
                window = ThroughputWindow()
            }
            if done % Swift.max(period, 1) == 0, done < total { _ = try evaluate(at: done) }
            if done % config.checkpointing.period == 0 || done == total {
                try save(model, output: output, iteration: done, config: config, log: log)
            }
        }
        if let val = images.val {
            // k-NN of the teacher now and of the initialisation (measured before step 1, or a fresh
            // model of the same seed when this process resumed).
            let before =
                try initialKNN
                ?? KNN.evaluate(model: freshModel(), train: images.train, val: val, communicator: comm)
            let after = try KNN.evaluate(model: model, train: images.train, val: val, communicator: comm)
            log.main(
                String(
                    format: "k-NN (k 20) on %@: top-1 %.1f%% (at initialisation %.1f%%, gain %+.1f points), "
                        + "top-5 %.1f%%", images.valSource ?? "", after.top1, before.top1, after.top1 - before.top1,
                    after.top5))
            var record = MetricsRecord(iteration: total)
            (record.knnTop1Init, record.knnTop1, record.knnTop5) = (before.top1, after.top1, after.top5)
            (record.knnGain, record.elapsedSeconds) = (after.top1 - before.top1, elapsed())
            try recorder?.append(record)
        }
        if comm.rank == 0 { writeCurves(output: output, log: log) }
        try reportUnreadable(loader, dataset: images.train, output: output, communicator: comm, log: log)
        writeReport(
            model, validation: images.val, source: images.valSource, output: output, iteration: total, log: log)
        return .finished(iteration: total)
    }

    /// From now on SIGUSR1 and SIGTERM ask the run to save and stop at the next iteration boundary
    /// instead of killing the process. `train` calls it first thing: a scheduler's early signal can come
    /// while a rank is still starting (a requeued Slurm job gets it within its first second).
    public static func catchStopSignals() {
        signal(SIGUSR1) { _ in stopRequested = 1 }
        signal(SIGTERM) { _ in stopRequested = 1 }
    }

    /// Stops every rank when any was started with other `arguments` than rank 0 (an MPMD launch or a
    /// per-rank environment that changes the config): each rank would otherwise train something else.
    static func checkSameArguments(_ arguments: [String], communicator comm: any Communicator) throws {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a over the arguments, separated by a zero byte
        for byte in arguments.joined(separator: "\u{0}").utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        var all = [Int64](repeating: 0, count: comm.worldSize)
        try [Int64(bitPattern: hash)].withUnsafeBufferPointer { mine in
            try all.withUnsafeMutableBufferPointer { try comm.allGather(mine, into: $0) }
        }
        if let other = all.firstIndex(where: { $0 != all[0] }) {
            throw TrainingError.configuration(
                "rank \(other) was started with other arguments than rank 0 (its resolved "
                    + "config, --output, --data or --val differ); start every rank with the same command and "
                    + "environment"
            )
        }
    }

    /// The training and validation images: --data / --val, else the embedded dataset (generated once
    /// into the cache, its val split as validation) when train.dataset_path is `embedded`, else
    /// train.dataset_path.
    static func openData(
        config: TrainingConfig, data: String?, val: String?, communicator comm: any Communicator
    )
        throws -> (train: ImageDataset, source: String, val: ImageDataset?, valSource: String?)
    {
        var source = config.train.datasetPath, validation = val
        if let data {
            source = data
        } else if config.train.datasetPath == "embedded" {
            let root = try embeddedDataset(communicator: comm, size: 128)
            source = root + "/train"
            if validation == nil { validation = root + "/val" }
        }
        let valDataset = try validation.map { try ImageDataset(path: $0) }
        return (try ImageDataset(path: source), source, valDataset, validation)
    }

    /// The model resumed from the newest complete checkpoint in OUTPUT/checkpoints, and its iteration
    /// (a fresh model and 0 when there is none). Every rank must take the same checkpoint: one that
    /// fails on any rank (each checks the files it reads) is passed over by all.
    static func resume(
        freshModel: () throws -> SelfDistillation, output: String, communicator comm: any Communicator,
        log: Log
    ) throws -> (SelfDistillation, Int) {
        let model = try freshModel()
        var touched = false
        for folder in checkpoints(in: output).reversed() {
            var failure: CheckpointError?
            var start = 0
            do {
                touched = true
                start = try model.loadCheckpoint(from: folder)
            } catch let error as CheckpointError {
                if case .mismatch(let why) = error {
                    // Another configuration (the same on every rank): never continue over it, never overwrite it.
                    throw TrainingError.configuration(
                        "\(folder) was written by an incompatible configuration (\(why)); "
                            + "train into another --output, or use the configuration in \(output)/config.yaml")
                }
                failure = error
            }
            if let failure { Console.write("[rank \(comm.rank)] warning: passing over \(folder): \(failure)\n", to: 2) }
            if try comm.allReduce(Int64(failure == nil ? 0 : 1), op: .max) == 0 {
                log.main("resumed from \(folder) at iteration \(start)")
                return (model, start)
            }
        }
        // Every checkpoint failed somewhere, but some loads succeeded here: start from a clean initialisation.
        return (touched ? try freshModel() : model, 0)
    }

    /// Loads `path` (a checkpoint folder, or a run folder: its newest complete checkpoint) into `model`,
    /// position embeddings of another crop size resampled; returns the iteration to continue from.
    static func startFrom(_ path: String, model: SelfDistillation, log: Log) throws -> Int {
        let folder: String
        if FileManager.default.fileExists(atPath: path + "/manifest.json") {
            folder = path
        } else if let newest = checkpoints(in: path).last(where: {
            FileManager.default.fileExists(atPath: $0 + "/manifest.json")
        }) {
            folder = newest
        } else {
            throw TrainingError.configuration(
                "train.resume_from: \(path) is neither a checkpoint folder nor a training output folder with a "
                    + "complete checkpoint")
        }
        let saved = try ShardedCheckpoint.readManifest(folder)
        let theirs = try ConfigLoader.load(yaml: saved.config, source: folder + "/manifest.json")
        model.resamplesPositionsOnLoad = true
        defer { model.resamplesPositionsOnLoad = false }
        let start: Int
        do {
            start = try model.loadCheckpoint(from: folder)
        } catch CheckpointError.mismatch(let why) {
            throw TrainingError.configuration(
                "train.resume_from: \(folder) holds another model (\(why)); a phase may change the crop sizes, "
                    + "not the architecture or the heads")
        }
        let mine = model.config
        var change = ""
        if theirs.crops.globalCropsSize != mine.crops.globalCropsSize {
            change =
                "; global crops \(theirs.crops.globalCropsSize) -> \(mine.crops.globalCropsSize) px, position "
                + "embeddings resampled"
        }
        if theirs.totalIterations != mine.totalIterations {
            log.warning(
                "train.resume_from: \(folder) was trained with schedules over \(theirs.totalIterations) iterations, "
                    + "this run's span \(mine.totalIterations): the learning rate and the other schedules jump")
        }
        log.main("starting from \(folder) at iteration \(start)\(change)")
        return start
    }

    /// Step time, data wait and exposed communication of the steps since the last record, on this rank.
    struct ThroughputWindow {
        var seconds = 0.0, wait = 0.0, exposed = 0.0
        var steps = 0, skipped = 0
        /// The slowest rank's step seconds, set by `trainingRecord`.
        var slowestSeconds = 0.0
    }

    /// The record of the steps in `window` ending at `iteration`: losses averaged over ranks, the
    /// slowest rank's throughput, peak memory, schedules and the teacher's collapse diagnostics (collective).
    static func trainingRecord(
        _ model: SelfDistillation, iteration: Int, losses: StepLosses,
        window: inout ThroughputWindow, globalBatch: Int, communicator comm: any Communicator
    )
        throws -> MetricsRecord
    {
        let mean = try comm.allReduce(losses.terms, op: .sum).map { $0 / Double(comm.worldSize) }
        let slowest = try comm.allReduce([window.seconds, window.wait, window.exposed], op: .max)
        window.slowestSeconds = slowest[0]
        let s = model.schedules.values(at: iteration)
        let targets = try model.targetStatistics()
        let perSecond = Double(globalBatch * window.steps) / slowest[0]
        var r = MetricsRecord(iteration: iteration + 1)
        r.loss = mean.reduce(0, +)
        (r.dinoLocalCropsLoss, r.dinoGlobalCropsLoss, r.ibotLoss, r.koleoLoss) = (mean[0], mean[1], mean[2], mean[3])
        if model.config.copyDetection.lossWeight > 0 { r.copyLoss = mean[4] }
        (r.lr, r.wd, r.mom, r.teacherTemp) = (s.lr, s.weightDecay, s.momentum, s.teacherTemperature)
        (r.imagesPerSec, r.imagesPerSecPerRank) = (perSecond, perSecond / Double(comm.worldSize))
        (r.dataWaitFraction, r.commExposedFraction) = (slowest[1] / slowest[0], slowest[2] / slowest[0])
        var peaks = [Int64](repeating: 0, count: comm.worldSize)
        try [Int64(peakRSSBytes())].withUnsafeBufferPointer { mine in
            try peaks.withUnsafeMutableBufferPointer { try comm.allGather(mine, into: $0) }
        }
        r.maxRSSBytesByRank = peaks.map(Int.init)
        r.maxRSSBytes = r.maxRSSBytesByRank?.max()
        r.skippedImages = Int(try comm.allReduce(Int64(window.skipped), op: .sum))
        (r.teacherEntropy, r.teacherMeanEntropy) = (targets.meanEntropy, targets.entropyOfMean)
        r.teacherPrototypesInUse = targets.prototypesInUse
        (r.teacherCLSSpread, r.teacherHeadSpread) = (targets.clsSpread, targets.headSpread)
        return r
    }

    /// The progress line of a training record.
    static func progressLine(_ r: MetricsRecord, total: Int, secondsPerStep: Double) -> String {
        let remaining = Double(total - r.iteration) * secondsPerStep
        let copy = r.copyLoss.map { String(format: " copy %.4f", $0) } ?? ""
        let losses = String(
            format: "[%d/%d] loss %.4f (dino local %.4f global %.4f ibot %.4f koleo %.4f", r.iteration, total,
            r.loss ?? 0, r.dinoLocalCropsLoss ?? 0, r.dinoGlobalCropsLoss ?? 0, r.ibotLoss ?? 0, r.koleoLoss ?? 0)
        return losses + copy
            + String(
                format: ") lr %.2e teacher entropy %.2f / mean %.2f (%d prototypes, spread CLS %.3f head %.4f) "
                    + "%.2f img/s (%.2f per rank) ETA %.0f s",
                r.lr ?? 0, r.teacherEntropy ?? 0, r.teacherMeanEntropy ?? 0, r.teacherPrototypesInUse ?? 0,
                r.teacherCLSSpread ?? 0, r.teacherHeadSpread ?? 0, r.imagesPerSec ?? 0, r.imagesPerSecPerRank ?? 0,
                remaining)
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

    /// OUTPUT/report.html with the teacher's patch picture on a few validation images (collective: every
    /// rank runs its share of the teacher); a failure only warns.
    static func writeReport(
        _ model: SelfDistillation, validation: ImageDataset?, source: String?, output: String, iteration: Int,
        log: Log
    ) {
        do {
            let section = try RunReport.pictureSection(
                model: model, validation: validation, source: source, iteration: iteration)
            guard model.communicatorRank == 0, let section else { return }
            let path = try RunReport.write(output: output, picture: section)
            log.main("wrote \(path)")
        } catch {
            log.warning("could not write \(output)/report.html: \(error)")
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

    static func save(_ model: SelfDistillation, output: String, iteration: Int, config: TrainingConfig, log: Log) throws
    {
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

    /// Every rank's unreadable training images, gathered (collective): rank 0 logs how many and the
    /// first names, and writes them all to OUTPUT/unreadable-images.txt. Nothing when there were none.
    static func reportUnreadable(
        _ loader: CropLoader, dataset: ImageDataset, output: String, communicator comm: any Communicator, log: Log
    ) throws {
        let mine = loader.unreadableIndices.map(Int64.init)
        let most = Int(try comm.allReduce(Int64(mine.count), op: .max))
        guard most > 0 else { return }
        let padded = mine + [Int64](repeating: -1, count: most - mine.count)
        var all = [Int64](repeating: -1, count: most * comm.worldSize)
        try padded.withUnsafeBufferPointer { shard in
            try all.withUnsafeMutableBufferPointer { try comm.allGather(shard, into: $0) }
        }
        guard comm.rank == 0 else { return }
        let paths = Set(all.filter { $0 >= 0 }.map(Int.init)).sorted().map { dataset.samples[$0].path }
        let file = output + "/unreadable-images.txt"
        try? (paths.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let shown = paths.prefix(20).joined(separator: ", ")
        let more = paths.count > 20 ? ", and \(paths.count - 20) more" : ""
        log.warning(
            "\(paths.count) unreadable training image(s) were skipped (each replaced by the next readable one); "
                + "all listed in \(file): \(shown)\(more)")
    }

    /// The `skipped_images_total` of the last training record of `metrics` before iteration `start` (0 if none).
    static func lastSkippedTotal(metrics: String, before start: Int) -> Int {
        guard start > 0, let records = try? MetricsFile.read(metrics) else { return 0 }
        return records.filter { $0.iteration <= start && $0.isTraining }.last?.skippedImagesTotal ?? 0
    }

    /// The largest `elapsed_seconds` among the records of `metrics` before iteration `start` (0 if none).
    static func lastElapsedSeconds(metrics: String, before start: Int) -> Double {
        guard start > 0, let records = try? MetricsFile.read(metrics) else { return 0 }
        return records.filter { $0.iteration <= start }.compactMap(\.elapsedSeconds).max() ?? 0
    }

    /// This process's peak resident set size in bytes.
    public static func peakRSSBytes() -> Int { ResidentMemory.peakBytes() }
}

extension SelfDistillation {
    var communicatorRank: Int { communicator.rank }
}
