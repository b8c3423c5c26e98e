// Patch embedding: Conv2d(3, D, kernel p, stride p) as one GEMM over unfolded patches.
//   images [B, 3, H, W] (NCHW, as PyTorch) -> columns [B * N, 3 * p * p] (N = (H/p) (W/p), patches
//   row-major over the grid; each column row ordered (channel, ky, kx) = the flattening of the
//   PyTorch weight [D, 3, p, p]) -> out [B * N, D] = columns . weight^T + bias.
//   backward: dWeight [D, 3 p p] += dOut^T . columns; dBias += column sums. Images need no gradient.

/// The ViT patch embedding.
public enum PatchEmbed {
    /// Unfolds `images` into `columns` and projects them into `out`.
    public static func forward<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, columns: UnsafeMutablePointer<T>, images: UnsafePointer<T>,
        weight: UnsafePointer<T>, bias: UnsafePointer<T>, batch: Int, height: Int, width: Int, patch: Int,
        embedDim: Int, engine: BF16GEMM? = nil, threads: Int = 1
    ) {
        precondition(
            height % patch == 0 && width % patch == 0, "image \(height)x\(width) is not a multiple of patch \(patch)")
        unfold(columns: columns, images: images, batch: batch, height: height, width: width, patch: patch)
        let rows = batch * (height / patch) * (width / patch)
        Linear.forward(
            out: out, input: columns, weight: weight, bias: bias, rows: rows,
            inFeatures: 3 * patch * patch, outFeatures: embedDim, engine: engine, threads: threads)
    }

    /// Accumulates the weight and bias gradients from `dOut` and the saved `columns`.
    public static func backward<T: KernelScalar>(
        dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>, dOut: UnsafePointer<T>,
        columns: UnsafePointer<T>, weight: UnsafePointer<T>, rows: Int, patch: Int, embedDim: Int,
        engine: BF16GEMM? = nil, threads: Int = 1
    ) {
        Linear.backward(
            dInput: nil, dWeight: dWeight, dBias: dBias, dOut: dOut, input: columns, weight: weight,
            rows: rows, inFeatures: 3 * patch * patch, outFeatures: embedDim, engine: engine, threads: threads)
    }

    /// `columns[(b, gy, gx), (c, ky, kx)] = images[b, c, gy * p + ky, gx * p + kx]`.
    public static func unfold<T>(
        columns: UnsafeMutablePointer<T>, images: UnsafePointer<T>, batch: Int, height: Int,
        width: Int, patch p: Int
    ) {
        let gridH = height / p, gridW = width / p, k = 3 * p * p
        for b in 0..<batch {
            for gy in 0..<gridH {
                for gx in 0..<gridW {
                    var target = columns + ((b * gridH + gy) * gridW + gx) * k
                    for c in 0..<3 {
                        for ky in 0..<p {
                            let source = images + ((b * 3 + c) * height + gy * p + ky) * width + gx * p
                            target.update(from: source, count: p)
                            target += p
                        }
                    }
                }
            }
        }
    }
}
