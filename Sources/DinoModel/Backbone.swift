// The DINOv2 ViT backbone, forward and backward, over several crop batches packed into one pass.
//
// Shapes: D embed dim, H heads, P patch size, R registers. Batch i holds B_i crops of S_i pixels:
//   images_i [B_i, 3, S_i, S_i] -> N_i = (S_i / P)^2 patches -> T_i = 1 + R + N_i tokens per crop.
//   x [T, D], T = sum_i B_i T_i: batch i's crop s starts at row base_i + s T_i, tokens [CLS, regs, patches].
// Embedding (prepare_tokens_with_masks): patch embed; masked patches replaced by mask_token; CLS
//   prepended; position embedding (resampled to the crop's grid) added to CLS and patches;
//   registers inserted after CLS without position embedding.
// Block b (pre-norm): x += s LS1(Attn(LN1(x))); x += s LS2(FFN(LN2(x))). Each branch runs on a subset
//   of each batch's crops (stochastic depth: keep max(int(B_i (1 - rate_b)), 1) crops chosen by the
//   counter-based stream, s = B_i / kept; all crops and s = 1 without drop path). Attention is the
//   packed kernel over the kept crops' sequences: each crop attends only to its own tokens.
// Output: LayerNorm `norm` of every token ([T, D]: CLS, registers and patches of every crop),
//   and the pre-norm tokens (x after the last block).
// Backward mirrors forward in reverse order; each unit's gradient accumulates in the store's buffer
//   when the store hands out a zeroed one per pass (sharded), else in scratch added to the store's in
//   one pass; then gradientsReady(unit) is called.
// Saved per block and branch (kept rows Tk): branch input and LN output [Tk, D], LN mean/rstd,
//   attention: qkv [Tk, 3D], output [Tk, D], lse [Tk, H], proj output [Tk, D];
//   FFN: fc1/w12 output [Tk, h or 2h], activation [Tk, h], fc2/w3 output [Tk, D].

import DinoCore
import DinoKernels

/// One batch of same-sized crops.
public struct CropBatch<T> {
    /// [count, 3, size, size], NCHW.
    public var images: UnsafePointer<T>
    public var count: Int
    public var size: Int
    /// iBOT masks [count, patches] (true: replaced by the mask token), or nil.
    public var masks: UnsafePointer<Bool>?

    public init(images: UnsafePointer<T>, count: Int, size: Int, masks: UnsafePointer<Bool>? = nil) {
        self.images = images
        self.count = count
        self.size = size
        self.masks = masks
    }
}

/// Stochastic depth of one forward pass: which step it is (the random stream's coordinates) and
/// the rate of every block.
public struct DropPath: Sendable {
    public var seed: UInt64
    public var iteration: UInt64
    public var rates: [Double]

    /// The official schedule: `rate` for every block (uniform) or linearly from 0 to `rate`.
    public init(seed: UInt64, iteration: UInt64, rate: Double, depth: Int, uniform: Bool) {
        self.seed = seed
        self.iteration = iteration
        if uniform || depth <= 1 {
            rates = Array(repeating: rate, count: depth)
        } else {
            rates = (0..<depth).map { rate * Double($0) / Double(depth - 1) }
        }
    }
}

/// Rows of one batch inside the packed token matrix.
public struct BatchRows: Sendable, Equatable {
    public let base: Int
    public let count: Int
    public let tokensPerCrop: Int
    public let patches: Int
    public let gridSide: Int

    /// Row of token `token` of crop `crop`.
    public func row(crop: Int, token: Int) -> Int { base + crop * tokensPerCrop + token }
}

/// A module whose GEMMs can run in bf16 (`nil`: in its own precision).
public protocol BF16Computing: AnyObject {
    var bf16: BF16GEMM? { get set }
}

