// Evaluation and inspection subcommands: eval knn/linear, embed, pca, checkpoint
// info/verify/export, data synth/inspect, plot.

import ArgumentParser
import DinoCheckpoint
import DinoCore
import DinoData
import DinoTraining
import Foundation

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a checkpoint on frozen features: weighted k-NN or a linear probe.",
        subcommands: [Knn.self, Linear.self])

    struct Knn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Weighted k-NN on normalised teacher CLS features of a checkpoint.",
            discussion: """
                As dinov2/eval/knn.py: every image's central 224/256 crop resized to the global crop size, \
                the teacher's normalised CLS token, L2-normalised; each validation image votes with its k most \
                similar training images, weighted by exp(similarity / 0.07). --train and --val must hold the \
                same class folders. Runs on any number of ranks (features are computed across them).
                """)
        @Option(help: "Checkpoint folder, or a training output folder (its newest complete checkpoint).")
        var checkpoint: String
        @Option(help: "Labelled training images (ImageFolder or list file).") var train: String
        @Option(help: "Labelled validation images (ImageFolder or list file).") var val: String
        @Option(help: "Comma-separated k values.") var k = "10,20,100,200"
        @Option(help: "Also write the results as JSON to this file.") var output: String?

        func validate() throws {
            let ks = k.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !ks.isEmpty, ks.allSatisfy({ ($0 ?? 0) >= 1 }) else {
                throw ValidationError("--k must be comma-separated positive integers, e.g. 10,20,100,200 (got \(k))")
            }
        }

        func run() throws {
            let ks = k.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            try RankedRun.execute { comm, log in
                let trainSet = try ImageDataset(path: train), valSet = try ImageDataset(path: val)
                let (model, folder, iteration) = try SelfDistillation.restored(from: checkpoint, communicator: comm)
                log.main("k-NN of the teacher of \(folder) (iteration \(iteration)): \(trainSet.count) training, "
                    + "\(valSet.count) validation images, \(trainSet.classes.count) classes, \(comm.worldSize) rank(s)")
                let results = try KNN.evaluate(model: model, train: trainSet, val: valSet, ks: ks, communicator: comm)
                guard comm.rank == 0 else { return }
                for result in results {
                    Console.out(String(format: "k %d: top-1 %.2f%%, top-5 %.2f%%", result.k, result.top1, result.top5))
                }
                if let output {
                    let record: [String: Any] = [
                        "checkpoint": folder, "iteration": iteration, "train": train, "val": val,
                        "results": results.map { ["k": $0.k, "top1": $0.top1, "top5": $0.top5] },
                    ]
                    try writeJSON(record, to: output)
                }
            }
        }
    }

    struct Linear: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Linear probe on a checkpoint teacher's frozen features, over a grid of learning rates.",
            discussion: """
                As dinov2/eval/linear.py with n_last_blocks 1: features are the final-norm CLS token, with \
                --avgpool followed by the mean patch token; one linear classifier per learning rate (the official grid \
                scaled by batch / 256), SGD momentum 0.9, no weight decay, cosine schedule; the best on --val is \
                reported. Unlike the official probe, features are computed once on the evaluation view \
                (no random crops per epoch). Ranks share the grid.
                """)
        @Option(help: "Checkpoint folder, or a training output folder (its newest complete checkpoint).")
        var checkpoint: String
        @Option(help: "Labelled training images (ImageFolder or list file).") var train: String
        @Option(help: "Labelled validation images (ImageFolder or list file).") var val: String
        @Option(help: "Epochs over the training features.") var epochs = 10
        @Option(help: "Batch size of the probe's SGD.") var batch = 128
        @Option(help: "Comma-separated base learning rates (default: the official grid).") var lrs: String?
        @Option(help: "Seed of the classifier initialisation and the sample order.") var seed = 0
        @Flag(help: "Append the average-pooled patch tokens to the CLS token.") var avgpool = false
        @Option(help: "Also write the results as JSON to this file.") var output: String?

        func grid() -> [Double]? {
            guard let lrs else { return LinearProbe.officialGrid }
            let values = lrs.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.allSatisfy({ ($0 ?? -1) >= 0 }) else { return nil }
            return values.compactMap { $0 }
        }

        func validate() throws {
            guard grid() != nil else { throw ValidationError("--lrs must be comma-separated non-negative numbers (got \(lrs ?? ""))") }
            guard epochs >= 1, batch >= 1 else { throw ValidationError("--epochs and --batch must be at least 1") }
        }

        func run() throws {
            let grid = grid() ?? LinearProbe.officialGrid
            try RankedRun.execute { comm, log in
                let trainSet = try ImageDataset(path: train), valSet = try ImageDataset(path: val)
                let labelled = (trainSet.samples + valSet.samples).allSatisfy { $0.label >= 0 }
                guard trainSet.classes == valSet.classes, labelled else {
                    throw TrainingError.unsupported("--train and --val need labels and the same classes (ImageFolders with "
                        + "the same class folders, or labelled list files)")
                }
                let (model, folder, iteration) = try SelfDistillation.restored(from: checkpoint, communicator: comm)
                log.main("linear probe of the teacher of \(folder) (iteration \(iteration)): \(trainSet.count) training, "
                    + "\(valSet.count) validation images, \(grid.count) learning rates over \(comm.worldSize) rank(s)")
                let trainFeatures = try LinearProbe.features(of: trainSet, model: model, avgpool: avgpool, communicator: comm)
                let valFeatures = try LinearProbe.features(of: valSet, model: model, avgpool: avgpool, communicator: comm)
                let trainLabels = trainSet.samples.map(\.label), valLabels = valSet.samples.map(\.label)
                let classes = max(trainLabels.max() ?? 0, valLabels.max() ?? 0) + 1
                let outcomes = try LinearProbe.evaluate(
                    trainFeatures: trainFeatures, trainLabels: trainLabels, valFeatures: valFeatures, valLabels: valLabels,
                    dimension: (avgpool ? 2 : 1) * model.architecture.embedDim, classes: classes, grid: grid, epochs: epochs,
                    batch: batch, seed: UInt64(seed), communicator: comm)
                guard comm.rank == 0, let best = outcomes.max(by: { $0.top1 < $1.top1 }) else { return }
                for outcome in outcomes {
                    Console.out(String(format: "lr %.2e: top-1 %.2f%%, top-5 %.2f%%, final train loss %.4f",
                                       outcome.learningRate, outcome.top1, outcome.top5, outcome.finalLoss))
                }
                Console.out(String(format: "best: lr %.2e, top-1 %.2f%%", best.learningRate, best.top1))
                if let output {
                    let record: [String: Any] = [
                        "checkpoint": folder, "iteration": iteration, "train": train, "val": val, "epochs": epochs, "avgpool": avgpool,
                        "batch": batch, "best_top1": best.top1, "best_lr": best.learningRate,
                        "results": outcomes.map { ["lr": $0.learningRate, "top1": $0.top1, "top5": $0.top5,
                                                   "final_loss": $0.finalLoss] },
                    ]
                    try writeJSON(record, to: output)
                }
            }
        }
    }
}

