// The DINO / iBOT projection head (layers/dino_head.py), forward and backward.
//   x [n, D] -> MLP: Linear(D, hidden), GELU, [Linear(hidden, hidden), GELU] x (layers - 2),
//   Linear(hidden, bottleneck)   (one layer: Linear(D, bottleneck))
//   -> z / max(||z||, 1e-12) -> logits [n, K] = zn . W^T, W_k = g_k v_k / ||v_k|| (weight norm, no bias)
// Parameters, official names: unit 0 the MLP, mlp.0.weight [hidden, D], mlp.0.bias, mlp.2.*, mlp.4.*
// (mlp.weight / mlp.bias with one layer); then the last layer, last_layer.weight_g [K, 1] and
// last_layer.weight_v [K, bottleneck], in units of at most `prototypesPerUnit` prototypes (rows), each
// holding its rows of both tensors (pieces named last_layer.weight_v[a:b]; one piece keeps the plain
// name). The sharder gathers one unit at a time, so a 131072 x 384 last layer (201 MB) is never whole.
// Init: MLP weights truncated normal 0.02, biases 0; weight_v PyTorch's Linear default
// U(-1/sqrt(bottleneck), 1/sqrt(bottleneck)); weight_g 1.
// Backward: dX [n, D] is written (=); parameter gradients are formed in scratch and added to the
// store's buffer in one pass (running backward twice gives exactly twice the gradients).
// W is never formed: logits = (zn . v^T) scaled per column by s_k = g_k / ||v_k||, and backward
// scales dLogits' columns instead. With 65536-131072 prototypes W and dW were [K, bottleneck]
// each, per head and per teacher head: ~1 GB a rank for ViT-L/14's two heads. Forward computes the
// logits' columns unit by unit; backward walks the units in reverse, each unit's dW formed in its
// gradient buffer and dzn summed over units.

import DinoCore
import DinoKernels

/// The shape of a projection head.
public struct HeadArchitecture: Sendable, Equatable {
    public var inDim: Int, hidden: Int, bottleneck: Int, layers: Int, prototypes: Int
    /// Prototypes (last-layer rows) per parameter unit.
    public var prototypesPerUnit: Int

    /// `prototypesPerUnit` 0 picks the default: the largest power of two whose rows of weight_v and
    /// weight_g fit in 2^23 floats (32 MiB), about the size of a ViT-L block.
    public init(inDim: Int, hidden: Int, bottleneck: Int, layers: Int, prototypes: Int, prototypesPerUnit: Int = 0) {
        precondition(layers >= 1, "a head has at least one layer")
        self.inDim = inDim
        self.hidden = hidden
        self.bottleneck = bottleneck
        self.layers = layers
        self.prototypes = prototypes
        var rows = 1
        while 2 * rows * (bottleneck + 1) <= 1 << 23 { rows *= 2 }
        self.prototypesPerUnit = prototypesPerUnit > 0 ? prototypesPerUnit : rows
    }

    /// The prototype rows of each last-layer unit (units 1...).
    public var lastLayerRows: [Range<Int>] {
        stride(from: 0, to: prototypes, by: prototypesPerUnit).map {
            $0..<Swift.min(prototypes, $0 + prototypesPerUnit)
        }
    }

    /// Input and output widths of each MLP layer.
    public var mlpShapes: [(inF: Int, outF: Int)] {
        if layers == 1 { return [(inDim, bottleneck)] }
        return [(inDim, hidden)] + Array(repeating: (hidden, hidden), count: layers - 2) + [(hidden, bottleneck)]
    }