/// The backbone's computation; parameters come from a `ParameterStore`.
public final class Backbone<T: KernelScalar>: BF16Computing {
    public let layout: ParameterLayout
    public let threads: Int
    /// Runs the linear layers' GEMMs (patch embedding, qkv, proj, MLP / SwiGLU) in bf16 when set.
    public var bf16: BF16GEMM? = nil
    /// Activation checkpointing: a training forward keeps only each block's input [T, D] and backward
    /// recomputes the block's forward from it (the same kernels on the same inputs and drop-path
    /// draws, so the same bits) into one shared set of branch buffers, instead of keeping every
    /// block's intermediates (about 18 D floats a token a block with an MLP of ratio 4).
    public var checkpointsActivations = false
    private var a: ViTArchitecture { layout.architecture }

    // Saved from the last forward.
    public private(set) var batches: [BatchRows] = []
    private var inputs: [CropBatch<T>] = []
    private var branches: [[Branch]] = []  // [block][0: attention, 1: FFN]
    private let tokens = GrowableBuffer<T>()  // x [T, D]: after forward, the pre-norm tokens
    private let normalized = GrowableBuffer<T>()  // [T, D]
    private let normMean = GrowableBuffer<T>(), normRstd = GrowableBuffer<T>()
    private var columns: [GrowableBuffer<T>] = []  // per batch [B N, 3 P P]
    private var positions: [PositionInterpolation] = []
    private let attention: AttentionWorkspace<T>
    // Scratch shared by forward and backward.
    private let scratchA = GrowableBuffer<T>(), scratchB = GrowableBuffer<T>(), scratchC = GrowableBuffer<T>()
    private let dTokens = GrowableBuffer<T>()
    private var canBackward = false
    private var checkpointed = false
    private var blockInputs: [GrowableBuffer<T>] = []  // per block, x [T, D] before it (checkpointing)
    private var dropPath: DropPath? = nil  // of the last forward, replayed by recomputation
    /// The store of the pass under way, polled between kernels so its collectives progress.
    private var progressStore: (any ParameterStore<T>)? = nil
    /// Where each unit's gradient accumulates (see UnitGradient).
    private let unitGradient = UnitGradient<T>()

    public init(layout: ParameterLayout, threads: Int = 1) {
        self.layout = layout
        self.threads = threads
        attention = AttentionWorkspace<T>()
        branches = (0..<layout.architecture.depth).map { _ in [Branch(threads: threads), Branch(threads: threads)] }
    }

    /// Total rows of the last forward.
    public var tokenCount: Int { batches.last.map { $0.base + $0.count * $0.tokensPerCrop } ?? 0 }
    /// Normalised tokens of the last forward, [tokenCount, D].
    public var output: UnsafePointer<T> { UnsafePointer(normalized.base) }
    /// Pre-norm tokens of the last forward, [tokenCount, D].
    public var prenorm: UnsafePointer<T> { UnsafePointer(tokens.base) }

    /// Bytes held for backward and scratch after the last forward.
    public var activationBytes: Int {
        var total = tokens.bytes + normalized.bytes + normMean.bytes + normRstd.bytes
        total += columns.reduce(0) { $0 + $1.bytes } + blockInputs.reduce(0) { $0 + $1.bytes }
        for block in branches { for branch in block { total += branch.bytes } }
        return total
    }

    /// Bytes of the scratch shared by forward and backward (attention workspace, gradient buffers).
    public var scratchBytes: Int {
        scratchA.bytes + scratchB.bytes + scratchC.bytes + dTokens.bytes + unitGradient.bytes + attention.bytes
    }

    // MARK: - Forward

