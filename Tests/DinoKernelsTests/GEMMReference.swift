// The float64 reference both GEMM tests (bf16 and split over workers) check against: random strided
// operands for a case, and per element of C the exact alpha op(A) op(B) + beta C0 of the values the
// kernel multiplies (`operand` maps each stored value, e.g. to its bf16 rounding) with its error bound:
// the fp32 accumulation bound gamma_K = K u / (1 - K u), u = 2^-24, on sum_k |alpha a_ik b_kj|, plus
// one rounding of the result and one of beta C0.

import DinoTestSupport
import Foundation

/// A GEMM shape with padded (strided) operands and result.
struct GEMMCase: CustomStringConvertible, Sendable {
    var transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, pad: Int, beta: Float

    var description: String { "tA \(transposeA) tB \(transposeB) \(m)x\(n)x\(k) pad \(pad) beta \(beta)" }

    // Stored operands: A is [m, k] or, transposed, [k, m]; B is [k, n] or [n, k]; rows `pad` longer.
    var lda: Int { (transposeA ? m : k) + pad }
    var ldb: Int { (transposeB ? k : n) + pad }
    var ldc: Int { n + pad }

    /// Normal random A, B and C0 for this case (the seed follows the shape).
    func operands() -> (a: [Float], b: [Float], c0: [Float]) {
        var random = TestRandom(seed: UInt64(m * 31 + n * 7 + k))
        let aRows = transposeA ? k : m, bRows = transposeB ? n : k
        let a = (0..<aRows * lda).map { _ in Float(random.normal()) }
        let b = (0..<bRows * ldb).map { _ in Float(random.normal()) }
        let c0 = (0..<m * ldc).map { _ in Float(random.normal()) }
        return (a, b, c0)
    }

    /// Calls `body(i, j, exact, bound)` for every element of C.
    func forEachReference(
        a: [Float], b: [Float], c0: [Float], alpha: Float = 1, operand: (Float) -> Float = { $0 },
        _ body: (_ i: Int, _ j: Int, _ exact: Double, _ bound: Double) -> Void
    ) {
        let u = pow(2.0, -24.0), gamma = Double(k) * u / (1 - Double(k) * u)
        for i in 0..<m {
            for j in 0..<n {
                var exact = 0.0, magnitude = 0.0
                for p in 0..<k {
                    let x = Double(operand(transposeA ? a[p * lda + i] : a[i * lda + p]))
                    let y = Double(operand(transposeB ? b[j * ldb + p] : b[p * ldb + j]))
                    exact += Double(alpha) * x * y
                    magnitude += abs(Double(alpha) * x * y)
                }
                let previous = Double(c0[i * ldc + j])
                if beta == 1 { exact += previous }
                body(i, j, exact, gamma * magnitude + 2 * u * (abs(exact) + abs(previous)) + 1e-30)
            }
        }
    }
}