    /// The head's tensors: the MLP in unit 0, the last layer's rows in units 1...
    public func table() -> TensorTable {
        var table = TensorTable()
        var cursor = 0
        func add(
            _ name: String, _ shape: [Int], _ initialization: ParameterInit, of tensor: (String, [Int], Int)? = nil
        ) {
            let entry = ParameterEntry(
                name: name, shape: shape, unit: table.units.count, offset: cursor, initialization: initialization,
                tensor: tensor?.0, tensorShape: tensor?.1, tensorOffset: tensor?.2 ?? 0)
            table.append(entry)
            cursor += entry.count
        }
        for (i, shape) in mlpShapes.enumerated() {
            let prefix = layers == 1 ? "mlp" : "mlp.\(2 * i)"
            add(prefix + ".weight", [shape.outF, shape.inF], .truncatedNormal(std: 0.02))
            add(prefix + ".bias", [shape.outF], .constant(0))
        }
        table.units.append(ParameterUnit(name: "mlp", count: cursor, blocks: 0..<0))
        let pieces = lastLayerRows
        for rows in pieces {
            cursor = 0
            let suffix = pieces.count == 1 ? "" : "[\(rows.lowerBound):\(rows.upperBound)]"
            add(
                "last_layer.weight_g" + suffix, [rows.count, 1], .constant(1),
                of: ("last_layer.weight_g", [prototypes, 1], rows.lowerBound))
            add(
                "last_layer.weight_v" + suffix, [rows.count, bottleneck],
                .uniform(bound: 1 / Double(bottleneck).squareRoot()),
                of: ("last_layer.weight_v", [prototypes, bottleneck], rows.lowerBound * bottleneck))
            table.units.append(ParameterUnit(name: "last_layer" + suffix, count: cursor, blocks: 0..<0))
        }
        return table
    }
}

/// A projection head's computation; parameters come from a store holding the head's units.
public final class DinoHead<T: KernelScalar>: BF16Computing {
    public let architecture: HeadArchitecture
    public let table: TensorTable
    /// Runs the MLP and last-layer GEMMs in bf16 when set.
    public var bf16: BF16GEMM? = nil
    private let offsets: [(weight: Int, bias: Int)]
    /// The prototype rows of last-layer unit 1 + i (weight_g's rows at offset 0, weight_v's after them).
    private let pieces: [Range<Int>]
    private var rows = 0
    // Saved from the last forward.
    private var layerInputs: [GrowableBuffer<T>] = []  // input of each MLP layer (the activated output of the previous)
    private var preActivations: [GrowableBuffer<T>] = []  // pre-GELU output of each hidden layer
    private let bottleneckOut = GrowableBuffer<T>(), normalized = GrowableBuffer<T>(), norms = GrowableBuffer<T>()
    private let columnScale = GrowableBuffer<T>(), rowNorms = GrowableBuffer<T>()
    private let logits = GrowableBuffer<T>(), scaledGradient = GrowableBuffer<T>()
    private let scratchA = GrowableBuffer<T>(), scratchB = GrowableBuffer<T>()
    /// Where each unit's gradient accumulates (see UnitGradient).
    private let unitGradient = UnitGradient<T>()

    /// Workers for the GEMMs (OpenBLAS itself runs on one thread; see ParallelGEMM).
    public let threads: Int

    public init(_ architecture: HeadArchitecture, threads: Int = 1) {
        self.architecture = architecture
        self.threads = threads
        let table = architecture.table()
        self.table = table
        offsets = architecture.mlpShapes.indices.map { i in
            let prefix = architecture.layers == 1 ? "mlp" : "mlp.\(2 * i)"
            return (
                table.entry(named: prefix + ".weight")?.offset ?? 0, table.entry(named: prefix + ".bias")?.offset ?? 0
            )
        }
        pieces = architecture.lastLayerRows
        layerInputs = architecture.mlpShapes.map { _ in GrowableBuffer<T>() }
        preActivations = architecture.mlpShapes.map { _ in GrowableBuffer<T>() }
    }

    /// Bytes held: saved layer inputs and pre-activations, logits, gradients and scratch.
    public var bytes: Int {
        let saved = (layerInputs + preActivations).reduce(0) { $0 + $1.bytes }
        let buffers = [
            bottleneckOut, normalized, norms, columnScale, rowNorms, logits, scaledGradient, scratchA, scratchB,
        ]
        return saved + buffers.reduce(0) { $0 + $1.bytes } + unitGradient.bytes
    }