    /// Runs the backbone over `batches` (all through every block together). With `keepActivations`
    /// (training) every block's branch inputs and intermediates are kept for `backward`; without
    /// (the teacher, evaluation) one set of buffers is reused by every block.
    public func forward(
        _ input: [CropBatch<T>], store: any ParameterStore<T>, dropPath: DropPath? = nil,
        keepActivations: Bool = true
    ) throws {
        canBackward = keepActivations
        checkpointed = keepActivations && checkpointsActivations
        self.dropPath = dropPath
        if checkpointed && blockInputs.isEmpty { blockInputs = (0..<a.depth).map { _ in GrowableBuffer<T>() } }
        progressStore = store
        defer { progressStore = nil }
        let d = a.embedDim
        inputs = input
        batches = []
        var base = 0
        for batch in input {
            precondition(batch.size % a.patchSize == 0, "crop size \(batch.size) is not a multiple of the patch size")
            let side = batch.size / a.patchSize
            let rows = BatchRows(
                base: base, count: batch.count, tokensPerCrop: 1 + a.registers + side * side,
                patches: side * side, gridSide: side)
            batches.append(rows)
            base += batch.count * rows.tokensPerCrop
        }
        let total = base
        let x = tokens.reserve(total * d)

        // Embedding (unit 0).
        let embedUnit = try store.parameters(unit: layout.embedUnit)
        try embed(into: x, parameters: embedUnit)
        try store.release(unit: layout.embedUnit)

        // Blocks, unit by unit.
        for unit in 1..<layout.normUnit {
            let parameters = try store.parameters(unit: unit)
            for block in layout.units[unit].blocks {
                if checkpointed { blockInputs[block].reserve(total * d).update(from: x, count: total * d) }
                try blockForward(
                    block, x: x, p: parameters, into: branches[keepActivations && !checkpointed ? block : 0])
            }
            try store.release(unit: unit)
        }

        // Final norm.
        let normParameters = try store.parameters(unit: layout.normUnit)
        LayerNorm.forward(
            out: normalized.reserve(total * d), mean: normMean.reserve(total), rstd: normRstd.reserve(total),
            input: x, weight: normParameters + layout.norm.weight, bias: normParameters + layout.norm.bias,
            rows: total, channels: d, threads: threads)
        try store.release(unit: layout.normUnit)
    }

    private func embed(into x: UnsafeMutablePointer<T>, parameters p: UnsafePointer<T>) throws {
        let d = a.embedDim, m = a.gridSize
        while columns.count < inputs.count { columns.append(GrowableBuffer<T>()) }
        positions = []
        for (i, batch) in inputs.enumerated() {
            let rows = batches[i]
            let n = rows.patches
            let interpolation = PositionInterpolation(
                grid: m, targetRows: rows.gridSide, targetColumns: rows.gridSide,
                offset: a.interpolateOffset, antialias: a.interpolateAntialias)
            positions.append(interpolation)
            let position = scratchA.reserve(n * d)
            interpolation.forward(
                out: position, grid: p + layout.embed.positionEmbedding + d, channels: d,
                scratch: scratchB.reserve(m * Swift.max(m, rows.gridSide) * d))
            let patchTokens = scratchC.reserve(batch.count * n * d)
            PatchEmbed.forward(
                out: patchTokens, columns: columns[i].reserve(batch.count * n * 3 * a.patchSize * a.patchSize),
                images: batch.images, weight: p + layout.embed.patchWeight, bias: p + layout.embed.patchBias,
                batch: batch.count, height: batch.size, width: batch.size, patch: a.patchSize, embedDim: d,
                engine: bf16, threads: threads)
            let cls = p + layout.embed.clsToken, clsPosition = p + layout.embed.positionEmbedding
            for crop in 0..<batch.count {
                T.linearCombination(x + rows.row(crop: crop, token: 0) * d, cls, 1, clsPosition, 1, d)
                for r in 0..<a.registers {
                    (x + rows.row(crop: crop, token: 1 + r) * d).update(
                        from: p + layout.embed.registerTokens + r * d, count: d)
                }
                for patch in 0..<n {
                    let masked = batch.masks.map { $0[crop * n + patch] } ?? false
                    let source =
                        masked ? p + layout.embed.maskToken : UnsafePointer(patchTokens + (crop * n + patch) * d)
                    T.linearCombination(
                        x + rows.row(crop: crop, token: 1 + a.registers + patch) * d, source, 1,
                        position + patch * d, 1, d)
                }
            }
        }
    }

