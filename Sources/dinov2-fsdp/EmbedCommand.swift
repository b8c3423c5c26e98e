// `dinov2-fsdp embed`: a checkpoint teacher's CLS (and patch) features of a folder of images, to HDF5.

import ArgumentParser
import DinoCheckpoint
import DinoCore
import DinoData
import DinoEval
import DinoTraining
import Foundation

struct EmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Write a checkpoint teacher's CLS (and patch) features of a folder of images to HDF5.",
        discussion: """
            Each image goes through the evaluation view (central 224/256 crop resized to the global crop \
            size). The file holds `cls` [N, D] (the final-norm CLS token, x_norm_clstoken), `labels` [N] \
            (class index, -1 without classes), `paths` [N] (the image files), with --patch `patch` [N, P, D] \
            (x_norm_patchtokens), in the \
            order of `dinov2-fsdp data inspect` (classes and file names sorted); attributes name the \
            checkpoint, its iteration and the classes. Rank 0 writes through a temporary file renamed at the end.
            """)
    @Option(help: "Checkpoint folder, or a training output folder (its newest complete checkpoint).")
    var checkpoint: String
    @Option(help: "Images to embed (ImageFolder or list file).") var data: String
    @Option(help: "Output HDF5 file.") var output: String
    @Flag(help: "Also write patch features.") var patch = false

    func validate() throws { try validateOutputFiles([("--output", output)]) }

    func run() throws {
        try RankedRun.execute { comm, log in
            let dataset = try ImageDataset(path: data)
            let (model, folder, iteration) = try SelfDistillation.restored(from: checkpoint, communicator: comm)
            log.main(
                "embedding \(dataset.count) images of \(data) with the teacher of \(folder) (iteration \(iteration))")
            try EmbeddingWriter.write(
                dataset, model: model, to: output, patches: patch, attributes: ["checkpoint": folder],
                integerAttributes: ["iteration": Int64(iteration)], communicator: comm)
            let d = model.featureDimension, p = model.patchesPerImage
            log.main(
                "wrote \(output): cls [\(dataset.count), \(d)]"
                    + (patch ? ", patch [\(dataset.count), \(p), \(d)]" : ""))
        }
    }
}
