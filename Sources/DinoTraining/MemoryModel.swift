// Predicted resident bytes per rank of a training run, by category, from the configuration alone
// (nothing is allocated): the figure `config --memory` prints, `bench step` prints next to measured
// peak RSS, and `train` / `bench step` compare with the memory of the node before they allocate.
// Every buffer of a step grows to the largest step and is then kept (GrowableBuffer), so the peak
// is the sum of the buffers at their largest plus what the process holds before the model.
// Each category mirrors the code that allocates it (the names are SelfDistillation.memoryBreakdown's):
//   shards            parameters and gradients per unit, padded to a multiple of the shard count
//                     (ShardedParameterStore); the teacher has no gradient shards; AdamW two moments
//   full-unit buffers the pool of gathered parameters and gradient buffers (SharedBuffers): FULL_SHARD
//                     and HYBRID_SHARD hold at most 4 at a time in backward (the unit computing, the
//                     next one being gathered, its gradient, the previous gradient reducing) plus one
//                     reduction still in flight per other part (the heads finish backward before the
//                     backbone starts); SHARD_GRAD_OP keeps every student unit from forward to backward;
//                     NO_SHARD only gradients; one rank one gradient buffer. Each is as large as the
//                     largest unit (the pool's buffers cycle through every unit).
//   activations       Backbone: the tokens [T, D], final norm, patch columns, and per block and branch
//                     the saved intermediates for the rows the branch keeps (drop path keeps
//                     max(int(B (1 - rate)), 1) crops per batch); with checkpointing the block inputs
//                     [T, D] per block and one block's intermediates; the teacher one block's worth
//   heads             DinoHead's saved layer inputs and outputs, logits [rows, K], backward scratch
//   step buffers      SelfDistillation.StepBuffers: head inputs, targets, logit gradients
// Rows of the heads depend on the masked tokens M of the rank's crops, which vary per step; the
// prediction takes the largest M the mask plan can give a rank: ceil(2B masked / crops) crops with
// int(N r_max) patches each; in distillation every patch of the global crops, 2BN.
// Distillation adds the frozen teacher (its architecture read from its checkpoint's manifest): its
// parameter shards (no gradients, no moments) to the teacher's, its units to the largest full unit, its
// backbone and heads on the global crops in place of the EMA teacher's (whose backbone then runs only
// in evaluations, whose heads never run), its width in the target rows.

import DinoConfig
import DinoKernels
import DinoModel
import DinoSharding

/// Bytes of one category of what a rank holds.
public struct MemoryCategory: Codable, Sendable, Equatable {
    public var name: String
    public var bytes: Int

    public init(name: String, bytes: Int) {
        self.name = name
        self.bytes = bytes
    }

    // The names shared by the prediction and the measured breakdown.
    public static let studentShards = "student shards (parameters, gradients)"
    public static let teacherShards = "teacher shards"
    public static let moments = "AdamW moments"
    public static let unitBuffers = "gathered units and gradient buffers"
    public static let studentActivations = "student activations"
    public static let teacherActivations = "teacher activations"
    public static let backboneScratch = "backbone scratch"
    public static let heads = "heads"
    public static let stepBuffers = "objective and step buffers"
    public static let bf16Operands = "bf16 operand copies"
    public static let process = "process (runtime, libraries, MPI)"
}

/// A prediction of one rank's peak resident memory.
public struct MemoryPrediction: Sendable {
    public var categories: [MemoryCategory]
    /// The masked tokens per rank the heads' rows were sized for.
    public var maskedTokens: Int
    /// Whether the student recomputes its blocks in backward (activation_checkpoint.mode resolved).
    public var checkpointsActivations: Bool
    public var total: Int { categories.reduce(0) { $0 + $1.bytes } }

    /// Bytes of the category named `name` (0 if absent).
    public func bytes(_ name: String) -> Int { categories.first { $0.name == name }?.bytes ?? 0 }
}

public enum MemoryModel {
    /// What a rank holds besides the buffers counted here: the Swift runtime and Foundation,
    /// OpenBLAS (its packing buffers), oneDNN and HDF5, the allocator's free lists, and with several
    /// ranks Open MPI with its shared-memory transport and collective temporaries. Measured here
    /// (Debian 12, x86-64, Open MPI 4.1) as peak RSS minus the counted buffers of `bench step` runs of
    /// ViT-S/B/L on 1-8 ranks: 63-66 MiB on one rank, 94-102 MiB on several for ViT-S/B (Benchmarks/RESULTS.md,
    /// the memory table).
    public static func processBytes(worldSize: Int) -> Int { worldSize > 1 ? 100 << 20 : 64 << 20 }