    /// Block `block` on the residual stream `x` (updated in place), its intermediates in `branchPair`
    /// ([attention, FFN]); drop path draws the kept crops from (seed, iteration, block, branch).
    private func blockForward(
        _ block: Int, x: UnsafeMutablePointer<T>, p: UnsafePointer<T>, into branchPair: [Branch]
    ) throws {
        let o = layout.blocks[block]
        let rate = dropPath.map { $0.rates[block] } ?? 0
        for kind in 0..<2 {
            let branch = branchPair[kind]
            branch.select(
                batches: batches, rate: rate,
                stream: dropPath.map {
                    RandomStream(seed: $0.seed, purpose: .dropPath, $0.iteration, UInt64(block), UInt64(kind))
                })
            if kind == 0 {
                try attentionForward(branch, x: x, p: p, o: o)
            } else {
                try feedForwardForward(branch, x: x, p: p, o: o)
            }
        }
    }

    private func attentionForward(
        _ branch: Branch, x: UnsafeMutablePointer<T>, p: UnsafePointer<T>, o: BlockOffsets
    ) throws {
        let d = a.embedDim, rows = branch.rows
        let input = branch.input.reserve(rows * d), normed = branch.normed.reserve(rows * d)
        branch.gather(from: x, into: input, channels: d)
        LayerNorm.forward(
            out: normed, mean: branch.mean.reserve(rows), rstd: branch.rstd.reserve(rows), input: input,
            weight: p + o.norm1Weight, bias: p + o.norm1Bias, rows: rows, channels: d, threads: threads)
        let qkv = branch.first.reserve(rows * 3 * d)
        try linearForward(
            out: qkv, input: normed, weight: p + o.qkvWeight, bias: o.qkvBias >= 0 ? p + o.qkvBias : nil,
            rows: rows, inFeatures: d, outFeatures: 3 * d)
        try poll()
        let attended = branch.second.reserve(rows * d), lse = branch.lse.reserve(rows * a.heads)
        T.attentionForward(
            out: attended, lse: lse, qkv: qkv, sequences: branch.sequences, heads: a.heads,
            headDim: a.headDim, workspace: attention, threads: threads)
        try poll()
        let projected = branch.output.reserve(rows * d)
        try linearForward(
            out: projected, input: attended, weight: p + o.projWeight,
            bias: o.projBias >= 0 ? p + o.projBias : nil, rows: rows, inFeatures: d, outFeatures: d)
        try poll()
        branch.scatterLayerScale(into: x, branchOutput: projected, gamma: p + o.layerScale1, channels: d)
    }

    private func feedForwardForward(
        _ branch: Branch, x: UnsafeMutablePointer<T>, p: UnsafePointer<T>, o: BlockOffsets
    ) throws {
        let d = a.embedDim, rows = branch.rows, h = a.feedForward.hidden
        let input = branch.input.reserve(rows * d), normed = branch.normed.reserve(rows * d)
        branch.gather(from: x, into: input, channels: d)
        LayerNorm.forward(
            out: normed, mean: branch.mean.reserve(rows), rstd: branch.rstd.reserve(rows), input: input,
            weight: p + o.norm2Weight, bias: p + o.norm2Bias, rows: rows, channels: d, threads: threads)
        let width = fc1Width
        let fc1 = branch.first.reserve(rows * width), activated = branch.second.reserve(rows * h)
        try linearForward(
            out: fc1, input: normed, weight: p + o.fc1Weight, bias: o.fc1Bias >= 0 ? p + o.fc1Bias : nil,
            rows: rows, inFeatures: d, outFeatures: width)
        try poll()
        switch a.feedForward {
        case .mlp: GELU.forward(out: activated, input: fc1, count: rows * h, threads: threads)
        case .swiglu: SwiGLU.forward(hidden: activated, x12: fc1, rows: rows, hiddenFeatures: h, threads: threads)
        }
        let out = branch.output.reserve(rows * d)
        try linearForward(
            out: out, input: activated, weight: p + o.fc2Weight, bias: o.fc2Bias >= 0 ? p + o.fc2Bias : nil,
            rows: rows, inFeatures: h, outFeatures: d)
        try poll()
        branch.scatterLayerScale(into: x, branchOutput: out, gamma: p + o.layerScale2, channels: d)
    }

