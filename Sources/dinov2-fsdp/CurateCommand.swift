// `dinov2-fsdp curate`: DINOv2's data curation (section 3) from a pool of uncurated images and a curated
// set: features (a checkpoint's teacher, or embed files), deduplication, retrieval, the curated list.
// The stages themselves are DinoCuration's; this file turns the options into its settings and writes
// the features stage (each image set embedded once into OUTPUT/features/, reused by a rerun).

import ArgumentParser
import DinoCheckpoint
import DinoCore
import DinoCuration
import DinoData
import DinoEval
import DinoTraining
import Foundation

struct CurateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "curate",
        abstract: "Build a curated training set from an uncurated pool by image similarity (DINOv2 section 3).",
        discussion: """
            Stages, each saved in --output and read back by a rerun with the same inputs and settings \
            (a killed run continues): features (features/*.h5, written by the teacher of --checkpoint; \
            an .h5 file from `dinov2-fsdp embed` is used as it is; --copy-checkpoint, a model trained with \
            the copy-detection loss (Configs/copy-detection.yaml), embeds pool and evaluation images for the copy \
            rule into features/*-copy.h5 (and its `calibrate-copies` threshold is the default), or \
            --pool-copy-features and --evaluation-copy-features give such \
            features as files), index (index.h5, inverted lists, for \
            pools above 200000 images or with --index ivf), dedup (dedup.json: copy groups of the pool \
            keep one image each; pool images near-duplicate to an --evaluation image are removed with \
            their copies), retrieval (retrieval.json: each curated image's --per-query nearest pool \
            images, or, for curated sets below 10^6 images, k-means of the pool and --per-cluster images \
            of every cluster holding more than --minimum-queries curated images). Outputs: curated.txt \
            (a list file for `train --data`), report.json and contact-sheet.png. Images that cannot be \
            read are skipped and counted. Run under `Launch/mpirun.sh -n N`: every rank embeds and \
            searches its shard of the pool; 1 rank and N ranks write the same list.
            """)

    @Option(help: "Uncurated images (image folder or list file), or their features (.h5 from embed).")
    var pool: String
    @Option(help: "Curated images to retrieve for (image folder or list file), or their features (.h5).")
    var queries: String
    @Option(help: "Evaluation images whose near-duplicates leave the pool (folder, list file or .h5).")
    var evaluation: String?
    @Option(help: "Checkpoint folder, training output folder or exported backbone that embeds image sources.")
    var checkpoint: String?
    @Option(help: "Checkpoint, run folder or exported backbone of a copy-detection model: the copy rule's features.")
    var copyCheckpoint: String?
    @Option(help: "Features of the pool for the copy rule (.h5 of a copy-detection model, same images and order).")
    var poolCopyFeatures: String?
    @Option(help: "Features of the evaluation images for the copy rule (with --pool-copy-features).")
    var evaluationCopyFeatures: String?
    @Option(help: "Output folder (stage files, curated.txt, report.json, contact-sheet.png).")
    var output: String

    @Option(
        help: """
            Cosine similarity above which two pool images are copies (default: --copy-checkpoint's calibration \
            from `calibrate-copies` when it has one, else the paper's 0.6).
            """)
    var copyThreshold: Float?
    @Option(
        help: """
            Input sizes of --copy-checkpoint's features as multiples of its own, comma-separated (default: \
            its calibration's, else 1,1.5,2: the multi-scale descriptor).
            """)
    var copyScales: String?
    @Option(help: "Cosine similarity above which a pool image is a near-duplicate of an evaluation image.")
    var evaluationThreshold: Float = 0.45
    @Option(help: "Nearest neighbours per image tested for copies.")
    var neighbors = Deduplication.defaultNeighbors
    @Option(help: "Search: auto (exact up to 200000 pool images, else ivf), exact or ivf (inverted lists).")
    var index = "auto"
    @Option(help: "Inverted lists of the ivf index (default 4 sqrt(pool)).")
    var lists: Int?
    @Option(help: "Inverted lists visited per query.")
    var probes = 16
    @Option(help: "Retrieval: auto (clusters below 10^6 curated images, else nearest), nearest or clusters.")
    var retrieval = "auto"
    @Option(help: "Nearest retrieval: pool images per curated image.")
    var perQuery = 4
    @Option(help: "Cluster retrieval: k-means clusters of the pool (default pool / 100).")
    var clusters: Int?
    @Option(help: "Cluster retrieval: images taken from each selected cluster.")
    var perCluster = 10_000
    @Option(help: "Cluster retrieval: a cluster is selected when it holds more than this many curated images.")
    var minimumQueries = 3
    @Option(help: "Cluster retrieval: at most this many images in all.")
    var cap = 1_000_000
    @Option(help: "Seed of the k-means and of the cluster samples.")
    var seed: UInt64 = 0
    @Flag(help: "List the curated images too, before the retrieved ones.")
    var includeQueries = false
    @Option(help: "Stop after this stage (features, index, dedup, retrieval); a rerun continues.")
    var stopAfter: String?

    func validate() throws {
        guard CurationOptions.IndexChoice(rawValue: index) != nil else {
            throw ValidationError("--index must be auto, exact or ivf (got \(index))")
        }
        guard CurationOptions.RetrievalChoice(rawValue: retrieval) != nil else {
            throw ValidationError("--retrieval must be auto, nearest or clusters (got \(retrieval))")
        }
        if let stopAfter, CurationOptions.Stage(rawValue: stopAfter) == nil {
            throw ValidationError("--stop-after must be features, index, dedup or retrieval (got \(stopAfter))")
        }
        let sources = [pool, queries] + (evaluation.map { [$0] } ?? [])
        if checkpoint == nil, let images = sources.first(where: { !Self.isFeatureFile($0) }) {
            throw ValidationError("\(images) is an image source: pass --checkpoint to embed it, or an .h5 feature file")
        }
        do { try settings().validate() } catch { throw ValidationError("\(error)") }
        for (option, path) in [
            ("--pool-copy-features", poolCopyFeatures), ("--evaluation-copy-features", evaluationCopyFeatures),
        ]
        where path.map(Self.isFeatureFile) == false {
            throw ValidationError("\(option) takes an .h5 feature file (from `dinov2-fsdp embed`)")
        }
        if copyCheckpoint != nil, let file = ([pool] + (evaluation.map { [$0] } ?? [])).first(where: Self.isFeatureFile)
        {
            throw ValidationError(
                "--copy-checkpoint embeds images, but \(file) is a feature file: give the image folder or list file")
        }
        if let copyScales, copyCheckpoint == nil || MultiScale.parse(copyScales) == nil {
            throw ValidationError(
                "--copy-scales takes distinct positive numbers (\(copyScales)) and applies to --copy-checkpoint")
        }
        if copyCheckpoint != nil, poolCopyFeatures != nil || evaluationCopyFeatures != nil {
            throw ValidationError(
                "--copy-checkpoint embeds the copy rule's features itself: leave out --pool-copy-features and "
                    + "--evaluation-copy-features")
        }
    }

    static func isFeatureFile(_ path: String) -> Bool { path.hasSuffix(".h5") || path.hasSuffix(".hdf5") }

    func settings() -> CurationOptions {
        var options = CurationOptions(output: output)
        options.copyThreshold = copyThreshold ?? Float(CopyCalibration.paperThreshold)
        options.evaluationThreshold = evaluationThreshold
        options.neighbors = neighbors
        options.index = CurationOptions.IndexChoice(rawValue: index) ?? .automatic
        options.lists = lists
        options.probes = probes
        options.retrieval = CurationOptions.RetrievalChoice(rawValue: retrieval) ?? .automatic
        options.perQuery = perQuery
        options.clusters = clusters
        options.perCluster = perCluster
        options.minimumQueries = minimumQueries
        options.cap = cap
        options.seed = seed
        options.includeQueries = includeQueries
        options.stopAfter = stopAfter.flatMap(CurationOptions.Stage.init(rawValue:))
        return options
    }

    func run() throws {
        try RankedRun.execute { comm, log in
            var options = settings()
            try FileManager.default.createDirectory(atPath: output + "/features", withIntermediateDirectories: true)
            // The main model (retrieval) and the copy-detection model, each restored when first needed.
            var models: [String: (model: SelfDistillation, folder: String)] = [:]
            func restored(_ key: String) throws -> (model: SelfDistillation, folder: String) {
                if let model = models[key] { return model }
                let restored = try SelfDistillation.restored(from: key, communicator: comm)
                models[key] = (restored.model, restored.folder)
                return (restored.model, restored.folder)
            }
            /// The feature file of `source`: itself, or its embedding by `checkpoint` under OUTPUT/features/NAME.h5
            /// at `scales` (reused when it holds the same source, checkpoint and scales).
            func features(
                _ source: String, name: String, checkpoint: String? = checkpoint, scales: [Double] = [1]
            ) throws -> FeatureFile {
                if Self.isFeatureFile(source) { return try FeatureFile(path: source) }
                let dataset = try ImageDataset(path: source)
                let path = "\(output)/features/\(name).h5"
                let (model, checkpointFolder) = try restored(checkpoint ?? "")
                if let saved = try? HDF5File.open(path), (try? saved.stringAttribute("source")) == source,
                    (try? saved.stringAttribute("checkpoint")) == checkpointFolder,
                    (try? saved.stringAttribute(EmbeddingWriter.scalesAttribute)) == MultiScale.describe(scales),
                    (try? saved.shape(of: "cls"))?.first == dataset.count
                {
                    log.main("features: read \(path)")
                    return try FeatureFile(path: path)
                }
                let started = Date()
                let unreadable = try EmbeddingWriter.write(
                    dataset, model: model, to: path, patches: false, scales: scales,
                    attributes: ["source": source, "checkpoint": checkpointFolder], skipUnreadable: true,
                    communicator: comm)
                let seconds = Date().timeIntervalSince(started)
                log.main(
                    "features: \(dataset.count) images of \(source) embedded in \(String(format: "%.1f", seconds)) s "
                        + "(\(String(format: "%.1f", Double(dataset.count) / seconds / Double(comm.worldSize))) "
                        + "images/s per rank), \(unreadable) unreadable skipped -> \(path)")
                return try FeatureFile(path: path)
            }
            let poolFeatures = try features(pool, name: "pool")
            let queryFeatures = try features(queries, name: "queries")
            let evaluationFeatures = try evaluation.map { try features($0, name: "evaluation") }
            var copyPool = try poolCopyFeatures.map { try FeatureFile(path: $0) }
            var copyEvaluation = try evaluationCopyFeatures.map { try FeatureFile(path: $0) }
            if let copyCheckpoint {
                // The threshold and the scales it holds for come from the calibration unless given.
                let requested = copyScales.flatMap(MultiScale.parse)
                var scales = requested ?? MultiScale.copyScales
                if copyThreshold == nil {
                    let folder = try restored(copyCheckpoint).folder
                    if let calibration = try CopyCalibration.read(for: copyCheckpoint, resolvedFolder: folder) {
                        let file = CopyCalibration.file(for: copyCheckpoint)
                        if let requested, requested != calibration.measuredScales {
                            throw CurationError.input(
                                "\(file) holds the threshold for --copy-scales "
                                    + "\(MultiScale.describe(calibration.measuredScales)), not "
                                    + "\(MultiScale.describe(requested)): rerun `dinov2-fsdp calibrate-copies` with "
                                    + "these scales, or pass --copy-threshold")
                        }
                        scales = calibration.measuredScales
                        options.copyThreshold = Float(calibration.threshold)
                        log.main(
                            String(
                                format:
                                    "copy threshold %.4f at scales %@ from %@ (recall %.3f, precision %.3f on %d "
                                    + "planted copies)", calibration.threshold, MultiScale.describe(scales), file,
                                calibration.recall, calibration.precision, calibration.copyPairs))
                    } else {
                        log.main(
                            "copy threshold \(options.copyThreshold) (the paper's): \(copyCheckpoint) has no "
                                + "calibration; `dinov2-fsdp calibrate-copies` measures one for this model")
                    }
                }
                copyPool = try features(pool, name: "pool-copy", checkpoint: copyCheckpoint, scales: scales)
                copyEvaluation = try evaluation.map {
                    try features($0, name: "evaluation-copy", checkpoint: copyCheckpoint, scales: scales)
                }
            }
            if options.stopAfter == .features { return }
            let pipeline = try CurationPipeline(
                options: options, pool: poolFeatures, queries: queryFeatures, evaluation: evaluationFeatures,
                copyPool: copyPool, copyEvaluation: copyEvaluation, communicator: comm, log: { log.main($0) })
            log.main(
                "curating a pool of \(poolFeatures.count) images (\(poolFeatures.unreadable.count) unreadable) for "
                    + "\(queryFeatures.count) curated images on \(comm.worldSize) rank(s), "
                    + (pipeline.usesInvertedIndex ? "ivf index of \(pipeline.listCount) lists" : "exact search"))
            guard let report = try pipeline.run() else { return }
            log.main(
                "wrote \(pipeline.listFile): \(report.curatedImages) images; report \(pipeline.reportFile), "
                    + "contact sheet \(pipeline.contactSheetFile)")
        }
    }
}
