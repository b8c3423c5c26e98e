// Elementwise and reduction loops over flat float32 buffers, written with explicit SIMD16
// accumulators (one 512-bit register each on AVX-512 builds). Used for gradient norms (clipping)
// and the teacher EMA, both of which run over every parameter shard each step.
//   sumOfSquares: x [n] -> sum_i x_i^2, accumulated in float32 lanes, then summed in float64
//   lerp (EMA):   t [n] <- m * t + (1 - m) * s
// Reference implementations in float64 live in the tests.

/// Vectorised loops over flat buffers.
public enum VectorOps {
    /// The sum of squares of `x`, for gradient-norm clipping.
    ///
    /// Four independent SIMD16 accumulators hide the FMA latency; the lanes are summed in Double,
    /// so the relative error stays near n/64 * 2^-24 for the float32 lane sums.
    @inlinable
    public static func sumOfSquares(_ x: UnsafeBufferPointer<Float>) -> Double {
        guard let base = x.baseAddress else { return 0 }
        let raw = UnsafeRawPointer(base)
        let n = x.count
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        var i = 0
        while i + 64 <= n {
            let v0 = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            let v1 = raw.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self)
            let v2 = raw.loadUnaligned(fromByteOffset: (i + 32) * 4, as: SIMD16<Float>.self)
            let v3 = raw.loadUnaligned(fromByteOffset: (i + 48) * 4, as: SIMD16<Float>.self)
            a0.addProduct(v0, v0)
            a1.addProduct(v1, v1)
            a2.addProduct(v2, v2)
            a3.addProduct(v3, v3)
            i += 64
        }
        while i + 16 <= n {
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            a0.addProduct(v, v)
            i += 16
        }
        let lanes = (a0 + a1) + (a2 + a3)
        var total = 0.0
        for lane in 0..<16 { total += Double(lanes[lane]) }
        while i < n {
            total += Double(base[i]) * Double(base[i])
            i += 1
        }
        return total
    }

    /// In place `target = momentum * target + (1 - momentum) * source` (the teacher EMA update).
    @inlinable
    public static func lerp(
        _ target: UnsafeMutableBufferPointer<Float>, toward source: UnsafeBufferPointer<Float>,
        momentum: Float
    ) {
        precondition(target.count == source.count, "lerp: \(target.count) targets, \(source.count) sources")
        guard let t = target.baseAddress, let s = source.baseAddress else { return }
        let n = target.count
        let keep = SIMD16<Float>(repeating: momentum)
        let take = SIMD16<Float>(repeating: 1 - momentum)
        let tRaw = UnsafeMutableRawPointer(t)
        let sRaw = UnsafeRawPointer(s)
        var i = 0
        while i + 16 <= n {
            let tv = tRaw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            let sv = sRaw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            tRaw.storeBytes(of: (tv * keep).addingProduct(sv, take), toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n {
            t[i] = (t[i] * momentum).addingProduct(s[i], 1 - momentum)
            i += 1
        }
    }
}