    @inline(__always)
    private func poll() throws { try progressStore?.progress() }

    /// `Linear.forward`, in pieces of the store's `pollingRows` rows with a progress poll between
    /// them, so a peer rank waiting on a collective is held up by one piece, not a whole GEMM.
    private func linearForward(
        out: UnsafeMutablePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>,
        bias: UnsafePointer<T>?, rows: Int, inFeatures: Int, outFeatures: Int
    ) throws {
        let piece = progressStore?.pollingRows ?? 0
        var first = 0
        repeat {
            let count = piece > 0 ? Swift.min(piece, rows - first) : rows
            Linear.forward(
                out: out + first * outFeatures, input: input + first * inFeatures, weight: weight, bias: bias,
                rows: count, inFeatures: inFeatures, outFeatures: outFeatures, engine: bf16, threads: threads)
            first += count
            if first < rows { try poll() }
        } while first < rows
    }

    /// `Linear.backward` in pieces of rows, as `linearForward` (weight gradients accumulate over pieces).
    private func linearBackward(
        dInput: UnsafeMutablePointer<T>, dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?,
        dOut: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, rows: Int,
        inFeatures: Int, outFeatures: Int
    ) throws {
        let piece = progressStore?.pollingRows ?? 0
        var first = 0
        repeat {
            let count = piece > 0 ? Swift.min(piece, rows - first) : rows
            Linear.backward(
                dInput: dInput + first * inFeatures, dWeight: dWeight, dBias: dBias, dOut: dOut + first * outFeatures,
                input: input + first * inFeatures, weight: weight, rows: count, inFeatures: inFeatures,
                outFeatures: outFeatures, engine: bf16, threads: threads)
            first += count
            if first < rows { try poll() }
        } while first < rows
    }

    private var fc1Width: Int { a.feedForward.firstLayerWidth }

    // MARK: - Backward

    /// Backpropagates `dOutput` [tokenCount, D] (the gradient of the normalised tokens) through the
    /// last forward; parameter gradients accumulate into `store`.
    public func backward(_ dOutput: UnsafePointer<T>, store: any ParameterStore<T>) throws {
        precondition(canBackward, "backward needs a forward with keepActivations")
        progressStore = store
        defer { progressStore = nil }
        let d = a.embedDim, total = tokenCount
        let dx = dTokens.reserve(total * d)
        let x = UnsafePointer(tokens.base)

        // Final norm.
        let normParameters = try store.parameters(unit: layout.normUnit)
        let normGrad = beginUnitGradient(layout.normUnit, store: store)
        LayerNorm.backward(
            dInput: dx, dWeight: normGrad + layout.norm.weight, dBias: normGrad + layout.norm.bias,
            dOut: dOutput, input: x, weight: normParameters + layout.norm.weight,
            mean: normMean.base, rstd: normRstd.base, rows: total, channels: d, accumulate: false)
        try store.release(unit: layout.normUnit)
        try finishUnitGradient(layout.normUnit, store: store)

        // Blocks in reverse, FFN branch before attention branch (the reverse of forward).
        for unit in stride(from: layout.normUnit - 1, through: 1, by: -1) {
            let p = try store.parameters(unit: unit)
            let g = beginUnitGradient(unit, store: store)
            for block in layout.units[unit].blocks.reversed() {
                let o = layout.blocks[block]
                var branchPair = branches[block]
                if checkpointed {
                    // Recompute in place of the saved input: it is not needed after this block.
                    branchPair = branches[0]
                    try blockForward(block, x: blockInputs[block].base, p: p, into: branchPair)
                }
                try feedForwardBackward(branchPair[1], dx: dx, p: p, g: g, o: o)
                try attentionBackward(branchPair[0], dx: dx, p: p, g: g, o: o)
            }
            try store.release(unit: unit)
            try finishUnitGradient(unit, store: store)
        }

        // Embedding.
        let p = try store.parameters(unit: layout.embedUnit)
        let g = beginUnitGradient(layout.embedUnit, store: store)
        embedBackward(dx: UnsafePointer(dx), p: p, g: g)
        try store.release(unit: layout.embedUnit)
        try finishUnitGradient(layout.embedUnit, store: store)
    }

