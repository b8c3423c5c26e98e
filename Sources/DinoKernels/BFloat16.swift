// bfloat16 conversions for bf16 all-gathers: float32 [n] <-> bf16 bit patterns (UInt16) [n].
//   to bf16: round to nearest, ties to even, on the upper 16 bits; NaN stays a quiet NaN (0x7FC0
//            with the sign kept); infinities and overflow to infinity as IEEE rounding gives
//   from bf16: the 16 bits become the upper half of a float32 (exact)
// Loops over UInt32 lanes, vectorised by the compiler for the target CPU.

/// float32 <-> bfloat16.
public enum BFloat16 {
    /// Rounds `n` floats to bf16 bit patterns.
    public static func round(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<UInt16>, count n: Int) {
        source.withMemoryRebound(to: UInt32.self, capacity: n) { bits in
            for i in 0..<n {
                let b = bits[i]
                let isNaN = (b & 0x7FFF_FFFF) > 0x7F80_0000
                let rounded = (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16
                target[i] = UInt16(truncatingIfNeeded: isNaN ? ((b >> 16) | 0x0040) : rounded)
            }
        }
    }

    /// Expands `n` bf16 bit patterns to floats.
    public static func expand(_ source: UnsafePointer<UInt16>, into target: UnsafeMutablePointer<Float>, count n: Int) {
        target.withMemoryRebound(to: UInt32.self, capacity: n) { bits in
            for i in 0..<n { bits[i] = UInt32(source[i]) << 16 }
        }
    }

    /// The float nearest to `value` among bf16 values (round trip), for tests and scalars.
    public static func rounded(_ value: Float) -> Float {
        var input = value, half: UInt16 = 0, output: Float = 0
        round(&input, into: &half, count: 1)
        expand(&half, into: &output, count: 1)
        return output
    }
}