    /// Logits [rows, K] of the last forward.
    public var output: UnsafePointer<T> { UnsafePointer(logits.base) }

    /// The L2-normalised bottleneck outputs [rows, bottleneck] of the last forward (the vectors the
    /// prototypes are compared with).
    public var normalizedBottleneck: UnsafePointer<T> { UnsafePointer(normalized.base) }

    /// Computes logits for `rows` input rows [rows, inDim].
    public func forward(_ input: UnsafePointer<T>, rows: Int, store: any ParameterStore<T>) throws {
        self.rows = rows
        let a = architecture, shapes = a.mlpShapes
        let p = try store.parameters(unit: 0)
        var current = UnsafePointer(input)
        for (i, shape) in shapes.enumerated() {
            let saved = layerInputs[i].reserve(rows * shape.inF)
            saved.update(from: current, count: rows * shape.inF)
            let out = preActivations[i].reserve(rows * shape.outF)
            Linear.forward(
                out: out, input: saved, weight: p + offsets[i].weight, bias: p + offsets[i].bias, rows: rows,
                inFeatures: shape.inF, outFeatures: shape.outF, engine: bf16, threads: threads)
            if i < shapes.count - 1 {
                let activated = scratchA.reserve(rows * shape.outF)
                GELU.forward(out: activated, input: out, count: rows * shape.outF)
                current = UnsafePointer(activated)
            } else {
                bottleneckOut.reserve(rows * shape.outF).update(from: out, count: rows * shape.outF)
            }
        }
        try store.release(unit: 0)
        let k = a.prototypes, b = a.bottleneck
        let zn = normalized.reserve(rows * b)
        L2Normalize.forward(
            out: zn, norms: norms.reserve(rows), input: bottleneckOut.base, rows: rows, channels: b,
            epsilon: T(1e-12))
        // Weight norm as a column scale: logits = (zn . v^T) * s, s_k = g_k / ||v_k||, unit by unit.
        let vNorms = rowNorms.reserve(k), scale = columnScale.reserve(k)
        let out = logits.reserve(rows * k)
        for (i, piece) in pieces.enumerated() {
            let p = try store.parameters(unit: 1 + i)
            let v = p + piece.count
            forEachRow(piece.count, width: b) { row in
                let norm = T.dot(v + row * b, v + row * b, b).squareRoot()
                vNorms[piece.lowerBound + row] = norm
                scale[piece.lowerBound + row] = p[row] / norm
            }
            T.gemm(
                transposeA: false, transposeB: true, m: rows, n: piece.count, k: b, a: zn, lda: b, b: v, ldb: b,
                beta: 0, c: out + piece.lowerBound, ldc: k, engine: bf16, threads: threads)
            try store.release(unit: 1 + i)
        }
        forEachRow(rows, width: k) { r in T.multiply(out + r * k, out + r * k, scale, k) }
    }

