// Fully connected layer in PyTorch's weight layout.
//   forward:  out[N, O] = input[N, I] . weight[O, I]^T + bias[O]           (out: =)
//   backward: dInput[N, I] = dOut[N, O] . weight[O, I]                     (= or += by `accumulate`)
//             dWeight[O, I] += dOut^T . input;  dBias[O] += sum over rows of dOut   (always +=)
// Parameter gradients accumulate, so several crops or micro-batches add up for free.
// With a `BF16GEMM` engine (fp32 only) the three products run in bf16 with fp32 accumulation; bias
// and its gradient stay fp32. Otherwise the products and the bias passes run on `threads` workers.

import DinoCore

/// `y = x W^T + b`, forward and backward.
public enum Linear {
    /// Computes `out = input . weight^T + bias` for `rows` rows.
    public static func forward<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        rows: Int, inFeatures: Int, outFeatures: Int, engine: BF16GEMM? = nil, threads: Int = 1
    ) {
        guard rows > 0 else { return }
        if let bias {
            WorkQueue.forEachChunk(count: rows, threads: threads, minimumChunk: Swift.max(1, 16_384 / outFeatures)) {
                for r in $0 { (out + r * outFeatures).update(from: bias, count: outFeatures) }
            }
        }
        T.gemm(
            transposeA: false, transposeB: true, m: rows, n: outFeatures, k: inFeatures, a: input, lda: inFeatures,
            b: weight, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: out, ldc: outFeatures, engine: engine,
            threads: threads)
    }

    /// Backpropagates `dOut` into `dInput` (if given), `dWeight` and `dBias`.
    public static func backward<T: KernelScalar>(
        dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?,
        dOut: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>,
        rows: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false, engine: BF16GEMM? = nil,
        threads: Int = 1
    ) {
        guard rows > 0 else { return }
        if let dInput {
            T.gemm(
                transposeA: false, transposeB: false, m: rows, n: inFeatures, k: outFeatures, a: dOut,
                lda: outFeatures, b: weight, ldb: inFeatures, beta: accumulate ? 1 : 0, c: dInput, ldc: inFeatures,
                engine: engine, threads: threads)
        }
        T.gemm(
            transposeA: true, transposeB: false, m: outFeatures, n: inFeatures, k: rows, a: dOut, lda: outFeatures,
            b: input, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures, engine: engine, threads: threads)
        if let dBias {
            // Strips of 64 columns, each summed over all rows in row order by one worker.
            let strips = (outFeatures + 63) / 64
            WorkQueue.run(count: strips, threads: rows * outFeatures >= 65_536 ? threads : 1) { strip, _ in
                let first = strip * 64, columns = Swift.min(64, outFeatures - first)
                T.addColumnSums(dBias + first, dOut + first, rows: rows, columns: columns, stride: outFeatures)
            }
        }
    }
}
