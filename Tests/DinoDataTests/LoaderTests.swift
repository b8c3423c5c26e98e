// The prefetching multi-crop loader: identical crops for any worker count and rank count (by
// image), exact restart at a step, unreadable files replaced deterministically and counted.

import DinoCore
import DinoData
import DinoTestSupport
import Foundation
import Testing

@Suite("crop loader", .serialized)
struct LoaderTests {
    let pipeline = MultiCrop(
        globalSize: 28, localSize: 14, localCrops: 2, globalScale: 0.32...1.0, localScale: 0.05...0.32)

    func dataset() throws -> (URL, ImageDataset) {
        let root = try TestPaths.temporaryDirectory()
        try SyntheticImages.write(root: root.path, classes: 4, trainPerClass: 3, valPerClass: 0, size: 40, seed: 2)
        return (root, try ImageDataset(path: root.path + "/train"))
    }

    /// The crops of image `i` (view or local crop `crop`) in a batch of `b` images.
    func crop(_ batch: CropBatchData, image i: Int, crop: Int, images b: Int) -> ArraySlice<Float> {
        if crop < 2 {
            let size = 3 * 28 * 28
            return batch.globalCrops[((crop * b + i) * size)..<((crop * b + i + 1) * size)]
        }
        let size = 3 * 14 * 14
        return batch.localCrops[(((crop - 2) * b + i) * size)..<(((crop - 2) * b + i + 1) * size)]
    }

    @Test("1 rank x 2 workers equals 2 ranks x 1 worker, image by image; restarting at a step gives the same batch")
    func determinism() throws {
        let (root, data) = try dataset()
        defer { try? FileManager.default.removeItem(at: root) }
        let one = CropLoader(
            dataset: data, sampler: DistributedSampler(datasetSize: data.count, globalBatch: 4, seed: 1),
            pipeline: pipeline, rank: 0, worldSize: 1, seed: 5, firstStep: 0, workers: 2)
        let halves = (0..<2).map {
            CropLoader(
                dataset: data, sampler: DistributedSampler(datasetSize: data.count, globalBatch: 4, seed: 1),
                pipeline: pipeline, rank: $0, worldSize: 2, seed: 5, firstStep: 0, workers: 1)
        }
        for step in 0..<4 {
            let whole = try one.batch(step: step)
            let parts = try halves.map { try $0.batch(step: step) }
            #expect(whole.indices == parts[0].indices + parts[1].indices)
            for i in 0..<4 {
                for c in 0..<4 {
                    #expect(
                        crop(whole, image: i, crop: c, images: 4)
                            == crop(parts[i / 2], image: i % 2, crop: c, images: 2))
                }
            }
        }
        let restarted = CropLoader(
            dataset: data, sampler: DistributedSampler(datasetSize: data.count, globalBatch: 4, seed: 1),
            pipeline: pipeline, rank: 0, worldSize: 1, seed: 5, firstStep: 3)
        let again = CropLoader(
            dataset: data, sampler: DistributedSampler(datasetSize: data.count, globalBatch: 4, seed: 1),
            pipeline: pipeline, rank: 0, worldSize: 1, seed: 5, firstStep: 0)
        for step in 0..<3 { _ = try again.batch(step: step) }
        let a = try restarted.batch(step: 3), b = try again.batch(step: 3)
        #expect(a.globalCrops == b.globalCrops && a.localCrops == b.localCrops && a.indices == b.indices)
        one.stop()
        halves.forEach { $0.stop() }
        restarted.stop()
        again.stop()
    }

    @Test("an unreadable file is replaced by the next image and counted")
    func corruptFiles() throws {
        let (root, _) = try dataset()
        defer { try? FileManager.default.removeItem(at: root) }
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: root.path + "/train/checker/00001.png"))
        let data = try ImageDataset(path: root.path + "/train")
        let loader = CropLoader(
            dataset: data, sampler: DistributedSampler(datasetSize: data.count, globalBatch: data.count, seed: 1),
            pipeline: pipeline, rank: 0, worldSize: 1, seed: 5, firstStep: 0)
        let batch = try loader.batch(step: 0)
        #expect(batch.skipped == 1)
        #expect(!batch.indices.contains(1))  // dataset index 1 is checker/00001.png
        #expect(batch.globalCrops.allSatisfy { $0.isFinite })
        loader.stop()
    }
}
