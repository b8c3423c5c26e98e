// What one training step works on, and where its time goes:
//   StepCrops  the rank's crops: B images, 2B global crops [2B, 3, S, S] with masks [2B, N], n_local B
//              local crops; the masked tokens (crop, patch) in crop order and each token's iBOT
//              weight 1 / m_crop; the heads' prototype counts
//   HeadRows   the rows the heads read out of a backbone's packed output [tokens, D]: the CLS token of
//              every crop of the given batches (in batch, then crop order), then the masked patch
//              tokens of the global crops; gather copies them into [rows, D], scatterAdd adds a
//              [rows, D] gradient back into [tokens, D] (the pair is each other's transpose)
//   StepClock  the step's time split (StepTiming): phases measured by key path, communication read
//              from the stores and the timed communicator once at the end

import DinoConfig
import DinoCore
import DinoKernels
import DinoModel

extension TrainingConfig {
    /// The masks of one rank's global crops [2 count, N] at `iteration` (images firstImage ..< firstImage +
    /// count of a global batch of `globalImages`): the iBOT plan drawn over the global batch, or in
    /// distillation every patch (no masking; the iBOT loss covers every patch of the global crops).
    public func stepMasks(seed: UInt64, iteration: Int, globalImages: Int, firstImage: Int, count: Int) -> [Bool] {
        let grid = crops.globalCropsSize / student.patchSize
        if distillation.enabled { return [Bool](repeating: true, count: 2 * count * grid * grid) }
        return MaskPlan(
            seed: seed, iteration: UInt64(iteration), globalImages: globalImages, grid: grid,
            probability: ibot.maskSampleProbability, ratioRange: ibot.maskRatioMinMax
        ).masks(firstImage: firstImage, count: count)
    }
}

/// The layout of one rank's crops in a step.
struct StepCrops {
    let images: Int
    let localCrops: Int
    let globalSize: Int
    let localSize: Int
    /// Token index of the first patch (after CLS and registers).
    let firstPatch: Int
    let masks: [Bool]
    let maskedTokens: [(crop: Int, patch: Int)]
    /// 1 / (masked tokens of the token's crop), per masked token.
    let tokenWeights: [Double]
    let dinoPrototypes: Int
    let ibotPrototypes: Int

    init(config: TrainingConfig, architecture: ViTArchitecture, images b: Int, masks: [Bool]) {
        images = b
        localCrops = config.crops.localCropsNumber
        globalSize = config.crops.globalCropsSize
        localSize = config.crops.localCropsSize
        firstPatch = 1 + architecture.registers
        let patches = architecture.patches(cropSize: globalSize)
        precondition(
            masks.count == 2 * b * patches, "masks: \(masks.count) values for \(2 * b) crops of \(patches) patches")
        self.masks = masks
        var tokens: [(crop: Int, patch: Int)] = []
        var weights: [Double] = []
        for crop in 0..<(2 * b) {
            let count = (0..<patches).filter { masks[crop * patches + $0] }.count
            for patch in 0..<patches where masks[crop * patches + patch] {
                tokens.append((crop, patch))
                weights.append(1 / Double(Swift.max(count, 1)))
            }
        }
        maskedTokens = tokens
        tokenWeights = weights
        dinoPrototypes = config.dino.headPrototypes
        ibotPrototypes = config.ibot.separateHead ? config.ibot.headPrototypes : config.dino.headPrototypes
    }
}

/// The rows of a backbone's packed output that feed the heads, with their gather / scatter-add pair.
/// One instance per use is kept with the step's buffers and refilled every step (no allocation once
/// its capacity has grown to the largest step).
final class HeadRows {
    /// Row of the packed token matrix behind each head row.
    private(set) var tokenRows: [Int] = []
    var count: Int { tokenRows.count }

    /// Refills with the CLS token of every crop of `batches`, then the masked tokens of the crops of `global`.
    func set(
        cls batches: some Collection<BatchRows>, masked: [(crop: Int, patch: Int)], of global: BatchRows,
        firstPatch: Int
    ) {
        tokenRows.removeAll(keepingCapacity: true)
        for batch in batches {
            for crop in 0..<batch.count { tokenRows.append(batch.row(crop: crop, token: 0)) }
        }
        for token in masked { tokenRows.append(global.row(crop: token.crop, token: firstPatch + token.patch)) }
    }

    /// out[i] = tokens[tokenRows[i]], rows of `d` channels.
    func gather(_ tokens: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, channels d: Int) {
        for (i, row) in tokenRows.enumerated() { (out + i * d).update(from: tokens + row * d, count: d) }
    }

    /// dTokens[tokenRows[i]] += dRows[i]: the gradient of `gather`.
    func scatterAdd(_ dRows: UnsafePointer<Float>, into dTokens: UnsafeMutablePointer<Float>, channels d: Int) {
        for (i, row) in tokenRows.enumerated() { Float.add(dTokens + row * d, dRows + i * d, d) }
    }
}

/// Times one step: started when made (resetting the communication counters), phases measured by
/// `measure`, communication collected by `finish`.
struct StepClock {
    private(set) var timing = StepTiming()
    private let start = MonotonicClock.seconds()
    private let parts: [ModelPart]
    private let communicator: TimedCommunicator

    init(parts: [ModelPart], communicator: TimedCommunicator) {
        self.parts = parts
        self.communicator = communicator
        communicator.reset()
        for part in parts {
            part.student.resetCommunicationTimers()
            part.teacher.resetCommunicationTimers()
        }
    }

    var maskedTokens: Int {
        get { timing.maskedTokens }
        set { timing.maskedTokens = newValue }
    }

    /// Runs `body`, adding its wall time to `phase`.
    mutating func measure<R>(_ phase: WritableKeyPath<StepTiming, Double>, _ body: () throws -> R) rethrows -> R {
        let phaseStart = MonotonicClock.seconds()
        defer { timing[keyPath: phase] += MonotonicClock.seconds() - phaseStart }
        return try body()
    }

    /// The step's timing: the stores' gathers and reductions and the objective's all-reduces.
    func finish() -> StepTiming {
        var result = timing
        for part in parts {
            for store in [part.student, part.teacher] {
                result.exposedCommunication += store.exposedCommunicationSeconds
                result.exposedGathers += store.exposedGatherSeconds
                result.exposedReductions += store.exposedReductionSeconds
                result.totalCommunication += store.totalCommunicationSeconds
            }
        }
        result.exposedCommunication += communicator.seconds
        result.exposedObjective = communicator.seconds
        result.totalCommunication += communicator.seconds
        result.total = MonotonicClock.seconds() - start
        return result
    }
}
