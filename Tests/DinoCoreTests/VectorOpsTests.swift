// The SIMD loops against float64 references, at lengths that exercise every tail path.

import DinoKernels
import Foundation
import Testing

@Suite("vector ops")
struct VectorOpsTests {
    @Test("sum of squares matches float64", arguments: [0, 1, 15, 16, 17, 63, 64, 65, 1000, 100_003])
    func sumOfSquares(count: Int) {
        let x = (0..<count).map { Float(sin(Double($0) * 0.731) * 3) }
        let reference = x.reduce(0.0) { $0 + Double($1) * Double($1) }
        let value = x.withUnsafeBufferPointer { VectorOps.sumOfSquares($0) }
        // float32 lane sums of up to n/64 terms each: relative error <= (n/64 + 1) * 2^-24.
        let bound = (Double(count) / 64 + 1) * 0x1p-24
        #expect(abs(value - reference) <= bound * max(reference, 1e-30), "\(value) vs \(reference)")
    }

    @Test("EMA lerp matches float64 within one rounding per operation", arguments: [0, 5, 16, 33, 4099])
    func lerp(count: Int) {
        var teacher = (0..<count).map { Float(cos(Double($0) * 0.3)) }
        let student = (0..<count).map { Float(sin(Double($0) * 0.7)) }
        let momentum: Float = 0.992
        let reference = zip(teacher, student).map { Double(momentum) * Double($0) + Double(1 - momentum) * Double($1) }
        student.withUnsafeBufferPointer { s in
            teacher.withUnsafeMutableBufferPointer { VectorOps.lerp($0, toward: s, momentum: momentum) }
        }
        for (value, expected) in zip(teacher, reference) {
            // |terms| <= 1: a product, an FMA and the rounding of (1 - m): a few float32 ulps of 1.
            #expect(abs(Double(value) - expected) <= 3 * 0x1p-24)
        }
    }
}
