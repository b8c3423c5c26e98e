// `dinov2-fsdp data synth|embedded|crops|inspect`: generated datasets and a look at the input pipeline.

import ArgumentParser
import DinoCheckpoint
import DinoCore
import DinoData
import DinoEval
import DinoTraining
import Foundation

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Generate the embedded dataset and inspect image folders.",
        subcommands: [Synth.self, Embedded.self, Inspect.self, Crops.self])

    struct Synth: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the embedded labelled dataset (train/ and val/ ImageFolders of drawn shapes and textures)."
        )
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
            let count = try SyntheticImages.write(
                root: output, classes: classes, trainPerClass: perClass,
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

        func validate() throws { try validateOutputFiles([("--output", output)]) }

        func run() throws {
            let loaded = try RankedRun.loadConfig(
                file: config, overrides: overrides + ["train.batch_size_per_gpu=\(images)"])
            try reportingErrors {
                let config = loaded.resolved(worldSize: 1)
                let dataset = try ImageDataset(path: path)
                let loader = CropLoader.training(config, dataset: dataset, rank: 0, worldSize: 1, firstStep: 0)
                defer { loader.stop() }
                let batch = try loader.batch(step: 0)
                let picture = batch.picture(
                    globalSize: config.crops.globalCropsSize, localSize: config.crops.localCropsSize,
                    localCrops: config.crops.localCropsNumber)
                try ImageCodec.encodePNG(picture).write(to: URL(fileURLWithPath: output), options: .atomic)
                Console.out(
                    "wrote \(output): \(picture.width) x \(picture.height), images "
                        + "\(batch.indices.map(String.init).joined(separator: " "))"
                )
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
                        Console.write("warning: skipping \(sample.path): \(fileProblem(error))\n", to: 2)
                    }
                }
                Console.out("\(path): \(dataset.count) images, \(dataset.classes.count) classes, \(bad) unreadable")
            }
        }
    }
}

/// Writes `record` as pretty, key-sorted JSON to `path` (atomically).
