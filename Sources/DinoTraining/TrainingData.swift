// The data side of a training run, built from the config in one place for `train` and `bench
// step --data`: the official multi-crop pipeline and a rank's prefetching crop loader.

import DinoConfig
import DinoData
import Foundation

extension MultiCrop {
    /// The pipeline of `crops` (sizes, local crop count, scale ranges) and `augmentation` (colour).
    public init(_ crops: CropsConfig, _ augmentation: AugmentationConfig = AugmentationConfig()) {
        self.init(
            globalSize: crops.globalCropsSize, localSize: crops.localCropsSize, localCrops: crops.localCropsNumber,
            globalScale: crops.globalCropsScale[0]...crops.globalCropsScale[1],
            localScale: crops.localCropsScale[0]...crops.localCropsScale[1])
        (brightness, contrast, saturation, hue) = (
            augmentation.brightness, augmentation.contrast, augmentation.saturation, augmentation.hue
        )
        grayscaleProbability = augmentation.grayscaleProbability
        solarizeProbability = augmentation.solarizeProbability
    }
}

extension CropLoader {
    /// Rank `rank`'s loader over `dataset` for `config`, producing from `firstStep`: batches of
    /// train.batch_size_per_gpu images, train.num_workers decoding threads (at most the cores).
    public static func training(
        _ config: TrainingConfig, dataset: ImageDataset, rank: Int, worldSize: Int,
        firstStep: Int
    ) -> CropLoader {
        let seed = UInt64(config.train.seed)
        let sampler = DistributedSampler(
            datasetSize: dataset.count, globalBatch: config.train.batchSizePerRank * worldSize,
            seed: seed)
        let workers = max(1, min(config.train.workers, ProcessInfo.processInfo.activeProcessorCount))
        return CropLoader(
            dataset: dataset, sampler: sampler, pipeline: MultiCrop(config.crops, config.augmentation), rank: rank,
            worldSize: worldSize, seed: seed, firstStep: firstStep, workers: workers, prefetch: 2)
    }
}

extension CropBatchData {
    /// One picture of the batch as the model receives it (normalisation undone): a row per image,
    /// its two global crops then its local crops, left to right.
    public func picture(globalSize g: Int, localSize l: Int, localCrops n: Int) -> RGBImage {
        let b = indices.count
        func image(_ tensor: [Float], offset: Int, size: Int) -> RGBImage {
            var pixels = [UInt8](repeating: 0, count: size * size * 3)
            for c in 0..<3 {
                for i in 0..<(size * size) {
                    let value = (tensor[offset + c * size * size + i] * Augment.std[c] + Augment.mean[c]) * 255
                    pixels[i * 3 + c] = UInt8(clamping: Int(value.rounded()))
                }
            }
            return RGBImage(width: size, height: size, pixels: pixels)
        }
        let rows = (0..<b).map { i -> RGBImage in
            var row = image(globalCrops, offset: i * 3 * g * g, size: g)
            row = RGBImage.sideBySide(row, image(globalCrops, offset: (b + i) * 3 * g * g, size: g))
            for crop in 0..<n {
                row = RGBImage.sideBySide(row, image(localCrops, offset: (crop * b + i) * 3 * l * l, size: l))
            }
            return row
        }
        return RGBImage.stacked(rows)
    }
}
