// The baseline the packed kernel is measured against: per (sequence, head), the full L x L score
// matrix through sgemm, softmax in place, P kept for backward (as an autograd framework keeps it).
// Same layouts as PackedAttention. Benchmark-only: extra memory is sum over sequences of H * L^2
// floats for P plus one L x L scratch per worker in backward.

import DinoCore
import DinoKernels

/// Attention that materialises every sequence's probabilities (benchmark baseline).
final class MaterializedAttention: @unchecked Sendable {
    let sequences: PackedSequences
    let heads: Int, headDim: Int
    private let probabilities: UnsafeMutablePointer<Float>  // per (sequence, head): [L, L]
    private let offsets: [Int]
    private var scratch: [UnsafeMutablePointer<Float>] = []
    private let scratchCount: Int

    /// Bytes this baseline holds besides its inputs and outputs.
    var extraBytes: Int { (offsets[offsets.count - 1] + scratch.count * scratchCount) * 4 }

    init(sequences: PackedSequences, heads: Int, headDim: Int, threads: Int) {
        self.sequences = sequences
        self.heads = heads
        self.headDim = headDim
        var offsets = [0]
        for s in 0..<sequences.count {
            for _ in 0..<heads {
                offsets.append(offsets[offsets.count - 1] + sequences.length(s) * sequences.length(s))
            }
        }
        self.offsets = offsets
        probabilities = .allocate(capacity: max(1, offsets[offsets.count - 1]))
        scratchCount = max(1, sequences.maxLength * sequences.maxLength)
        for _ in 0..<max(1, threads) { scratch.append(.allocate(capacity: scratchCount)) }
    }

    deinit {
        probabilities.deallocate()
        for buffer in scratch { buffer.deallocate() }
    }

    func forward(out: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>, threads: Int) {
        let c = heads * headDim, ld = 3 * c, d = headDim
        let scale = 1 / Float(d).squareRoot()
        parallel(threads) { item, _ in
            let s = item / self.heads, h = item % self.heads
            let start = self.sequences.starts[s], l = self.sequences.length(s)
            let q = qkv + start * ld + h * d, k = q + c, v = q + 2 * c
            let p = self.probabilities + self.offsets[item]
            BLAS.sgemm(
                transposeA: false, transposeB: true, m: l, n: l, k: d, alpha: scale, a: q, lda: ld, b: k,
                ldb: ld, c: p, ldc: l)
            for r in 0..<l {
                let row = p + r * l
                let sum = Float.expSubtractSum(row, l, Float.rowMax(row, l))
                Float.scale(row, l, 1 / sum)
            }
            BLAS.sgemm(
                transposeA: false, transposeB: false, m: l, n: d, k: l, a: p, lda: l, b: v, ldb: ld,
                c: out + start * c + h * d, ldc: c)
        }
    }

    func backward(
        dQKV: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
        out: UnsafePointer<Float>, threads: Int
    ) {
        let c = heads * headDim, ld = 3 * c, d = headDim
        let scale = 1 / Float(d).squareRoot()
        parallel(threads) { item, worker in
            let s = item / self.heads, h = item % self.heads
            let start = self.sequences.starts[s], l = self.sequences.length(s)
            let q = qkv + start * ld + h * d, k = q + c, v = q + 2 * c
            let dq = dQKV + start * ld + h * d, dk = dq + c, dv = dq + 2 * c
            let o = out + start * c + h * d, g = dOut + start * c + h * d
            let p = self.probabilities + self.offsets[item], dp = self.scratch[worker]
            BLAS.sgemm(
                transposeA: true, transposeB: false, m: l, n: d, k: l, a: p, lda: l, b: g, ldb: c,
                c: dv, ldc: ld)
            BLAS.sgemm(
                transposeA: false, transposeB: true, m: l, n: l, k: d, a: g, lda: c, b: v, ldb: ld,
                c: dp, ldc: l)
            for r in 0..<l {
                Float.softmaxBackward(dp + r * l, p + r * l, l, Float.dot(g + r * c, o + r * c, d))
            }
            BLAS.sgemm(
                transposeA: false, transposeB: false, m: l, n: d, k: l, alpha: scale, a: dp, lda: l, b: k,
                ldb: ld, c: dq, ldc: ld)
            BLAS.sgemm(
                transposeA: true, transposeB: false, m: l, n: d, k: l, alpha: scale, a: dp, lda: l, b: q,
                ldb: ld, c: dk, ldc: ld)
        }
    }

    /// Runs items (sequence * heads + head) on `threads` workers.
    private func parallel(_ threads: Int, _ body: (Int, Int) -> Void) {
        WorkQueue.run(count: sequences.count * heads, threads: threads, body)
    }
}
