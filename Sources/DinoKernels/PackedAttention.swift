// Memory-efficient multi-head attention over packed variable-length sequences, forward and backward.
//
// Shapes (T tokens of all sequences back to back, H heads, D head dim, C = H * D):
//   qkv   [T, 3, H, D]  the qkv projection output, read in place (row stride 3C)
//   out   [T, H, D]     attention output, written (=); the proj layer reads it as [T, C]
//   lse   [T, H]        log-sum-exp of each (row, head), written (=), saved for backward
//   dOut  [T, H, D]     gradient of out
//   dQKV  [T, 3, H, D]  gradient of qkv, written (=), in the layout the qkv linear backward reads
// Sequence s covers rows starts[s] ..< starts[s+1]; a token attends to the tokens of its own sequence
// only (block-diagonal mask), so no tile ever spans two sequences and nothing is masked.
//
// Work item = (sequence, head), items taken longest first by `threads` workers from a shared
// counter. An item's arithmetic does not depend on which worker runs it, and OpenBLAS runs serially
// inside items, so results are bitwise identical for any thread count. Per item: K^T (and V^T in
// backward) packed once into a [D, L] scratch so every GEMM streams contiguous rows; queries in
// blocks of `queryBlock` rows; keys in blocks of `keyBlock` with an online softmax (running max m,
// sum l, unnormalised output rescaled by exp(m_old - m_new)) when L > keyBlock. The largest
// temporary is one queryBlock x keyBlock tile per worker: extra memory is O(T * H) (the lse) plus
// O(D * L_max + tile) per worker.
// Backward recomputes P = exp(scale * Q K^T - lse) tile by tile:
//   dV += P^T dO;  dP = dO V^T;  dS = P * (dP - rowsum(dO * O));  dQ += scale dS K;  dK += scale dS^T Q
// FLOPs per head of a sequence of length L: forward 4 L^2 D; backward 10 L^2 D (five GEMMs).

import DinoCore

/// Cumulative sequence starts of a packed batch: sequence s covers rows starts[s] ..< starts[s+1].
public struct PackedSequences: Sendable, Equatable {
    public let starts: [Int]

    /// Packs sequences of the given lengths back to back.
    public init(lengths: [Int]) {
        precondition(lengths.allSatisfy { $0 >= 0 }, "sequence lengths must be >= 0")
        var starts = [0]
        starts.reserveCapacity(lengths.count + 1)
        for length in lengths { starts.append(starts[starts.count - 1] + length) }
        self.starts = starts
    }

    /// Number of sequences.
    public var count: Int { starts.count - 1 }
    /// Total number of tokens.
    public var tokens: Int { starts[starts.count - 1] }
    /// Length of sequence `s`.
    @inlinable public func length(_ s: Int) -> Int { starts[s + 1] - starts[s] }
    /// The longest sequence.
    public var maxLength: Int { (0..<count).reduce(0) { Swift.max($0, length($1)) } }
}

/// Tile sizes of the packed attention kernel.
public struct AttentionTiling: Sendable, Equatable {
    /// Query rows per tile.
    public var queryBlock: Int
    /// Keys per tile; longer sequences run the online softmax over several key tiles.
    public var keyBlock: Int

    public init(queryBlock: Int, keyBlock: Int) {
        precondition(queryBlock >= 1 && keyBlock >= 1, "tile sizes must be positive")
        self.queryBlock = queryBlock
        self.keyBlock = keyBlock
    }

    /// 64 x 512: the score tile (128 KiB) stays in L2; 224 px and 98 px crops need one key tile.
    public static let standard = AttentionTiling(queryBlock: 64, keyBlock: 512)
}

