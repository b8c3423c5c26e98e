// The DINOv2 picture of a teacher's patch features (`pca`, and the run report): every image through
// the evaluation view, the final-norm patch tokens of all images together reduced by PatchPCA
// (foreground by the first component, three foreground components as RGB), one row a image: the
// view, then its picture. Collective: every rank runs the teacher on its share; rank 0 draws.

import DinoCore
import DinoData
import DinoEval
import Foundation

/// A drawn patch-feature picture.
public struct PatchPicture: Sendable {
    /// The PNG file's bytes (rows of view | picture, `size` x 2 `size` pixels each).
    public var png: Data
    public var images: Int
    /// The view's side in pixels (the global crop size).
    public var size: Int
    /// The share of patches taken as foreground, in [0, 1].
    public var foregroundShare: Double

    /// The picture of `model`'s teacher on `dataset` (nil on ranks other than 0).
    public static func draw(
        model: SelfDistillation, dataset: ImageDataset, communicator comm: any Communicator
    ) throws -> PatchPicture? {
        let size = model.config.crops.globalCropsSize, d = model.architecture.embedDim
        let grid = size / model.config.student.patchSize, p = grid * grid
        var tokens = [Float](repeating: 0, count: dataset.count * p * d)
        try TeacherEmbedding.rounds(of: dataset, model: model, communicator: comm, patches: true) { round in
            round.forEachImage { index, row in
                for i in 0..<(p * d) { tokens[index * p * d + i] = round.patches[row * p * d + i] }
            }
        }
        guard comm.rank == 0 else { return nil }
        let (pictures, foreground) = PatchPCA.foregroundPictures(
            tokens: tokens, images: dataset.count, grid: grid, dimension: d, scale: model.config.student.patchSize)
        var rows: [RGBImage] = []
        for (sample, picture) in zip(dataset.samples, pictures) {
            let image = try ImageCodec.decode(Data(contentsOf: URL(fileURLWithPath: sample.path)))
            rows.append(RGBImage.sideBySide(KNN.evaluationView(image, size: size), picture))
        }
        let share = Double(foreground.filter { $0 }.count) / Double(max(foreground.count, 1))
        return PatchPicture(
            png: try ImageCodec.encodePNG(RGBImage.stacked(rows)), images: dataset.count, size: size,
            foregroundShare: share)
    }

    /// Up to `count` images of `dataset`, the first of each class in class order, then the next of each.
    public static func sample(of dataset: ImageDataset, count: Int) throws -> ImageDataset {
        var chosen: [String] = [], round = 0
        let byClass = Dictionary(grouping: dataset.samples, by: \.label).sorted { $0.key < $1.key }.map(\.value)
        while chosen.count < min(count, dataset.count) {
            for samples in byClass where round < samples.count && chosen.count < count {
                chosen.append(samples[round].path)
            }
            round += 1
        }
        return try ImageDataset(files: chosen)
    }
}
