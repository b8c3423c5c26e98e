// `dinov2-fsdp calibrate-copies`: measures the copy rule's threshold for a copy-detection model on copies
// planted among the user's images (DinoCuration's PlantedCopies and CopyCalibration) and writes it beside
// the checkpoint, where `curate --copy-checkpoint` finds it.

import ArgumentParser
import DinoCore
import DinoCuration
import DinoData
import DinoEval
import DinoTraining
import Foundation

struct CalibrateCopiesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate-copies",
        abstract: "Measure a copy-detection model's copy threshold on copies planted among your images.",
        discussion: """
            Takes --count images of --images (evenly spread over it; the central square of each), plants a \
            copy of every --every-th (in turn an exact copy, a JPEG re-encoding at quality 70, a crop of 85 % \
            of the area resized back, a brightness x1.2 / saturation x0.7 colour shift), embeds them with \
            --checkpoint's teacher through the evaluation view at --scales times its input size (the \
            multi-scale descriptor, as `embed --scales`; curate's copy features use the same), and picks the \
            cosine threshold at which the copy pairs are told from all other pairs best (the largest \
            min(recall, precision), in the middle of its gap). A threshold belongs to a model and its scales \
            (the paper's 0.6 is for SSCD): `curate --copy-checkpoint` uses this one, at these scales, by \
            default. Use images the pool to curate is like, but not the \
            pool's own (its duplicates would count as errors); the precision measured holds for pools of \
            about --count images with a copy per --every: bigger pools have more pairs to confuse. Writes \
            copy-calibration.json in the checkpoint or run folder (an exported file: FILE.copy-calibration.json).
            """)

    @Option(help: "Checkpoint folder, run folder or exported backbone of the copy-detection model.")
    var checkpoint: String
    @Option(help: "Images to plant copies among (image folder or list file), held out from the pool to curate.")
    var images: String
    @Option(help: "Images taken from --images (all when it holds fewer).")
    var count = 400
    @Option(help: "A copy is planted for every this many images.")
    var every = 10
    @Option(help: "Seed of the crop copies' places.")
    var seed: UInt64 = 0
    @Option(help: "Output JSON file (default: copy-calibration.json beside the checkpoint).")
    var output: String?
    @Option(help: "Keep the planted images and their list file (pool.txt) in this folder (default: removed).")
    var keepImages: String?
    @Option(help: "Input sizes of the copy features as multiples of the model's, comma-separated.")
    var scales = MultiScale.describe(MultiScale.copyScales)

    func validate() throws {
        guard count >= 2 else { throw ValidationError("--count must be at least 2") }
        guard every >= 1 else { throw ValidationError("--every must be at least 1") }
        guard count / every >= 1 else { throw ValidationError("--count \(count) with --every \(every) plants no copy") }
        guard MultiScale.parse(scales) != nil else {
            throw ValidationError("--scales \(scales) is not a comma-separated list of distinct positive numbers")
        }
        try validateOutputFiles([("--output", output)])
    }

    var outputFile: String { output ?? CopyCalibration.file(for: checkpoint) }

    func run() throws {
        try RankedRun.execute { comm, log in
            let dataset = try ImageDataset(path: images)
            let (model, checkpointFolder, iteration) = try SelfDistillation.restored(
                from: checkpoint, communicator: comm)
            if let problem = outputFileProblem(outputFile) { throw OutputError(description: problem) }
            let taken = min(count, dataset.count)
            let chosen = (0..<taken).map { dataset.samples[$0 * dataset.count / taken] }
            let folder = keepImages ?? outputFile + ".images"
            // Rank 0 plants the pool in a shared folder (beside the output, like checkpoints); the others
            // learn how many sources could be read, which fixes the copies' rows.
            var counts: [Int64] = [0, 0]
            // Gone on every exit; on success after the features' last gather, when every rank has read its images.
            defer { if comm.rank == 0, keepImages == nil { try? FileManager.default.removeItem(atPath: folder) } }
            if comm.rank == 0 {
                var sources: [RGBImage] = [], names: [String] = []
                for sample in chosen {
                    guard let data = FileManager.default.contents(atPath: sample.path),
                        let image = try? ImageCodec.decode(data)
                    else { continue }
                    sources.append(image)
                    names.append(String(format: "image-%05d", names.count))
                }
                guard sources.count >= max(2, every) else {
                    throw ValidationError(
                        "\(images): \(sources.count) of \(chosen.count) images could be read, too few to plant a "
                            + "copy per --every \(every); give more readable images")
                }
                try PlantedCopies.write(sources, names: names, to: folder, every: every, seed: seed)
                counts = [Int64(sources.count), Int64(chosen.count - sources.count)]
            }
            counts = try comm.allReduce(counts, op: .sum)
            let sourceCount = Int(counts[0])
            let copies = stride(from: 0, to: sourceCount, by: every).enumerated().map {
                (source: $1, copy: sourceCount + $0)
            }
            let planted = try ImageDataset(path: folder + "/pool.txt")
            log.main(
                "calibrating \(checkpointFolder) (iteration \(iteration)) on \(sourceCount) images of \(images) "
                    + "with \(copies.count) planted copies")
            let parsedScales = MultiScale.parse(scales) ?? MultiScale.copyScales
            let features = try KNN.features(of: planted, model: model, communicator: comm, scales: parsedScales)
            let pairs = CopyCalibration.pairs(features: features, dimension: model.featureDimension, copies: copies)
            guard let best = CopyCalibration.bestThreshold(pairs), best.threshold > 0, best.threshold <= 1 else {
                throw ValidationError(
                    "\(checkpoint) does not tell the planted copies from other images at any threshold in (0, 1]; "
                        + "is it a copy-detection model (Configs/copy-detection.yaml)?")
            }
            var lowest: [String: Double] = [:]
            for (j, pair) in copies.enumerated() {
                let similarity = CopyCalibration.similarity(
                    features, dimension: model.featureDimension, pair.source, pair.copy)
                let kind = "\(PlantedCopies.Kind.allCases[j % PlantedCopies.Kind.allCases.count])"
                lowest[kind] = min(lowest[kind] ?? 1, similarity)
            }
            let paper = CopyCalibration.rates(pairs, above: CopyCalibration.paperThreshold)
            let calibration = CopyCalibration(
                threshold: best.threshold, recall: best.recall, precision: best.precision,
                checkpoint: CopyCalibration.absolutePath(checkpointFolder), iteration: iteration,
                images: CopyCalibration.absolutePath(images), sourceImages: sourceCount,
                unreadableImages: Int(counts[1]), copyPairs: copies.count, otherPairs: pairs.count - copies.count,
                lowestCopySimilarity: lowest,
                highestOtherSimilarity: pairs.filter { !$0.isCopy }.map(\.similarity).max() ?? -1,
                recallAtPaperThreshold: paper.recall, precisionAtPaperThreshold: paper.precision,
                scales: parsedScales)
            if comm.rank == 0 {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try writeOutput(encoder.encode(calibration), to: outputFile)
            }
            log.main(
                String(
                    format:
                        "copy threshold %.4f: recall %.3f, precision %.3f on %d planted copies (at 0.6: %.3f / %.3f)"
                        + " -> %@", best.threshold, best.recall, best.precision, copies.count, paper.recall,
                    paper.precision, outputFile))
        }
    }
}
