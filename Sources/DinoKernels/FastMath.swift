// Vectorised exp for float32 on SIMD16 (one zmm register on AVX-512 builds).
//   exp(x) = 2^n * e^r,  n = round(x * log2(e)),  r = x - n*ln2 (two-constant Cody-Waite reduction),
//   e^r by its degree-7 Taylor polynomial on |r| <= ln2/2 (truncation <= 5.3e-9 relative),
//   2^n assembled in the exponent bits. Inputs below -87.3 give 0; inputs above 88.3 are clamped.
// n is rounded with the 1.5 * 2^23 "magic number": adding it leaves round(x*log2e) in the low
// mantissa bits, so no float-to-int conversion instruction is needed. The reduction and the polynomial
// are written as fused multiply-adds (`addingProduct`: Swift does not contract a * b + c by itself), half
// the instructions of the separate forms. erf's polynomial keeps separate products and sums: fused, its
// rounding moved the measured worst error over the tests' 5e-7 bound (5.18e-7).
// Maximum relative error against the exact exp over [-87, 88]: 9.7e-8 measured (tests require <= 3e-7).

/// Fast vectorised elementary functions.
public enum FastMath {
    /// exp of 16 lanes.
    @inlinable @inline(__always)
    public static func exp(_ x: SIMD16<Float>) -> SIMD16<Float> {
        let magic = SIMD16<Float>(repeating: 12_582_912)  // 1.5 * 2^23
        let clamped = minimum(maximum(x, SIMD16<Float>(repeating: -87.3)), SIMD16<Float>(repeating: 88.3))
        let shifted = magic.addingProduct(clamped, SIMD16<Float>(repeating: 1.442_695_04))
        let n = shifted - magic
        let r = clamped.addingProduct(n, SIMD16<Float>(repeating: -0.693_359_375))
            .addingProduct(n, SIMD16<Float>(repeating: 2.121_944_4e-4))
        var p = SIMD16<Float>(repeating: 1.0 / 720).addingProduct(r, SIMD16<Float>(repeating: 1.0 / 5040))
        p = SIMD16<Float>(repeating: 1.0 / 120).addingProduct(p, r)
        p = SIMD16<Float>(repeating: 1.0 / 24).addingProduct(p, r)
        p = SIMD16<Float>(repeating: 1.0 / 6).addingProduct(p, r)
        p = SIMD16<Float>(repeating: 0.5).addingProduct(p, r)
        p = SIMD16<Float>(repeating: 1).addingProduct(p, r)
        p = SIMD16<Float>(repeating: 1).addingProduct(p, r)
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

    // Unary minus on SIMD16 is avoided below: it lowers lane by lane here; multiplying by -1 or
    // subtracting from zero stays one vector instruction.

    /// erf of 16 lanes: Abramowitz & Stegun 7.1.26, erf(x) = 1 - (a1 t + ... + a5 t^5) e^(-x^2) with
    /// t = 1 / (1 + p |x|), odd-extended. Maximum absolute error 1.5e-7 (formula) plus float32
    /// rounding of the division, polynomial and exp: 4.8e-7 measured over [-6, 6] (tests: <= 5e-7).
    @inlinable @inline(__always)
    public static func erf(_ x: SIMD16<Float>) -> SIMD16<Float> {
        erf(x, expOfMinusSquare: exp(x * x * SIMD16<Float>(repeating: -1)))
    }

    /// erf(x) given e = exp(-x^2) computed by the caller (GELU's backward needs that exp anyway).
    @inlinable @inline(__always)
    public static func erf(_ x: SIMD16<Float>, expOfMinusSquare e: SIMD16<Float>) -> SIMD16<Float> {
        let zero = SIMD16<Float>(repeating: 0)
        let magnitude = x.replacing(with: zero - x, where: x .< zero)
        let t =
            SIMD16<Float>(repeating: 1)
            / (magnitude * SIMD16<Float>(repeating: 0.327_591_1) + SIMD16<Float>(repeating: 1))
        var poly = t * SIMD16<Float>(repeating: 1.061_405_429) + SIMD16<Float>(repeating: -1.453_152_027)
        poly = poly * t + SIMD16<Float>(repeating: 1.421_413_741)
        poly = poly * t + SIMD16<Float>(repeating: -0.284_496_736)
        poly = poly * t + SIMD16<Float>(repeating: 0.254_829_592)
        poly = poly * t
        let positive = SIMD16<Float>(repeating: 1) - poly * e
        return positive.replacing(with: zero - positive, where: x .< zero)
    }

    /// The logistic function 1 / (1 + e^-x) of 16 lanes.
    @inlinable @inline(__always)
    public static func sigmoid(_ x: SIMD16<Float>) -> SIMD16<Float> {
        SIMD16<Float>(repeating: 1) / (SIMD16<Float>(repeating: 1) + exp(x * SIMD16<Float>(repeating: -1)))
    }

    /// Loads `count` (< 16) floats into the low lanes; the other lanes hold `fill`.
    @inlinable @inline(__always)
    public static func loadPartial(_ p: UnsafePointer<Float>, _ count: Int, fill: Float = 0) -> SIMD16<Float> {
        var v = SIMD16<Float>(repeating: fill)
        for i in 0..<count { v[i] = p[i] }
        return v
    }

    /// Stores the low `count` (< 16) lanes.
    @inlinable @inline(__always)
    public static func storePartial(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
        for i in 0..<count { p[i] = v[i] }
    }
}
