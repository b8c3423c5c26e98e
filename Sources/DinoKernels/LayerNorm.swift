// Layer normalisation over the last dimension (eps 1e-6 in every DINOv2 model).
// Forward rows are independent, so they are shared among `threads` workers (same bits for any count).
//   forward:  out[R, C] = (x - mean) * rstd * weight + bias;  mean[R], rstd[R] saved  (all =)
//   backward: dWeight[C], dBias[C] +=;  dInput[R, C] += by default, because every LayerNorm input
//             in the ViT is the residual stream, whose gradient is already there.

import DinoCore

/// LayerNorm, forward and backward.
public enum LayerNorm {
    public static let epsilon = 1.0e-6

    /// Normalises each of `rows` rows of `channels` values; saves mean and 1/std per row.
    public static func forward<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, rstd: UnsafeMutablePointer<T>,
        input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>, rows: Int, channels: Int,
        threads: Int = 1
    ) {
        WorkQueue.forEachChunk(count: rows, threads: threads, minimumChunk: Swift.max(1, 32_768 / channels)) { range in
            for r in range {
                let stats = T.layerNormForward(
                    out + r * channels, input + r * channels, weight, bias, channels, T(epsilon))
                mean[r] = stats.mean
                rstd[r] = stats.rstd
            }
        }
    }

    /// Backpropagates `dOut`; `dInput` accumulates unless `accumulate` is false.
    public static func backward<T: KernelScalar>(
        dInput: UnsafeMutablePointer<T>, dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>,
        dOut: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, mean: UnsafePointer<T>,
        rstd: UnsafePointer<T>, rows: Int, channels: Int, accumulate: Bool = true
    ) {
        for r in 0..<rows {
            T.layerNormBackward(
                dInput + r * channels, dWeight, dBias, dOut + r * channels, input + r * channels,
                weight, mean[r], rstd[r], channels, accumulate: accumulate)
        }
    }
}