struct EmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Write a checkpoint teacher's CLS (and patch) features of a folder of images to HDF5.",
        discussion: """
            Each image goes through the evaluation view (central 224/256 crop resized to the global crop \
            size). The file holds `cls` [N, D] (the final-norm CLS token, x_norm_clstoken), `labels` [N] \
            (class index, -1 without classes), `paths` [N] (the image files), with --patch `patch` [N, P, D] (x_norm_patchtokens), in the \
            order of `dinov2-fsdp data inspect` (classes and file names sorted); attributes name the \
            checkpoint, its iteration and the classes. Rank 0 writes through a temporary file renamed at the end.
            """)
    @Option(help: "Checkpoint folder, or a training output folder (its newest complete checkpoint).")
    var checkpoint: String
    @Option(help: "Images to embed (ImageFolder or list file).") var data: String
    @Option(help: "Output HDF5 file.") var output: String
    @Flag(help: "Also write patch features.") var patch = false

    func run() throws {
        try RankedRun.execute { comm, log in
            let dataset = try ImageDataset(path: data)
            let (model, folder, iteration) = try SelfDistillation.restored(from: checkpoint, communicator: comm)
            let d = model.architecture.embedDim
            let p = model.architecture.patches(cropSize: model.config.crops.globalCropsSize)
            log.main("embedding \(dataset.count) images of \(data) with the teacher of \(folder) (iteration \(iteration))")
            let temporary = output + ".tmp-\(getpid())"
            var file: HDF5File?
            if comm.rank == 0 {
                let created = try HDF5File.create(temporary, truncate: true)
                try created.createDataset("cls", shape: [dataset.count, d])
                if patch { try created.createDataset("patch", shape: [dataset.count, p, d]) }
                file = created
            }
            try TeacherEmbedding.rounds(of: dataset, model: model, communicator: comm, patches: patch) { round in
                guard let file else { return }
                var offset = 0
                for range in round.ranges where !range.isEmpty {
                    try round.cls.withUnsafeBufferPointer { all in
                        let values = UnsafeBufferPointer(rebasing: all[(offset * d)..<((offset + range.count) * d)])
                        try file.write("cls", range: (range.lowerBound * d)..<(range.upperBound * d), values: values)
                    }
                    if patch {
                        let width = p * d
                        try round.patches.withUnsafeBufferPointer { all in
                            let values = UnsafeBufferPointer(rebasing: all[(offset * width)..<((offset + range.count) * width)])
                            try file.write("patch", range: (range.lowerBound * width)..<(range.upperBound * width), values: values)
                        }
                    }
                    offset += range.count
                }
            }
            if let writer = file {
                try writer.write("labels", integers: dataset.samples.map { Int64($0.label) }, shape: [dataset.count])
                try writer.write("paths", strings: dataset.samples.map(\.path))
                try writer.setAttribute("checkpoint", string: folder)
                try writer.setAttribute("iteration", int: Int64(iteration))
                try writer.setAttribute("classes", string: dataset.classes.joined(separator: "\n"))
                try writer.flush()
            }
            file = nil  // closes the file before it is renamed
            if comm.rank == 0 {
                try SelfDistillation.durableRename(temporary, to: output)
                log.main("wrote \(output): cls [\(dataset.count), \(d)]" + (patch ? ", patch [\(dataset.count), \(p), \(d)]" : ""))
            }
            try comm.barrier()
        }
    }
}