/// Reusable per-worker scratch for `PackedAttention`; grows to the largest call and is then reused,
/// so steady-state calls allocate nothing.
public final class AttentionWorkspace<T: KernelScalar>: @unchecked Sendable {
    public let tiling: AttentionTiling
    final class Worker: @unchecked Sendable {
        var keysT = GrowableBuffer<T>()  // [D, L]
        var valuesT = GrowableBuffer<T>()  // [D, L] (backward)
        var scores = GrowableBuffer<T>()  // [queryBlock, keyBlock]: S, then P
        var gradScores = GrowableBuffer<T>()  // [queryBlock, keyBlock]: dP, then dS (backward)
        var rowMax = GrowableBuffer<T>()  // [queryBlock]
        var rowSum = GrowableBuffer<T>()  // [queryBlock]; backward: rowsum(dO * O)
    }
    var workers: [Worker] = []
    var order: [Int32] = []  // work items, longest first

    public init(tiling: AttentionTiling = .standard) {
        self.tiling = tiling
    }

    /// Bytes of scratch currently held (the kernel's extra memory besides lse).
    public var bytes: Int {
        workers.reduce(0) { total, w in
            total + w.keysT.bytes + w.valuesT.bytes + w.scores.bytes + w.gradScores.bytes + w.rowMax.bytes
                + w.rowSum.bytes
        } + order.capacity * MemoryLayout<Int32>.stride
    }

    func prepare(threads: Int, headDim: Int, maxLength: Int, backward: Bool) {
        while workers.count < threads { workers.append(Worker()) }
        let tile = tiling.queryBlock * Swift.min(tiling.keyBlock, Swift.max(1, maxLength))
        for w in workers.prefix(threads) {
            w.keysT.reserve(headDim * maxLength)
            if backward { w.valuesT.reserve(headDim * maxLength) }
            w.scores.reserve(tile)
            if backward { w.gradScores.reserve(tile) }
            w.rowMax.reserve(tiling.queryBlock)
            w.rowSum.reserve(tiling.queryBlock)
        }
    }

    /// Fills `order` with (sequence * heads + head) items, longest sequence first, ties by index.
    func schedule(_ sequences: PackedSequences, heads: Int) {
        order.removeAll(keepingCapacity: true)
        for s in 0..<sequences.count where sequences.length(s) > 0 {
            for h in 0..<heads { order.append(Int32(s * heads + h)) }
        }
        // Shell sort in place (no allocation): by length descending, then item index ascending.
        let starts = sequences.starts
        func before(_ a: Int32, _ b: Int32) -> Bool {
            let la = starts[Int(a) / heads + 1] - starts[Int(a) / heads]
            let lb = starts[Int(b) / heads + 1] - starts[Int(b) / heads]
            return la != lb ? la > lb : a < b
        }
        var gap = order.count / 2
        while gap > 0 {
            for i in gap..<order.count {
                let item = order[i]
                var j = i
                while j >= gap && before(item, order[j - gap]) {
                    order[j] = order[j - gap]
                    j -= gap
                }
                order[j] = item
            }
            gap /= 2
        }
    }
}

/// Block-diagonal (per-sequence) multi-head attention without a T x T matrix.
public enum PackedAttention {
    // The public entry points are concrete so that the generic implementation is specialised (and
    // its row operations inlined) inside this module; a generic public call would run unspecialised.

    /// Computes `out` and `lse` from `qkv` for every sequence of `sequences` (float32).
    public static func forward(
        out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>,
        sequences: PackedSequences, heads: Int, headDim: Int, workspace: AttentionWorkspace<Float>, threads: Int = 1
    ) {
        forwardImplementation(
            out: out, lse: lse, qkv: qkv, sequences: sequences, heads: heads, headDim: headDim,
            workspace: workspace, threads: threads)
    }

    /// Computes `out` and `lse` from `qkv` (float64, for gradient checks).
    public static func forward(
        out: UnsafeMutablePointer<Double>, lse: UnsafeMutablePointer<Double>, qkv: UnsafePointer<Double>,
        sequences: PackedSequences, heads: Int, headDim: Int, workspace: AttentionWorkspace<Double>, threads: Int = 1
    ) {
        forwardImplementation(
            out: out, lse: lse, qkv: qkv, sequences: sequences, heads: heads, headDim: headDim,
            workspace: workspace, threads: threads)
    }