    private func beginUnitGradient(_ unit: Int, store: any ParameterStore<T>) -> UnsafeMutablePointer<T> {
        unitGradient.begin(unit, count: layout.units[unit].count, store: store)
    }

    private func finishUnitGradient(_ unit: Int, store: any ParameterStore<T>) throws {
        try unitGradient.finish(unit, count: layout.units[unit].count, store: store)
    }

    private func feedForwardBackward(
        _ branch: Branch, dx: UnsafeMutablePointer<T>, p: UnsafePointer<T>,
        g: UnsafeMutablePointer<T>, o: BlockOffsets
    ) throws {
        let d = a.embedDim, rows = branch.rows, h = a.feedForward.hidden, width = fc1Width
        // LayerScale: dOut (gathered dx rows) -> d(fc2 output), dGamma.
        let dResidual = scratchA.reserve(rows * d)
        branch.gather(from: UnsafePointer(dx), into: dResidual, channels: d)
        let dOut = scratchB.reserve(rows * Swift.max(d, width))
        branch.layerScaleBackward(
            dBranch: dOut, dGamma: g + o.layerScale2, dResidual: dResidual,
            gamma: p + o.layerScale2, channels: d)
        // fc2 / w3.
        let dActivated = scratchC.reserve(rows * Swift.max(width, d))
        try linearBackward(
            dInput: dActivated, dWeight: g + o.fc2Weight, dBias: o.fc2Bias >= 0 ? g + o.fc2Bias : nil,
            dOut: dOut, input: branch.second.base, weight: p + o.fc2Weight, rows: rows, inFeatures: h,
            outFeatures: d)
        try poll()
        // Activation: d(fc1 output) into dOut's buffer.
        let dFc1 = dOut
        switch a.feedForward {
        case .mlp:
            GELU.backward(dInput: dFc1, dOut: dActivated, input: branch.first.base, count: rows * h, threads: threads)
        case .swiglu:
            SwiGLU.backward(
                dX12: dFc1, dHidden: dActivated, x12: branch.first.base, rows: rows, hiddenFeatures: h,
                threads: threads)
        }
        // fc1 / w12: d(LN output) into dActivated's buffer.
        let dNormed = dActivated
        try linearBackward(
            dInput: dNormed, dWeight: g + o.fc1Weight, dBias: o.fc1Bias >= 0 ? g + o.fc1Bias : nil,
            dOut: dFc1, input: branch.normed.base, weight: p + o.fc1Weight, rows: rows, inFeatures: d,
            outFeatures: width)
        try poll()
        // LN2: d(branch input), then back into the residual stream rows.
        let dInput = dResidual
        LayerNorm.backward(
            dInput: dInput, dWeight: g + o.norm2Weight, dBias: g + o.norm2Bias, dOut: dNormed,
            input: branch.input.base, weight: p + o.norm2Weight, mean: branch.mean.base,
            rstd: branch.rstd.base, rows: rows, channels: d, accumulate: false)
        branch.scatterAdd(dInput, into: dx, channels: d)
    }