struct PCACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pca",
        abstract: "The DINOv2 picture of a checkpoint teacher's patch features, beside each input image.",
        discussion: """
            Each image goes through the evaluation view (central 224/256 crop resized to the global crop \
            size). Over the final-norm patch tokens of all the images together, the first principal \
            component thresholded at its mean separates foreground from background (the smaller side is \
            the foreground); three components fitted on the foreground are mapped to RGB, the background \
            is black. --output is one PNG with a row per image: the view, then its picture.
            """)
    @Option(help: "Checkpoint folder, or a training output folder (its newest complete checkpoint).")
    var checkpoint: String
    @Option(help: "Output PNG file.") var output: String
    @Argument(help: "Image files (JPEG or PNG).") var images: [String]

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("name at least one image file after the options") }
    }

    func run() throws {
        try RankedRun.execute { comm, log in
            let dataset = try ImageDataset(files: images)
            let (model, folder, iteration) = try SelfDistillation.restored(from: checkpoint, communicator: comm)
            let size = model.config.crops.globalCropsSize, d = model.architecture.embedDim
            let grid = size / model.config.student.patchSize, p = grid * grid
            var tokens = [Float](repeating: 0, count: dataset.count * p * d)
            try TeacherEmbedding.rounds(of: dataset, model: model, communicator: comm, patches: true) { round in
                round.forEachImage { index, row in
                    for i in 0..<(p * d) { tokens[index * p * d + i] = round.patches[row * p * d + i] }
                }
            }
            guard comm.rank == 0 else { return }
            let (pictures, foreground) = PatchPCA.foregroundPictures(
                tokens: tokens, images: dataset.count, grid: grid, dimension: d, scale: model.config.student.patchSize)
            var rows: [RGBImage] = []
            for (sample, picture) in zip(dataset.samples, pictures) {
                let image = try ImageCodec.decode(Data(contentsOf: URL(fileURLWithPath: sample.path)))
                rows.append(RGBImage.sideBySide(KNN.evaluationView(image, size: size), picture))
            }
            let temporary = output + ".tmp-\(getpid())"
            try ImageCodec.encodePNG(RGBImage.stacked(rows)).write(to: URL(fileURLWithPath: temporary))
            try SelfDistillation.durableRename(temporary, to: output)
            let share = 100 * Double(foreground.filter { $0 }.count) / Double(foreground.count)
            log.main(String(format: "wrote %@: %d image(s) of %dx%d with their pictures (teacher of %@, iteration %d); "
                + "foreground %.0f%% of the patches", output, dataset.count, size, size, folder, iteration, share))
        }
    }
}

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Inspect, verify and export sharded HDF5 checkpoints.",
        subcommands: [Info.self, Verify.self, Export.self])

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Iteration, ranks, parameter counts, bytes.")
        @Argument(help: "Checkpoint folder (holding manifest.json).") var path: String
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            try reportingErrors {
                let manifest = try SelfDistillation.readManifest(path)
                let counts = manifest.parts.map { part in (part.name, part.tensors.reduce(0) { $0 + $1.shape.reduce(1, *) }) }
                let bytes = manifest.ranks.reduce(0) { $0 + $1.bytes }
                if json {
                    let summary: [String: Any] = [
                        "iteration": manifest.iteration, "world_size": manifest.worldSize, "strategy": manifest.strategy,
                        "optimizer_steps": manifest.optimizerSteps, "bytes": bytes,
                        "parameters": Dictionary(uniqueKeysWithValues: counts),
                    ]
                    let data = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
                    Console.out(String(decoding: data, as: UTF8.self))
                } else {
                    Console.out("""
                        checkpoint \(path)
                          iteration \(manifest.iteration), optimizer steps \(manifest.optimizerSteps)
                          \(manifest.worldSize) rank file(s), \(manifest.strategy) over \(manifest.shards) shard(s), \(bytes) bytes
                        \(counts.map { "  \($0.0): \($0.1) parameters" }.joined(separator: "\n"))
                        """)
                }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check completeness and checksums, naming any bad file.")
        @Argument(help: "Checkpoint folder (holding manifest.json).") var path: String

        func run() throws {
            try reportingErrors {
                let manifest = try SelfDistillation.verifyCheckpoint(path)
                Console.out("ok: \(path), iteration \(manifest.iteration), \(manifest.ranks.count) rank file(s) verified")
            }
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export the backbone under the official state-dict names and PyTorch shapes to one HDF5 file.",
            discussion: """
                Every tensor of the teacher (default) or student backbone becomes one dataset named as in \
                the official hub checkpoints (cls_token, pos_embed, register_tokens, mask_token, \
                patch_embed.proj.*, blocks.i.*, norm.*); see the README for loading it into PyTorch.
                """)
        @Argument(help: "Checkpoint folder (holding manifest.json).") var path: String
        @Option(help: "Output HDF5 file (written through a temporary file).") var output: String
        @Option(help: "teacher or student.") var which = "teacher"

        func run() throws {
            try reportingErrors {
                let count = try CheckpointExport.export(checkpoint: path, to: output, which: which)
                Console.out("wrote \(output): \(count) tensors of the \(which) backbone")
            }
        }
    }
}

struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw a training run's curves (losses, teacher entropy, lr, throughput, k-NN) as SVG.",
        discussion: "Reads OUTPUT/metrics.jsonl; `train` also writes OUTPUT/metrics.svg when it ends.")
    @Argument(help: "A training output folder (holding metrics.jsonl).") var folder: String
    @Option(help: "The picture to write (default: FOLDER/metrics.svg).") var output: String?

    func run() throws {
        try reportingErrors {
            let file = output ?? folder + "/metrics.svg"
            try TrainingCurves.write(output: folder, to: file)
            Console.out("wrote \(file)")
        }
    }
}

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Generate the embedded dataset and inspect image folders.",
        subcommands: [Synth.self, Embedded.self, Inspect.self, Crops.self])

    struct Synth: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the embedded labelled dataset (train/ and val/ ImageFolders of drawn shapes and textures).")
        @Option(help: "Output folder.") var output: String
        @Option(help: "Number of classes (1 to 8).") var classes = 8
        @Option(help: "Training images per class.") var perClass = 64
        @Option(help: "Validation images per class.") var valPerClass = 16
        @Option(help: "Image side in pixels.") var size = 128
        @Option(help: "Seed of the drawing.") var seed = 0
        @Flag(help: "Write JPEG instead of PNG.") var jpeg = false

        func validate() throws {
            guard (1...8).contains(classes), perClass >= 1, valPerClass >= 0, size >= 16 else {
                throw ValidationError("need 1 <= --classes <= 8, --per-class >= 1, --val-per-class >= 0, --size >= 16")
            }
        }

        func run() throws {
            let count = try SyntheticImages.write(root: output, classes: classes, trainPerClass: perClass,
                                                  valPerClass: valPerClass, size: size, seed: UInt64(seed), jpeg: jpeg)
            Console.out("wrote \(count) images to \(output)/train and \(output)/val")
        }
    }

    struct Embedded: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate the embedded dataset into its cache folder if needed and print that folder.",
            discussion: """
                The folder `train` uses when train.dataset_path is "embedded" ($DINO_CACHE or \
                ~/.cache/dinov2-fsdp, then embedded-vVERSION-SIZEpx), with train/ and val/ inside.
                """)
        @Option(help: "Image side in pixels.") var size = 128

        func run() throws {
            try RankedRun.execute { comm, log in
                let root = try Trainer.embeddedDataset(communicator: comm, size: size)
                if comm.rank == 0 { Console.out(root) }
            }
        }
    }

    struct Crops: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the multi-crop views of the first training batch, as the model receives them, to a PNG.",
            discussion: """
                A row per image: the two global crops, then the local crops, with every augmentation of the \
                config (sizes, scales, flip, colour jitter, grayscale, blur, solarisation) and the \
                normalisation undone, e.g. `dinov2-fsdp data crops IMAGES --output crops.png --config \
                Configs/quickstart.yaml`. The crops are those of iteration 0 on rank 0 of a one-rank run.
                """)
        @Argument(help: "ImageFolder root or list file.") var path: String
        @Option(help: "The PNG to write.") var output: String
        @Option(help: "Images (rows) to draw.") var images = 8
        @Option(help: "YAML file layered on the official defaults.") var config: String?
        @Argument(help: "Overrides as dotted section.key=value.") var overrides: [String] = []

        func run() throws {
            let loaded = try RankedRun.loadConfig(file: config, overrides: overrides + ["train.batch_size_per_gpu=\(images)"])
            try reportingErrors {
                let config = loaded.resolved(worldSize: 1)
                let dataset = try ImageDataset(path: path)
                let loader = CropLoader.training(config, dataset: dataset, rank: 0, worldSize: 1, firstStep: 0)
                defer { loader.stop() }
                let batch = try loader.batch(step: 0)
                let picture = batch.picture(globalSize: config.crops.globalCropsSize, localSize: config.crops.localCropsSize,
                                            localCrops: config.crops.localCropsNumber)
                try ImageCodec.encodePNG(picture).write(to: URL(fileURLWithPath: output), options: .atomic)
                Console.out("wrote \(output): \(picture.width) x \(picture.height), images \(batch.indices.map(String.init).joined(separator: " "))")
            }
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Count the classes and images of an ImageFolder or list file and decode every image.")
        @Argument(help: "ImageFolder root or list file.") var path: String

        func run() throws {
            try reportingErrors {
                let dataset = try ImageDataset(path: path)
                var bad = 0
                for sample in dataset.samples {
                    do {
                        _ = try ImageCodec.decode(Data(contentsOf: URL(fileURLWithPath: sample.path)))
                    } catch {
                        bad += 1
                        Console.write("warning: skipping \(sample.path): \(error)\n", to: 2)
                    }
                }
                Console.out("\(path): \(dataset.count) images, \(dataset.classes.count) classes, \(bad) unreadable")
            }
        }
    }
}

/// Writes `record` as pretty, key-sorted JSON to `path` (atomically).
private func writeJSON(_ record: [String: Any], to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: record, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: URL(fileURLWithPath: path), options: .atomic)
}

/// Runs a single-process tool `body`; an error becomes one `error:` line and exit status 1.
private func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch {
        Console.write("error: \(error)\n", to: 2)
        throw ExitCode.failure
    }
}
