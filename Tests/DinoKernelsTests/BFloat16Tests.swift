// bfloat16 rounding against a float64 reference: the nearest bf16 value (ties to the even
// significand), for random floats across the exponent range and the special cases.

import DinoKernels
import DinoTestSupport
import Foundation
import Testing

@Suite("bfloat16")
struct BFloat16Tests {
    /// The bf16 bits nearest to `x` by exact float64 arithmetic (finite x whose neighbours are finite).
    func reference(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let down = UInt16(bits >> 16), up = down &+ 1
        // `down` truncates the magnitude, `up` is the next magnitude away from zero (either sign).
        let value = Double(x)
        let toDown = abs(value - Double(Float(bitPattern: UInt32(down) << 16)))
        let toUp = abs(Double(Float(bitPattern: UInt32(up) << 16)) - value)
        if toDown < toUp { return down }
        if toDown > toUp { return up }
        return down & 1 == 0 ? down : up
    }

    @Test(
        "round to nearest even on 100,000 random floats and every tie pattern; expand is exact; NaN and infinities kept"
    )
    func rounding() {
        var random = TestRandom(seed: 12)
        var values: [Float] = (0..<100_000).map { _ in
            Float(random.normal()) * Float(pow(2.0, Double(Int.random(in: -30...30, using: &random))))
        }
        // Exact ties: low half 0x8000 with an even and an odd kept part; just below and above.
        values += [
            Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x3F80_7FFF),
            Float(bitPattern: 0x3F80_8001), -Float(bitPattern: 0x3F81_8000), 0, -0.0, Float.leastNonzeroMagnitude,
        ]
        var half = [UInt16](repeating: 0, count: values.count), back = [Float](repeating: 0, count: values.count)
        BFloat16.round(values, into: &half, count: values.count)
        BFloat16.expand(half, into: &back, count: values.count)
        for (i, x) in values.enumerated() {
            #expect(
                half[i] == reference(x), "\(x): \(String(half[i], radix: 16)) vs \(String(reference(x), radix: 16))")
            #expect(back[i].bitPattern == UInt32(half[i]) << 16)
        }
        #expect(BFloat16.rounded(.infinity) == .infinity && BFloat16.rounded(-.infinity) == -.infinity)
        #expect(BFloat16.rounded(.nan).isNaN && BFloat16.rounded(-Float.nan).isNaN)
        #expect(BFloat16.rounded(Float.greatestFiniteMagnitude) == .infinity)  // rounds past the largest bf16
    }
}
