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
            checkpoint, its iteration, the classes and the scales. With --scales the view is also resized to \
            each scale times the global crop size (rounded to whole patches), and with more than one scale \
            `cls` is the multi-scale descriptor: the L2-normalised sum of the L2-normalised CLS tokens at \
            every scale (what `curate` and `calibrate-copies` compare copies with, at 1,1.5,2). Rank 0 \
            writes through a temporary file renamed at the end.
            """)
    @Option(help: "Checkpoint folder, or a training output folder (its newest complete checkpoint).")
    var checkpoint: String
    @Option(help: "Images to embed (ImageFolder or list file).") var data: String
    @Option(help: "Output HDF5 file.") var output: String
    @Flag(help: "Also write patch features.") var patch = false
    @Option(help: "Input sizes as multiples of the global crop size, comma-separated (several: multi-scale CLS).")
    var scales = "1"

    func validate() throws {
        guard let parsed = MultiScale.parse(scales) else {
            throw ValidationError("--scales \(scales) is not a comma-separated list of distinct positive numbers")
        }
        guard !patch || parsed.count == 1 else {
            throw ValidationError("--patch writes patch tokens at one input size: give a single --scales value")
        }
        try validateOutputFiles([("--output", output)])
    }

    func run() throws {
        try RankedRun.execute { comm, log in
            let dataset = try ImageDataset(path: data)
            let (model, folder, iteration) = try SelfDistillation.restored(from: checkpoint, communicator: comm)
            log.main(
                "embedding \(dataset.count) images of \(data) with the teacher of \(folder) (iteration \(iteration))")
            let parsedScales = MultiScale.parse(scales) ?? [1]
            try EmbeddingWriter.write(
                dataset, model: model, to: output, patches: patch, scales: parsedScales,
                attributes: ["checkpoint": folder], integerAttributes: ["iteration": Int64(iteration)],
                communicator: comm)
            let d = model.featureDimension, p = model.patchesPerImage(size: model.inputSize(scale: parsedScales[0]))
            log.main(
                "wrote \(output): cls [\(dataset.count), \(d)]"
                    + (patch ? ", patch [\(dataset.count), \(p), \(d)]" : ""))
        }
    }
}
