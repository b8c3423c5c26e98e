// Pointwise activations of the FFNs.
//   GELU (exact erf form, nn.GELU()):  out = 0.5 x (1 + erf(x / sqrt 2));   dInput = dOut * GELU'(x)  (=)
//   SwiGLU (layers/swiglu_ffn.py):     x12[R, 2H] -> hidden[R, H] = silu(x12[:, :H]) * x12[:, H:]
//                                      dX12 = [dOut * x2 * silu'(x1), dOut * silu(x1)]              (=)
// float32 erf: Abramowitz-Stegun 7.1.26 (4.8e-7 absolute with float32 rounding), exp: FastMath.exp.

import DinoCore

/// Exact-erf GELU, forward and backward over `count` contiguous values.
/// `threads` > 1 splits the values into contiguous ranges run in parallel (same result bits).
public enum GELU {
    public static func forward<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, input: UnsafePointer<T>, count: Int,
        threads: Int = 1
    ) {
        WorkQueue.forEachChunk(count: count, threads: threads) { range in
            T.gelu(out + range.lowerBound, input + range.lowerBound, range.count)
        }
    }

    public static func backward<T: KernelScalar>(
        dInput: UnsafeMutablePointer<T>, dOut: UnsafePointer<T>,
        input: UnsafePointer<T>, count: Int, threads: Int = 1
    ) {
        WorkQueue.forEachChunk(count: count, threads: threads) { range in
            let start = range.lowerBound
            T.geluBackward(dInput + start, dOut + start, input + start, range.count)
        }
    }
}

/// The SwiGLU gate between `w12` and `w3`.
public enum SwiGLU {
    /// The official hidden width: `h0 = int(D * mlpRatio)`, then `((int(h0 * 2 / 3) + 7) / 8) * 8`.
    public static func hiddenFeatures(embedDim: Int, mlpRatio: Double = 4) -> Int {
        let h0 = Int(Double(embedDim) * mlpRatio)
        return (Int(Double(h0) * 2.0 / 3.0) + 7) / 8 * 8
    }

    /// `threads` > 1 runs ranges of rows in parallel (same result bits).
    public static func forward<T: KernelScalar>(
        hidden: UnsafeMutablePointer<T>, x12: UnsafePointer<T>, rows: Int,
        hiddenFeatures h: Int, threads: Int = 1
    ) {
        WorkQueue.forEachChunk(count: rows, threads: threads, minimumChunk: Swift.max(1, 32_768 / Swift.max(h, 1))) {
            range in
            for r in range { T.swiglu(hidden + r * h, x12 + r * 2 * h, x12 + r * 2 * h + h, h) }
        }
    }

    public static func backward<T: KernelScalar>(
        dX12: UnsafeMutablePointer<T>, dHidden: UnsafePointer<T>,
        x12: UnsafePointer<T>, rows: Int, hiddenFeatures h: Int, threads: Int = 1
    ) {
        WorkQueue.forEachChunk(count: rows, threads: threads, minimumChunk: Swift.max(1, 32_768 / Swift.max(h, 1))) {
            range in
            for r in range {
                T.swigluBackward(
                    dX12 + r * 2 * h, dX12 + r * 2 * h + h, dHidden + r * h, x12 + r * 2 * h,
                    x12 + r * 2 * h + h, h)
            }
        }
    }
}