    private func attentionBackward(
        _ branch: Branch, dx: UnsafeMutablePointer<T>, p: UnsafePointer<T>,
        g: UnsafeMutablePointer<T>, o: BlockOffsets
    ) throws {
        let d = a.embedDim, rows = branch.rows
        let dResidual = scratchA.reserve(rows * d)
        branch.gather(from: UnsafePointer(dx), into: dResidual, channels: d)
        let dProjected = scratchB.reserve(rows * 3 * d)
        branch.layerScaleBackward(
            dBranch: dProjected, dGamma: g + o.layerScale1, dResidual: dResidual,
            gamma: p + o.layerScale1, channels: d)
        let dAttended = scratchC.reserve(rows * 3 * d)
        try linearBackward(
            dInput: dAttended, dWeight: g + o.projWeight, dBias: o.projBias >= 0 ? g + o.projBias : nil,
            dOut: dProjected, input: branch.second.base, weight: p + o.projWeight, rows: rows,
            inFeatures: d, outFeatures: d)
        try poll()
        let dQKV = dProjected  // [rows, 3D]; dProjected is consumed
        T.attentionBackward(
            dQKV: dQKV, dOut: dAttended, qkv: branch.first.base, out: branch.second.base,
            lse: branch.lse.base, sequences: branch.sequences, heads: a.heads, headDim: a.headDim,
            workspace: attention, threads: threads)
        try poll()
        let dNormed = dAttended
        try linearBackward(
            dInput: dNormed, dWeight: g + o.qkvWeight, dBias: o.qkvBias >= 0 ? g + o.qkvBias : nil,
            dOut: dQKV, input: branch.normed.base, weight: p + o.qkvWeight, rows: rows, inFeatures: d,
            outFeatures: 3 * d)
        try poll()
        let dInput = dResidual
        LayerNorm.backward(
            dInput: dInput, dWeight: g + o.norm1Weight, dBias: g + o.norm1Bias, dOut: dNormed,
            input: branch.input.base, weight: p + o.norm1Weight, mean: branch.mean.base,
            rstd: branch.rstd.base, rows: rows, channels: d, accumulate: false)
        branch.scatterAdd(dInput, into: dx, channels: d)
    }

    private func embedBackward(dx: UnsafePointer<T>, p: UnsafePointer<T>, g: UnsafeMutablePointer<T>) {
        let d = a.embedDim, m = a.gridSize
        let dCls = g + layout.embed.clsToken, dPosition = g + layout.embed.positionEmbedding
        for (i, batch) in inputs.enumerated() {
            let rows = batches[i], n = rows.patches
            let dPositionPatches = scratchA.reserve(n * d)
            dPositionPatches.setToZero(count: n * d)
            let dPatchTokens = scratchC.reserve(batch.count * n * d)
            for crop in 0..<batch.count {
                let clsRow = dx + rows.row(crop: crop, token: 0) * d
                T.add(dCls, clsRow, d)
                T.add(dPosition, clsRow, d)
                for r in 0..<a.registers {
                    T.add(g + layout.embed.registerTokens + r * d, dx + rows.row(crop: crop, token: 1 + r) * d, d)
                }
                for patch in 0..<n {
                    let row = dx + rows.row(crop: crop, token: 1 + a.registers + patch) * d
                    T.add(dPositionPatches + patch * d, row, d)
                    let target = dPatchTokens + (crop * n + patch) * d
                    if batch.masks.map({ $0[crop * n + patch] }) ?? false {
                        T.add(g + layout.embed.maskToken, row, d)
                        target.setToZero(count: d)
                    } else {
                        target.update(from: row, count: d)
                    }
                }
            }
            positions[i].backward(
                dGrid: dPosition + d, dOut: dPositionPatches, channels: d,
                scratch: scratchB.reserve(m * Swift.max(m, rows.gridSide) * d))
            PatchEmbed.backward(
                dWeight: g + layout.embed.patchWeight, dBias: g + layout.embed.patchBias,
                dOut: dPatchTokens, columns: columns[i].base, weight: p + layout.embed.patchWeight,
                rows: batch.count * n, patch: a.patchSize, embedDim: d, engine: bf16, threads: threads)
        }
    }
}

