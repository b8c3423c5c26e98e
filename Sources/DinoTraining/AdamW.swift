// AdamW as torch.optim.AdamW (decoupled weight decay, bias-corrected moments), over flat ranges
// of parameters with one (lr, wd) per range, and global-norm gradient clipping.
//   p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps),   eps = 1e-8, t = step count
// Clipping (torch.nn.utils.clip_grad_norm_): coefficient = max / (norm + 1e-6), applied when < 1.

import DinoCore
import Foundation

/// The AdamW update of a contiguous range of parameters.
public enum AdamW {
    public static let epsilon = 1e-8

    /// One step over `count` parameters with their moments; `step` counts from 1.
    public static func update(
        parameters p: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>,
        firstMoment m: UnsafeMutablePointer<Float>, secondMoment v: UnsafeMutablePointer<Float>,
        count: Int, lr: Double, weightDecay: Double, beta1: Double, beta2: Double, step: Int,
        threads: Int = 1
    ) {
        // Element-wise, so contiguous ranges on several threads give the bits of one pass.
        WorkQueue.forEachChunk(count: count, threads: threads) { range in
            let start = range.lowerBound
            updateRange(
                parameters: p + start, gradients: g + start, firstMoment: m + start, secondMoment: v + start,
                count: range.count, lr: lr, weightDecay: weightDecay, beta1: beta1, beta2: beta2, step: step)
        }
    }

    private static func updateRange(
        parameters p: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>,
        firstMoment m: UnsafeMutablePointer<Float>, secondMoment v: UnsafeMutablePointer<Float>,
        count: Int, lr: Double, weightDecay: Double, beta1: Double, beta2: Double, step: Int
    ) {
        let decay = Float(1 - lr * weightDecay)
        // (1 - beta) is formed in double, as PyTorch's Python scalars are: Float(1) - Float(0.999)
        // would be off by 1.3e-5 relative.
        let b1 = Float(beta1), b2 = Float(beta2), c1 = Float(1 - beta1), c2 = Float(1 - beta2)
        let stepSize = Float(lr / (1 - pow(beta1, Double(step))))
        let correction2 = Float((1 - pow(beta2, Double(step))).squareRoot())
        let eps = Float(epsilon)
        // Sixteen parameters per step: every element goes through exactly the operations of the
        // scalar tail, in the same order (no fused multiply-adds), so both give identical bits.
        let vb1 = SIMD16<Float>(repeating: b1), vb2 = SIMD16<Float>(repeating: b2)
        let vc1 = SIMD16<Float>(repeating: c1), vc2 = SIMD16<Float>(repeating: c2)
        let vDecay = SIMD16<Float>(repeating: decay), vStep = SIMD16<Float>(repeating: stepSize)
        let vCorrection = SIMD16<Float>(repeating: correction2), vEps = SIMD16<Float>(repeating: eps)
        let pRaw = UnsafeMutableRawPointer(p), mRaw = UnsafeMutableRawPointer(m), vRaw = UnsafeMutableRawPointer(v)
        let gRaw = UnsafeRawPointer(g)
        var i = 0
        while i + 16 <= count {
            let offset = i * MemoryLayout<Float>.stride
            let gradient = gRaw.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
            let first = vb1 * mRaw.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self) + vc1 * gradient
            let second =
                vb2 * vRaw.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self) + vc2 * gradient * gradient
            mRaw.storeBytes(of: first, toByteOffset: offset, as: SIMD16<Float>.self)
            vRaw.storeBytes(of: second, toByteOffset: offset, as: SIMD16<Float>.self)
            let parameter = pRaw.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
            let updated = parameter * vDecay - vStep * first / (second.squareRoot() / vCorrection + vEps)
            pRaw.storeBytes(of: updated, toByteOffset: offset, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            let gradient = g[i]
            let first = b1 * m[i] + c1 * gradient
            let second = b2 * v[i] + c2 * gradient * gradient
            m[i] = first
            v[i] = second
            p[i] = p[i] * decay - stepSize * first / (second.squareRoot() / correction2 + eps)
            i += 1
        }
    }

    /// The factor clip_grad_norm_ multiplies gradients of total norm `norm` by (1 when no clipping).
    public static func clipCoefficient(norm: Double, maxNorm: Double) -> Double {
        guard maxNorm > 0 else { return 1 }
        let coefficient = maxNorm / (norm + 1e-6)
        return coefficient < 1 ? coefficient : 1
    }
}