    /// Computes `dQKV` (overwritten) from `dOut` and the saved `out` and `lse` (float32).
    public static func backward(
        dQKV: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
        out: UnsafePointer<Float>, lse: UnsafePointer<Float>, sequences: PackedSequences, heads: Int, headDim: Int,
        workspace: AttentionWorkspace<Float>, threads: Int = 1
    ) {
        backwardImplementation(
            dQKV: dQKV, dOut: dOut, qkv: qkv, out: out, lse: lse, sequences: sequences,
            heads: heads, headDim: headDim, workspace: workspace, threads: threads)
    }

    /// Computes `dQKV` (overwritten) from `dOut` and the saved `out` and `lse` (float64).
    public static func backward(
        dQKV: UnsafeMutablePointer<Double>, dOut: UnsafePointer<Double>, qkv: UnsafePointer<Double>,
        out: UnsafePointer<Double>, lse: UnsafePointer<Double>, sequences: PackedSequences, heads: Int, headDim: Int,
        workspace: AttentionWorkspace<Double>, threads: Int = 1
    ) {
        backwardImplementation(
            dQKV: dQKV, dOut: dOut, qkv: qkv, out: out, lse: lse, sequences: sequences,
            heads: heads, headDim: headDim, workspace: workspace, threads: threads)
    }