    /// Predicts one rank's peak bytes for `config` (resolved for the world size) on `worldSize`
    /// ranks, `ranksPerNode` of them per node, with `threads` workers each. `maskedTokens` replaces
    /// the largest masked-token count (a test sizing the heads for the steps it ran).
    public static func predict(
        config: TrainingConfig, worldSize: Int, ranksPerNode: Int, threads: Int, maskedTokens: Int? = nil,
        headPrototypesPerUnit: Int = 0
    ) throws -> MemoryPrediction {
        let architecture = try ViTArchitecture(student: config.student, imageSize: config.crops.globalCropsSize)
        let layout = ParameterLayout(architecture)
        let heads = headArchitectures(config, embedDim: architecture.embedDim, perUnit: headPrototypesPerUnit)
        let tables = [layout.table] + heads.map { $0.table() }
        // The frozen teacher of a distillation run: architecture, heads, parameter tables.
        let frozen: (architecture: ViTArchitecture, heads: [HeadArchitecture], tables: [TensorTable])? =
            try config.distillation.enabled
            ? {
                let teacher = try DistillationTeacher.teacherCheckpoint(config.distillation.checkpointPath).config
                let a = try ViTArchitecture(student: teacher.student, imageSize: teacher.crops.globalCropsSize)
                let h = headArchitectures(teacher, embedDim: a.embedDim, perUnit: headPrototypesPerUnit)
                return (a, h, [ParameterLayout(a).table] + h.map { $0.table() })
            }() : nil
        let float = MemoryLayout<Float>.stride
        let b = config.train.batchSizePerRank

        // Shards.
        let strategy = config.fsdp.shardingStrategy
        let shards: Int
        switch strategy {
        case .fullShard, .shardGradOp: shards = worldSize
        case .noShard: shards = 1
        case .hybridShard: shards = config.fsdp.hybridGroupSize > 0 ? config.fsdp.hybridGroupSize : ranksPerNode
        }
        let plans = tables.map { ShardPlan(table: $0, shards: shards, shardIndex: 0) }
        let shardElements = plans.reduce(0) { total, plan in
            total + plan.table.units.indices.reduce(0) { $0 + plan.shardCount($1) }
        }
        let momentElements = plans.reduce(0) { total, plan in
            total + plan.table.units.indices.reduce(0) { $0 + Swift.max(1, plan.shardCount($1)) }
        }
        let frozenPlans = (frozen?.tables ?? []).map { ShardPlan(table: $0, shards: shards, shardIndex: 0) }
        let frozenElements = frozenPlans.reduce(0) { total, plan in
            total + plan.table.units.indices.reduce(0) { $0 + plan.shardCount($1) }
        }

        // Full-unit buffers.
        let padded = plans.flatMap { plan in plan.table.units.indices.map { plan.paddedCount($0) } }
        let frozenPadded = frozenPlans.flatMap { plan in plan.table.units.indices.map { plan.paddedCount($0) } }
        let largest = padded.max() ?? 0
        let parts = tables.count
        let bf16Gathers = config.fsdp.allgatherDtype == .bf16
        var floatBuffers = 0, wordBuffers = 0
        if shards == 1 && worldSize == 1 {
            floatBuffers = 1 + (bf16Gathers ? 1 : 0)
            wordBuffers = bf16Gathers ? 1 : 0
        } else if shards == 1 {
            floatBuffers = 2 + (parts - 1) + (bf16Gathers ? 1 : 0)
            wordBuffers = bf16Gathers ? 1 : 0
        } else {
            floatBuffers = 4 + (parts - 1)
            wordBuffers = bf16Gathers ? 2 : 0
        }
        var unitBytes = floatBuffers * largest * float + wordBuffers * largest * MemoryLayout<UInt16>.stride
        if strategy == .shardGradOp && shards > 1 {
            // Every student unit stays gathered from forward to backward, besides the gradients.
            unitBytes += (padded.reduce(0, +) - 2 * largest) * float
        }
        if shards > 1, let frozenLargest = frozenPadded.max() {
            // The frozen teacher gathers into the same pool: its forward holds a unit and the next one, so two
            // buffers grow to its largest unit (the pool hands out the smallest that fits, so the student's
            // units reuse them). SHARD_GRAD_OP keeps all its units until its forward ends. (Estimates: the
            // pool's multi-rank sizes are checked against peak RSS by Benchmarks/memory-table.sh, not exactly.)
            unitBytes += 2 * Swift.max(0, frozenLargest - largest) * float
            if strategy == .shardGradOp {
                unitBytes += Swift.max(0, frozenPadded.reduce(0, +) - padded.reduce(0, +)) * float
            }
        }
        if shards > 1 {
            // Each student store's reduce-scatter result: one shard of its largest unit under the
            // all-reduce threshold (16 MiB).
            for plan in plans {
                let scattered = plan.table.units.indices.map { plan.paddedCount($0) }.filter { $0 * float < 16 << 20 }
                unitBytes += (scattered.max() ?? 0) / shards * float
            }
        }

        // Crops and rows.
        let nLocal = config.crops.localCropsNumber
        let globalTokens = architecture.tokens(cropSize: config.crops.globalCropsSize)
        let localTokens = architecture.tokens(cropSize: config.crops.localCropsSize)
        let masked = maskedTokens ?? largestMaskedTokens(config, architecture: architecture, worldSize: worldSize)
        let studentBatches = [
            Batch(count: 2 * b, size: config.crops.globalCropsSize, tokens: globalTokens),
            Batch(count: nLocal * b, size: config.crops.localCropsSize, tokens: localTokens),
        ].filter { $0.count > 0 }
        let teacherBatches = [studentBatches[0]]
        let checkpointing = config.activationCheckpoint.mode.isEnabled(embedDim: architecture.embedDim)
        let dropRates: [Double]? =
            config.student.dropPathRate > 0
            ? DropPath(
                seed: 0, iteration: 0, rate: config.student.dropPathRate, depth: architecture.depth,
                uniform: config.student.dropPathUniform
            ).rates : nil
        let student = backboneBytes(
            architecture, batches: studentBatches, dropRates: dropRates, training: true, checkpointing: checkpointing,
            threads: threads)
        // The EMA teacher's forward on the global crops; in distillation it runs only in evaluations, which
        // the model leaves out (as it does in any run).
        let teacher =
            frozen == nil
            ? backboneBytes(
                architecture, batches: teacherBatches, dropRates: nil, training: false, checkpointing: false,
                threads: threads) : (activations: 0, scratch: 0, tokens: 0)
        // The target network on the global crops: the frozen teacher in distillation (tokens of its own
        // layout: registers), else the EMA teacher above.
        let target =
            frozen.map { f in
                backboneBytes(
                    f.architecture,
                    batches: [
                        Batch(
                            count: 2 * b, size: config.crops.globalCropsSize,
                            tokens: f.architecture.tokens(cropSize: config.crops.globalCropsSize))
                    ], dropRates: nil, training: false, checkpointing: false, threads: threads)
            } ?? (activations: 0, scratch: 0, tokens: 0)

        // Heads and step buffers.
        let d = architecture.embedDim, targetWidth = frozen?.architecture.embedDim ?? d
        let clsRows = 2 * b + nLocal * b, studentRows = clsRows + masked, teacherRows = 2 * b + masked
        let separate = config.ibot.separateHead
        let kDino = config.dino.headPrototypes, kIbot = separate ? config.ibot.headPrototypes : kDino
        var headBytes = 0
        // The target network's heads forward, then the student's forward and backward.
        let targetHeads = frozen?.heads ?? heads
        if targetHeads.count > 1 {
            headBytes += headBuffers(targetHeads[0], rows: 2 * b, backward: false)
            headBytes += headBuffers(targetHeads[1], rows: masked, backward: false)
        } else {
            headBytes += headBuffers(targetHeads[0], rows: teacherRows, backward: false)
        }
        if separate {
            headBytes += headBuffers(heads[0], rows: clsRows, backward: true)
            headBytes += headBuffers(heads[1], rows: masked, backward: true)
        } else {
            headBytes += headBuffers(heads[0], rows: studentRows, backward: true)
        }
        let dinoRows = separate ? clsRows : studentRows
        var stepElements =
            teacherRows * targetWidth + 2 * b * kDino + masked * kIbot + 2 * studentRows * d + dinoRows * kDino
            + Swift.max(2 * b * kDino, threads * kIbot) + student.tokens * d
        if separate { stepElements += Swift.max(1, masked * kIbot) }
        if config.dino.koleoLossWeight > 0 { stepElements += b * d }
        // Copy loss: its gradient, the normalised rows (+ norms) and their gradient; in float64 every
        // rank's rows, their similarities, the symmetric part of this rank's and its row gradient.
        let copyRows = 2 * b * worldSize
        if config.copyDetection.lossWeight > 0 { stepElements += 3 * 2 * b * d + 2 * b }
        var stepBytes = stepElements * float
        if config.copyDetection.lossWeight > 0 {
            stepBytes +=
                (copyRows * d + copyRows * copyRows + 2 * b * copyRows + 2 * b * d) * MemoryLayout<Double>.stride
        }
        let statistics = 2 * kDino + 2 + 2 * targetWidth + 2 * targetHeads[0].bottleneck
        stepBytes += statistics * MemoryLayout<Double>.stride
        if config.train.centering == .sinkhornKnopp {
            stepBytes += Swift.max(kDino, kIbot) * MemoryLayout<Double>.stride
        }

        var categories = [
            MemoryCategory(name: MemoryCategory.studentShards, bytes: 2 * shardElements * float),
            MemoryCategory(name: MemoryCategory.teacherShards, bytes: (shardElements + frozenElements) * float),
            MemoryCategory(name: MemoryCategory.moments, bytes: 2 * momentElements * float),
            MemoryCategory(name: MemoryCategory.unitBuffers, bytes: unitBytes),
            MemoryCategory(name: MemoryCategory.studentActivations, bytes: student.activations * float),
            MemoryCategory(
                name: MemoryCategory.teacherActivations, bytes: (teacher.activations + target.activations) * float),
            MemoryCategory(
                name: MemoryCategory.backboneScratch,
                bytes: (student.scratch + teacher.scratch + target.scratch) * float),
            MemoryCategory(name: MemoryCategory.heads, bytes: headBytes * float),
            MemoryCategory(name: MemoryCategory.stepBuffers, bytes: stepBytes),
        ]
        let precision = config.computePrecision
        let bf16Modules = [
            precision.studentBackboneParam, precision.teacherBackboneParam, precision.studentDinoHeadParam,
            precision.teacherDinoHeadParam, precision.studentIbotHeadParam, precision.teacherIbotHeadParam,
        ]
        if bf16Modules.contains(.bf16) {
            // BF16GEMM's packed operands, grown to the largest A and B of any GEMM: the backbone's
            // fc1 / w12 gradient and weights, the heads' logit-gradient pieces.
            let fc1 = architecture.feedForward.firstLayerWidth
            let pieceRows = heads.map { Swift.min($0.prototypesPerUnit, $0.prototypes) }.max() ?? 0
            let bottleneck = heads.map(\.bottleneck).max() ?? 0
            let a = Swift.max(student.tokens * Swift.max(3 * d, fc1), pieceRows * studentRows)
            let bOperand = Swift.max(
                student.tokens * Swift.max(d, architecture.feedForward.hidden), fc1 * d, pieceRows * bottleneck)
            categories.append(
                MemoryCategory(name: MemoryCategory.bf16Operands, bytes: (a + bOperand) * MemoryLayout<UInt16>.stride))
        }
        categories.append(MemoryCategory(name: MemoryCategory.process, bytes: processBytes(worldSize: worldSize)))
        return MemoryPrediction(categories: categories, maskedTokens: masked, checkpointsActivations: checkpointing)
    }

