// Training steps on synthetic crops, for the sharding self-check and benchmarks: every image of the
// global batch is drawn from the counter-based stream by its global index, every rank takes its
// slice (batch_size_per_gpu images), masks are planned over the global batch, so the same global
// batch reaches the model whatever the rank count.

import DinoConfig
import DinoCore
import DinoModel

/// Runs `steps` optimisation steps of `model` on synthetic crops; returns the losses averaged over ranks.
/// `onStep` sees each step's rank-mean losses and this rank's time split.
public func runSyntheticSteps(
    _ model: SelfDistillation, steps: Int, seed: UInt64, communicator: any Communicator,
    firstIteration: Int = 0,
    onStep: ((Int, StepLosses, StepTiming) throws -> Void)? = nil
) throws -> [StepLosses] {
    let config = model.config
    let b = config.train.batchSizePerRank, world = communicator.worldSize
    let globalImages = b * world, first = communicator.rank * b
    let g = config.crops.globalCropsSize, l = config.crops.localCropsSize, nLocal = config.crops.localCropsNumber
    var losses: [StepLosses] = []
    for step in 0..<steps {
        let iteration = firstIteration + step
        // Crops of image i, view v: normal values from the stream keyed (seed, iteration, i, crop).
        func crops(count: Int, size: Int, cropBase: Int) -> [Float] {
            var values = [Float](repeating: 0, count: count * b * 3 * size * size)
            for crop in 0..<count {
                for image in 0..<b {
                    let stream = RandomStream(
                        seed: seed, purpose: .augmentation, UInt64(iteration),
                        UInt64(first + image), UInt64(cropBase + crop))
                    let row = (crop * b + image) * 3 * size * size
                    for i in 0..<(3 * size * size) { values[row + i] = Float(stream.normal(UInt64(i))) }
                }
            }
            return values
        }
        let global = crops(count: 2, size: g, cropBase: 0), local = crops(count: nLocal, size: l, cropBase: 2)
        let masks = config.stepMasks(
            seed: seed, iteration: iteration, globalImages: globalImages, firstImage: first, count: b)
        let rankLosses = try withBase(global) { gp in
            try withBase(local) { lp in
                try model.step(iteration: iteration, globalImages: gp, localImages: lp, masks: masks, images: b)
            }
        }
        let mean = try communicator.allReduce(rankLosses.terms, op: .sum).map { $0 / Double(world) }
        let stepLosses = StepLosses(terms: mean)
        losses.append(stepLosses)
        try onStep?(step, stepLosses, model.lastTiming)
    }
    return losses
}

/// The most masked tokens any rank's crops hold in synthetic steps `iterations` (what sizes the heads'
/// buffers of a `bench step` run): the masks are drawn from the counter-based stream, so this is exact.
public func syntheticMaskedTokens(
    _ config: TrainingConfig, seed: UInt64, iterations: Range<Int>, worldSize: Int
) -> Int {
    let b = config.train.batchSizePerRank
    var largest = 0
    for iteration in iterations {
        for rank in 0..<worldSize {
            let masks = config.stepMasks(
                seed: seed, iteration: iteration, globalImages: b * worldSize, firstImage: rank * b, count: b)
            largest = max(largest, masks.lazy.filter { $0 }.count)
        }
    }
    return largest
}