    static func forwardImplementation<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, lse: UnsafeMutablePointer<T>, qkv: UnsafePointer<T>,
        sequences: PackedSequences, heads: Int, headDim: Int, workspace: AttentionWorkspace<T>, threads: Int
    ) {
        let geometry = Geometry(heads: heads, headDim: headDim)
        workspace.prepare(threads: threads, headDim: headDim, maxLength: sequences.maxLength, backward: false)
        workspace.schedule(sequences, heads: heads)
        let io = Pointers(out: out, lse: lse, qkv: qkv, dOut: nil, dQKV: nil)
        run(workspace: workspace, threads: threads) { item, worker in
            forwardItem(
                item, sequences: sequences, geometry: geometry, io: io, worker: worker,
                tiling: workspace.tiling)
        }
    }

    static func backwardImplementation<T: KernelScalar>(
        dQKV: UnsafeMutablePointer<T>, dOut: UnsafePointer<T>, qkv: UnsafePointer<T>, out: UnsafePointer<T>,
        lse: UnsafePointer<T>, sequences: PackedSequences, heads: Int, headDim: Int,
        workspace: AttentionWorkspace<T>, threads: Int
    ) {
        let geometry = Geometry(heads: heads, headDim: headDim)
        workspace.prepare(threads: threads, headDim: headDim, maxLength: sequences.maxLength, backward: true)
        workspace.schedule(sequences, heads: heads)
        let io = Pointers(
            out: UnsafeMutablePointer(mutating: out), lse: UnsafeMutablePointer(mutating: lse),
            qkv: qkv, dOut: dOut, dQKV: dQKV)
        run(workspace: workspace, threads: threads) { item, worker in
            backwardItem(
                item, sequences: sequences, geometry: geometry, io: io, worker: worker,
                tiling: workspace.tiling)
        }
    }

    /// Forward FLOPs (4 L^2 D per head and sequence); backward is 2.5 times this.
    public static func forwardFLOPs(sequences: PackedSequences, heads: Int, headDim: Int) -> Double {
        (0..<sequences.count).reduce(0.0) { total, s in
            let l = Double(sequences.length(s))
            return total + 4 * l * l * Double(headDim) * Double(heads)
        }
    }

    // MARK: - Scheduling

    struct Geometry {
        let heads: Int, headDim: Int, channels: Int, qkvStride: Int
        let scale: Double
        init(heads: Int, headDim: Int) {
            precondition(heads >= 1 && headDim >= 1, "heads and head dim must be positive")
            self.heads = heads
            self.headDim = headDim
            channels = heads * headDim
            qkvStride = 3 * heads * headDim
            scale = 1 / Double(headDim).squareRoot()
        }
    }

    struct Pointers<T>: @unchecked Sendable {
        let out: UnsafeMutablePointer<T>
        let lse: UnsafeMutablePointer<T>
        let qkv: UnsafePointer<T>
        let dOut: UnsafePointer<T>?
        let dQKV: UnsafeMutablePointer<T>?
    }

    private static func run<T>(
        workspace: AttentionWorkspace<T>, threads: Int,
        _ body: (Int, AttentionWorkspace<T>.Worker) -> Void
    ) {
        let order = workspace.order, workers = workspace.workers
        // Parallelism comes from the work items; OpenBLAS inside them stays on one thread, so the two
        // levels do not oversubscribe the cores and every GEMM takes the same (serial) driver.
        BLAS.withThreadCount(1) {
            WorkQueue.run(count: order.count, threads: threads) { index, worker in
                body(Int(order[index]), workers[worker])
            }
        }
    }

    // MARK: - Forward

    @inline(__always)
    private static func forwardItem<T: KernelScalar>(
        _ item: Int, sequences: PackedSequences, geometry g: Geometry, io: Pointers<T>,
        worker: AttentionWorkspace<T>.Worker, tiling: AttentionTiling
    ) {
        let s = item / g.heads, h = item % g.heads
        let start = sequences.starts[s], length = sequences.length(s)
        let ld = g.qkvStride, d = g.headDim
        let q = io.qkv + start * ld + h * d
        let k = q + g.channels, v = q + 2 * g.channels
        let o = io.out + start * g.channels + h * d
        let lse = io.lse + start * g.heads + h
        let keysT = worker.keysT.base, scores = worker.scores.base
        let rowMax = worker.rowMax.base, rowSum = worker.rowSum.base
        let bk = Swift.min(tiling.keyBlock, length)
        let scale = T(g.scale)

        transpose(k, rows: length, columns: d, stride: ld, into: keysT)
        var q0 = 0
        while q0 < length {
            let rows = Swift.min(tiling.queryBlock, length - q0)
            var k0 = 0
            while k0 < length {
                let cols = Swift.min(bk, length - k0)
                // S = scale * Q K^T for this tile.
                T.gemm(
                    transposeA: false, transposeB: false, m: rows, n: cols, k: d, alpha: scale,
                    a: q + q0 * ld, lda: ld, b: keysT + k0, ldb: length, beta: 0, c: scores, ldc: bk)
                for r in 0..<rows {
                    let row = scores + r * bk
                    let tileMax = T.rowMax(row, cols)
                    if k0 == 0 {
                        rowMax[r] = tileMax
                        rowSum[r] = T.expSubtractSum(row, cols, tileMax)
                    } else {
                        let newMax = Swift.max(rowMax[r], tileMax)
                        let correction = T.exp(rowMax[r] - newMax)
                        rowSum[r] = rowSum[r] * correction + T.expSubtractSum(row, cols, newMax)
                        rowMax[r] = newMax
                        if correction != 1 { T.scale(o + (q0 + r) * g.channels, d, correction) }
                    }
                }
                // O (unnormalised) += P V for this tile.
                T.gemm(
                    transposeA: false, transposeB: false, m: rows, n: d, k: cols, alpha: 1,
                    a: scores, lda: bk, b: v + k0 * ld, ldb: ld, beta: k0 == 0 ? 0 : 1,
                    c: o + q0 * g.channels, ldc: g.channels)
                k0 += cols
            }
            for r in 0..<rows {
                // Every row sees at least its own key, so the sum is >= 1 (the max term is exp(0)).
                T.scale(o + (q0 + r) * g.channels, d, 1 / rowSum[r])
                lse[(q0 + r) * g.heads] = rowMax[r] + T.log(rowSum[r])
            }
            q0 += rows
        }
    }

    // MARK: - Backward

    @inline(__always)
    private static func backwardItem<T: KernelScalar>(
        _ item: Int, sequences: PackedSequences, geometry g: Geometry, io: Pointers<T>,
        worker: AttentionWorkspace<T>.Worker, tiling: AttentionTiling
    ) {
        guard let dOutBase = io.dOut, let dQKVBase = io.dQKV else { return }
        let s = item / g.heads, h = item % g.heads
        let start = sequences.starts[s], length = sequences.length(s)
        let ld = g.qkvStride, d = g.headDim, c = g.channels
        let q = io.qkv + start * ld + h * d
        let k = q + c, v = q + 2 * c
        let o = UnsafePointer(io.out) + start * c + h * d
        let dO = dOutBase + start * c + h * d
        let lse = UnsafePointer(io.lse) + start * g.heads + h
        let dQ = dQKVBase + start * ld + h * d
        let dK = dQ + c, dV = dQ + 2 * c
        let keysT = worker.keysT.base, valuesT = worker.valuesT.base
        let probs = worker.scores.base, grads = worker.gradScores.base
        let rowDot = worker.rowSum.base
        let bk = Swift.min(tiling.keyBlock, length)
        let scale = T(g.scale)

        for t in 0..<length {
            let row = dQ + t * ld
            (row).setToZero(count: d)
            (row + c).setToZero(count: d)
            (row + 2 * c).setToZero(count: d)
        }
        transpose(k, rows: length, columns: d, stride: ld, into: keysT)
        transpose(v, rows: length, columns: d, stride: ld, into: valuesT)
        var q0 = 0
        while q0 < length {
            let rows = Swift.min(tiling.queryBlock, length - q0)
            for r in 0..<rows { rowDot[r] = T.dot(dO + (q0 + r) * c, o + (q0 + r) * c, d) }
            var k0 = 0
            while k0 < length {
                let cols = Swift.min(bk, length - k0)
                // P = exp(scale * Q K^T - lse), exactly normalised.
                T.gemm(
                    transposeA: false, transposeB: false, m: rows, n: cols, k: d, alpha: scale,
                    a: q + q0 * ld, lda: ld, b: keysT + k0, ldb: length, beta: 0, c: probs, ldc: bk)
                for r in 0..<rows { T.expSubtract(probs + r * bk, cols, lse[(q0 + r) * g.heads]) }
                // dV += P^T dO
                T.gemm(
                    transposeA: true, transposeB: false, m: cols, n: d, k: rows, alpha: 1,
                    a: probs, lda: bk, b: dO + q0 * c, ldb: c, beta: 1, c: dV + k0 * ld, ldc: ld)
                // dP = dO V^T, then dS = P * (dP - rowsum(dO * O))
                T.gemm(
                    transposeA: false, transposeB: false, m: rows, n: cols, k: d, alpha: 1,
                    a: dO + q0 * c, lda: c, b: valuesT + k0, ldb: length, beta: 0, c: grads, ldc: bk)
                for r in 0..<rows { T.softmaxBackward(grads + r * bk, probs + r * bk, cols, rowDot[r]) }
                // dQ += scale dS K;  dK += scale dS^T Q
                T.gemm(
                    transposeA: false, transposeB: false, m: rows, n: d, k: cols, alpha: scale,
                    a: grads, lda: bk, b: k + k0 * ld, ldb: ld, beta: 1, c: dQ + q0 * ld, ldc: ld)
                T.gemm(
                    transposeA: true, transposeB: false, m: cols, n: d, k: rows, alpha: scale,
                    a: grads, lda: bk, b: q + q0 * ld, ldb: ld, beta: 1, c: dK + k0 * ld, ldc: ld)
                k0 += cols
            }
            q0 += rows
        }
    }

    // MARK: - Packing

    /// `into[c * rows + r] = source[r * stride + c]`: a [rows, columns] strided block, transposed.
    /// Sixteen rows at a time, so the reads of a column stay in L1 and the writes are contiguous.
    @inline(__always)
    static func transpose<T>(
        _ source: UnsafePointer<T>, rows: Int, columns: Int, stride: Int,
        into target: UnsafeMutablePointer<T>
    ) {
        var r0 = 0
        while r0 < rows {
            let block = Swift.min(16, rows - r0)
            for column in 0..<columns {
                let out = target + column * rows + r0
                var from = source + r0 * stride + column
                for i in 0..<block {
                    out[i] = from.pointee
                    from += stride
                }
            }
            r0 += block
        }
    }
}