    /// Backpropagates `dLogits` [rows, K]; writes `dInput` [rows, inDim] and accumulates parameter gradients.
    public func backward(
        _ dLogits: UnsafePointer<T>, dInput: UnsafeMutablePointer<T>, store: any ParameterStore<T>
    ) throws {
        let a = architecture, shapes = a.mlpShapes, k = a.prototypes, b = a.bottleneck
        let vNorms = rowNorms.base, scale = UnsafePointer(columnScale.base)
        let dzn = scratchB.reserve(rows * Swift.max(b, maxWidth))
        // Last layer, unit by unit in reverse: dW [piece, b] = dLogits[:, piece]^T zn, formed in dv's
        // place and turned into dv row by row; dzn += (dLogits[:, piece] * s) v.
        for (i, piece) in pieces.enumerated().reversed() {
            let unit = 1 + i
            let p = try store.parameters(unit: unit)
            let g = beginUnitGradient(unit, store: store)
            let v = p + piece.count, dW = g + piece.count
            T.gemm(
                transposeA: true, transposeB: false, m: piece.count, n: b, k: rows, a: dLogits + piece.lowerBound,
                lda: k, b: normalized.base, ldb: b, beta: 0, c: dW, ldc: b, engine: bf16, threads: threads)
            forEachRow(piece.count, width: b) { row in
                // W = g v / |v|: dg = dW . v / |v|;  dv = (g / |v|) (dW - (dW . v^) v^), v^ = v / |v|.
                let vRow = v + row * b, dWRow = dW + row * b
                let norm = vNorms[piece.lowerBound + row]
                let projection = T.dot(dWRow, vRow, b) / norm
                g[row] += projection
                let rowScale = p[row] / norm
                T.linearCombination(dWRow, dWRow, rowScale, vRow, -rowScale * projection / norm, b)
            }
            let scaled = scaledGradient.reserve(rows * piece.count), width = piece.count
            forEachRow(rows, width: width) { r in
                T.multiply(scaled + r * width, dLogits + r * k + piece.lowerBound, scale + piece.lowerBound, width)
            }
            T.gemm(
                transposeA: false, transposeB: false, m: rows, n: b, k: width, a: scaled, lda: width, b: v, ldb: b,
                beta: i == pieces.count - 1 ? 0 : 1, c: dzn, ldc: b, engine: bf16, threads: threads)
            try store.release(unit: unit)
            try finishUnitGradient(unit, store: store)
        }
        let dz = scratchA.reserve(rows * maxWidth)
        L2Normalize.backward(
            dInput: dz, dOut: dzn, out: normalized.base, norms: norms.base, rows: rows, channels: b,
            epsilon: T(1e-12))
        // MLP in reverse: dz is the gradient of the current layer's output.
        let p = try store.parameters(unit: 0)
        let g = beginUnitGradient(0, store: store)
        var gradient = dz, spare = dzn
        for i in stride(from: shapes.count - 1, through: 0, by: -1) {
            let shape = shapes[i]
            if i < shapes.count - 1 {
                // Through the GELU that followed layer i.
                GELU.backward(dInput: spare, dOut: gradient, input: preActivations[i].base, count: rows * shape.outF)
                swap(&gradient, &spare)
            }
            let target = i == 0 ? dInput : spare
            Linear.backward(
                dInput: target, dWeight: g + offsets[i].weight, dBias: g + offsets[i].bias, dOut: gradient,
                input: layerInputs[i].base, weight: p + offsets[i].weight, rows: rows, inFeatures: shape.inF,
                outFeatures: shape.outF, engine: bf16, threads: threads)
            if i > 0 { swap(&gradient, &spare) }
        }
        try store.release(unit: 0)
        try finishUnitGradient(0, store: store)
    }

    private func beginUnitGradient(_ unit: Int, store: any ParameterStore<T>) -> UnsafeMutablePointer<T> {
        unitGradient.begin(unit, count: table.units[unit].count, store: store)
    }

    private func finishUnitGradient(_ unit: Int, store: any ParameterStore<T>) throws {
        try unitGradient.finish(unit, count: table.units[unit].count, store: store)
    }

    /// Runs `body(row)` for rows 0..<count (each `width` elements of work, written only by its own
    /// call) on the workers: the same bits for any thread count.
    private func forEachRow(_ count: Int, width: Int, _ body: (Int) -> Void) {
        WorkQueue.forEachChunk(count: count, threads: threads, minimumChunk: Swift.max(1, 32_768 / Swift.max(width, 1)))
        {
            for row in $0 { body(row) }
        }
    }

    private var maxWidth: Int {
        architecture.mlpShapes.reduce(architecture.bottleneck) { Swift.max($0, $1.inF, $1.outF) }
    }
}