    /// The DINO head's and (separate) iBOT head's shapes, as SelfDistillation builds them.
    static func headArchitectures(_ config: TrainingConfig, embedDim: Int, perUnit: Int) -> [HeadArchitecture] {
        var heads = [
            HeadArchitecture(
                inDim: embedDim, hidden: config.dino.headHiddenDim, bottleneck: config.dino.headBottleneckDim,
                layers: config.dino.headLayers, prototypes: config.dino.headPrototypes, prototypesPerUnit: perUnit)
        ]
        if config.ibot.separateHead {
            heads.append(
                HeadArchitecture(
                    inDim: embedDim, hidden: config.ibot.headHiddenDim, bottleneck: config.ibot.headBottleneckDim,
                    layers: config.ibot.headLayers, prototypes: config.ibot.headPrototypes,
                    prototypesPerUnit: perUnit))
        }
        return heads
    }

    /// The most masked tokens one rank's global crops can hold: the mask plan spreads int(2 G p)
    /// masked crops evenly over the global batch's 2G crops (MaskPlan), so a rank's 2B crops hold
    /// at most ceil(2B masked / 2G) of them, each at most int(N r_max) patches.
    static func largestMaskedTokens(_ config: TrainingConfig, architecture: ViTArchitecture, worldSize: Int) -> Int {
        let b = config.train.batchSizePerRank, crops = 2 * b * worldSize
        if config.distillation.enabled { return 2 * b * architecture.patches(cropSize: config.crops.globalCropsSize) }
        let masked = Int(Double(crops) * config.ibot.maskSampleProbability)
        guard masked > 0 else { return 0 }
        let perRank = (2 * b * masked + crops - 1) / crops
        let patches = architecture.patches(cropSize: config.crops.globalCropsSize)
        let high = config.ibot.maskRatioMinMax.last ?? 0.5
        return Swift.min(2 * b, perRank) * Int(Double(patches) * high)
    }

