// LayerScale fused with the residual add of a block branch (and stochastic depth's b/kept factor).
//   forward:  residual[R, C] += scale * gamma[C] * branch[R, C]
//   backward: dBranch[R, C] = scale * gamma * dResidual (=);  dGamma[C] += scale * sum_r branch * dResidual
// The residual's own gradient passes through unchanged (identity), so backward leaves dResidual alone.

/// `x + scale * gamma * f(x)`, the residual update of a pre-norm block.
public enum LayerScale {
    public static func forward<T: KernelScalar>(
        residual: UnsafeMutablePointer<T>, branch: UnsafePointer<T>,
        gamma: UnsafePointer<T>, rows: Int, channels: Int, scale: T = 1
    ) {
        for r in 0..<rows { T.addScaledProduct(residual + r * channels, gamma, branch + r * channels, channels, scale) }
    }

    public static func backward<T: KernelScalar>(
        dBranch: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>,
        dResidual: UnsafePointer<T>, branch: UnsafePointer<T>,
        gamma: UnsafePointer<T>, rows: Int, channels: Int, scale: T = 1
    ) {
        for r in 0..<rows {
            T.addScaledProductBackward(
                dBranch + r * channels, dGamma, dResidual + r * channels, branch + r * channels,
                gamma, channels, scale)
        }
    }
}