extension Backbone {
    /// The crops one branch of one block computes on, and what it saved for backward.
    final class Branch {
        /// Workers for the row copies and LayerScale passes: each kept crop is a separate item.
        let threads: Int
        init(threads: Int) { self.threads = threads }
        /// Per kept crop: its first row in the packed token matrix, its length, and b / kept of its batch.
        private(set) var spans: [(start: Int, length: Int, scale: T)] = []
        private(set) var sequences = PackedSequences(lengths: [])
        private(set) var rows = 0
        let input = GrowableBuffer<T>(), normed = GrowableBuffer<T>()
        let mean = GrowableBuffer<T>(), rstd = GrowableBuffer<T>()
        /// Attention: qkv [rows, 3D]; FFN: fc1 / w12 output.
        let first = GrowableBuffer<T>()
        /// Attention: attention output [rows, D]; FFN: activation [rows, h].
        let second = GrowableBuffer<T>()
        let lse = GrowableBuffer<T>()
        /// The branch output before LayerScale [rows, D].
        let output = GrowableBuffer<T>()

        var bytes: Int {
            input.bytes + normed.bytes + mean.bytes + rstd.bytes + first.bytes + second.bytes + lse.bytes + output.bytes
        }

        /// Chooses the crops of every batch (all of them without drop path).
        func select(batches: [BatchRows], rate: Double, stream: RandomStream?) {
            spans.removeAll(keepingCapacity: true)
            var lengths: [Int] = []
            for (i, batch) in batches.enumerated() {
                if let stream, rate > 0, batch.count > 0 {
                    let kept = Swift.max(Int(Double(batch.count) * (1 - rate)), 1)
                    let scale = T(Double(batch.count) / Double(kept))
                    for crop in stream.child(UInt64(i)).subset(of: batch.count, count: kept) {
                        spans.append((batch.row(crop: crop, token: 0), batch.tokensPerCrop, scale))
                    }
                } else {
                    for crop in 0..<batch.count {
                        spans.append((batch.row(crop: crop, token: 0), batch.tokensPerCrop, 1))
                    }
                }
            }
            lengths = spans.map { $0.length }
            sequences = PackedSequences(lengths: lengths)
            rows = sequences.tokens
        }

        /// Copies the kept crops' rows of `source` [T, D] into `target` [rows, D].
        func gather(from source: UnsafePointer<T>, into target: UnsafeMutablePointer<T>, channels d: Int) {
            forEachSpan(channels: d) { span, offset in
                (target + offset * d).update(from: source + span.start * d, count: span.length * d)
            }
        }

        /// Calls `body(span, offset)` for every kept crop, `offset` its first row in the gathered
        /// layout; crops are disjoint rows, so they run on the workers (the same bits for any count).
        private func forEachSpan(channels d: Int, _ body: ((start: Int, length: Int, scale: T), Int) -> Void) {
            let starts = sequences.starts, spans = spans
            WorkQueue.run(count: spans.count, threads: rows * d >= 65_536 ? threads : 1) { i, _ in
                body(spans[i], starts[i])
            }
        }

        /// `x[kept rows] += scale * gamma * branchOutput`.
        func scatterLayerScale(
            into x: UnsafeMutablePointer<T>, branchOutput: UnsafePointer<T>,
            gamma: UnsafePointer<T>, channels d: Int
        ) {
            forEachSpan(channels: d) { span, offset in
                LayerScale.forward(
                    residual: x + span.start * d, branch: branchOutput + offset * d, gamma: gamma,
                    rows: span.length, channels: d, scale: span.scale)
            }
        }

        /// Backward of `scatterLayerScale` given the gathered residual gradient.
        func layerScaleBackward(
            dBranch: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>,
            dResidual: UnsafePointer<T>, gamma: UnsafePointer<T>, channels d: Int
        ) {
            var offset = 0
            for span in spans {
                LayerScale.backward(
                    dBranch: dBranch + offset * d, dGamma: dGamma, dResidual: dResidual + offset * d,
                    branch: output.base + offset * d, gamma: gamma, rows: span.length, channels: d,
                    scale: span.scale)
                offset += span.length
            }
        }

        /// `dx[kept rows] += gradient` (the branch input is the residual stream).
        func scatterAdd(_ gradient: UnsafePointer<T>, into dx: UnsafeMutablePointer<T>, channels d: Int) {
            forEachSpan(channels: d) { span, offset in
                T.add(dx + span.start * d, gradient + offset * d, span.length * d)
            }
        }
    }
}