    struct Batch {
        var count: Int, size: Int, tokens: Int
    }

    /// Elements a Backbone holds after a forward (and backward, when training) over `batches`:
    /// (kept for backward, scratch, total tokens T). Mirrors Backbone's reserve calls.
    static func backboneBytes(
        _ a: ViTArchitecture, batches: [Batch], dropRates: [Double]?, training: Bool, checkpointing: Bool,
        threads: Int
    ) -> (activations: Int, scratch: Int, tokens: Int) {
        let d = a.embedDim, h = a.feedForward.hidden, w = a.feedForward.firstLayerWidth, p = a.patchSize
        let t = batches.reduce(0) { $0 + $1.count * $1.tokens }
        // Rows a block's branches keep (all crops without drop path).
        func keptRows(rate: Double) -> Int {
            batches.reduce(0) { total, batch in
                let kept =
                    rate > 0 && batch.count > 0 ? Swift.max(Int(Double(batch.count) * (1 - rate)), 1) : batch.count
                return total + kept * batch.tokens
            }
        }
        let attentionPerRow = 7 * d + 2 + a.heads, feedForwardPerRow = 3 * d + w + h + 2
        var activations = 2 * t * d + 2 * t
        for batch in batches { activations += batch.count * a.patches(cropSize: batch.size) * 3 * p * p }
        let rowsPerBlock = (0..<a.depth).map { keptRows(rate: dropRates?[$0] ?? 0) }
        let widestRows = rowsPerBlock.max() ?? 0
        if training && !checkpointing {
            activations += rowsPerBlock.reduce(0) { $0 + $1 * (attentionPerRow + feedForwardPerRow) }
        } else {
            activations += widestRows * (attentionPerRow + feedForwardPerRow)
            if checkpointing { activations += a.depth * t * d }
        }
        // Scratch: the embedding's position and patch-token buffers, backward's branch gradients.
        let grid = a.gridSize
        let largestPatches = batches.map { a.patches(cropSize: $0.size) }.max() ?? 0
        let largestSide = batches.map { $0.size / p }.max() ?? 0
        let patchTokens = batches.map { $0.count * a.patches(cropSize: $0.size) * d }.max() ?? 0
        var scratchA = largestPatches * d, scratchB = grid * Swift.max(grid, largestSide) * d
        var scratchC = patchTokens
        var dTokens = 0
        if training {
            scratchA = Swift.max(scratchA, widestRows * d)
            scratchB = Swift.max(scratchB, widestRows * Swift.max(3 * d, w))
            scratchC = Swift.max(scratchC, widestRows * Swift.max(3 * d, w))
            dTokens = t * d
        }
        // The attention workspace: per worker K^T and V^T of the longest sequence and two score tiles.
        let longest = batches.map(\.tokens).max() ?? 0
        let tile = AttentionTiling.standard.queryBlock * Swift.min(AttentionTiling.standard.keyBlock, longest)
        let attention =
            threads
            * ((training ? 2 : 1) * a.headDim * longest + (training ? 2 : 1) * tile
                + 2 * AttentionTiling.standard.queryBlock)
        return (activations, scratchA + scratchB + scratchC + dTokens + attention, t)
    }

    /// Elements a DinoHead holds after a forward over `rows` rows (and backward, for the student).
    static func headBuffers(_ head: HeadArchitecture, rows: Int, backward: Bool) -> Int {
        let shapes = head.mlpShapes, b = head.bottleneck, k = head.prototypes
        let maxWidth = shapes.reduce(b) { Swift.max($0, $1.inF, $1.outF) }
        var total = shapes.reduce(0) { $0 + rows * ($1.inF + $1.outF) }
        total += 2 * rows * b + rows + 2 * k + rows * k
        let hiddenOut = shapes.dropLast().map(\.outF).max() ?? 0
        var scratchA = rows * hiddenOut
        if backward {
            scratchA = Swift.max(scratchA, rows * maxWidth)
            total += rows * maxWidth  // scratchB
            total += rows * Swift.min(head.prototypesPerUnit, k)  // scaledGradient
        }
        return total + scratchA
    }
}
