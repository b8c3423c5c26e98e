// `dinov2-fsdp pca`: the DINOv2 picture of a checkpoint teacher's patch features.

import ArgumentParser
import DinoCheckpoint
import DinoCore
import DinoData
import DinoEval
import DinoTraining
import Foundation

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
        try validateOutputFiles([("--output", output)])
        guard !images.isEmpty else { throw ValidationError("name at least one image file after the options") }
    }

    func run() throws {
        try RankedRun.execute { comm, log in
            let dataset = try ImageDataset(files: images)
            let (model, folder, iteration) = try SelfDistillation.restored(from: checkpoint, communicator: comm)
            guard let picture = try PatchPicture.draw(model: model, dataset: dataset, communicator: comm) else {
                return
            }
            let temporary = output + ".tmp-\(getpid())"
            try picture.png.write(to: URL(fileURLWithPath: temporary))
            try FileSafety.durableRename(temporary, to: output)
            log.main(
                String(
                    format: "wrote %@: %d image(s) of %dx%d with their pictures (teacher of %@, iteration %d); "
                        + "foreground %.0f%% of the patches", output, dataset.count, picture.size, picture.size, folder,
                    iteration, 100 * picture.foregroundShare))
        }
    }
}
