// The data side of a training run, built from the config in one place for `train` and `bench
// step --data`: the official multi-crop pipeline and a rank's prefetching crop loader.

import DinoConfig
import DinoData
import Foundation

extension MultiCrop {
    /// The pipeline of `crops` (sizes, local crop count, scale ranges).
    public init(_ crops: CropsConfig) {
        self.init(globalSize: crops.globalCropsSize, localSize: crops.localCropsSize, localCrops: crops.localCropsNumber,
                  globalScale: crops.globalCropsScale[0]...crops.globalCropsScale[1],
                  localScale: crops.localCropsScale[0]...crops.localCropsScale[1])
    }
}

extension CropLoader {
    /// Rank `rank`'s loader over `dataset` for `config`, producing from `firstStep`: batches of
    /// train.batch_size_per_gpu images, train.num_workers decoding threads (at most the cores).
    public static func training(_ config: TrainingConfig, dataset: ImageDataset, rank: Int, worldSize: Int,
                                firstStep: Int) -> CropLoader {
        let seed = UInt64(config.train.seed)
        let sampler = DistributedSampler(datasetSize: dataset.count, globalBatch: config.train.batchSizePerRank * worldSize,
                                         seed: seed)
        let workers = max(1, min(config.train.workers, ProcessInfo.processInfo.activeProcessorCount))
        return CropLoader(dataset: dataset, sampler: sampler, pipeline: MultiCrop(config.crops), rank: rank,
                          worldSize: worldSize, seed: seed, firstStep: firstStep, workers: workers, prefetch: 2)
    }
}
