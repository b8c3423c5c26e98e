// The oneDNN bf16 GEMM against a float64 product of the bf16-rounded operands, for every transpose
// pair, beta 0 and 1, strided operands and results, shapes the ViT and head layers use, and the
// cuts of a product among two workers along rows and along columns.
// Tolerance: the fp32 accumulation bound gamma_K = K u / (1 - K u), u = 2^-24, applied to
// sum_k |a_ik b_kj| (plus one rounding of the fp32 result and, with beta 1, of the sum with C).
// The bf16 rounding itself is not in the error: the reference multiplies the same rounded values.

import DinoKernels
import DinoTestSupport
import Foundation
import Testing

@Suite("bf16 GEMM (oneDNN)", .enabled(if: BF16GEMM.isSupported, "needs AVX512-BF16 or AMX"))
struct BF16GEMMTests {
    struct Case: CustomStringConvertible {
        var transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, pad: Int, beta: Float
        var description: String { "tA \(transposeA) tB \(transposeB) \(m)x\(n)x\(k) pad \(pad) beta \(beta)" }
    }

    static let cases: [Case] = [
        Case(transposeA: false, transposeB: true, m: 257, n: 1152, k: 384, pad: 0, beta: 0),  // qkv forward
        Case(transposeA: false, transposeB: false, m: 257, n: 384, k: 1536, pad: 0, beta: 1),  // dInput, +=
        Case(transposeA: true, transposeB: false, m: 384, n: 1536, k: 300, pad: 0, beta: 1),  // dWeight +=
        Case(transposeA: true, transposeB: true, m: 33, n: 17, k: 65, pad: 3, beta: 0),
        // Tall products, cut along rows among the two workers (the ones above are cut along columns or serial).
        Case(transposeA: false, transposeB: true, m: 1000, n: 192, k: 192, pad: 5, beta: 1),
        Case(transposeA: true, transposeB: false, m: 700, n: 64, k: 300, pad: 0, beta: 0),
        Case(transposeA: false, transposeB: true, m: 5, n: 7, k: 3, pad: 2, beta: 1),
    ]

    @Test("matches float64 on the rounded operands within the fp32 accumulation bound", arguments: cases)
    func product(_ c: Case) {
        var random = TestRandom(seed: UInt64(c.m * 31 + c.n * 7 + c.k))
        let aRows = c.transposeA ? c.k : c.m, aColumns = c.transposeA ? c.m : c.k
        let bRows = c.transposeB ? c.n : c.k, bColumns = c.transposeB ? c.k : c.n
        let lda = aColumns + c.pad, ldb = bColumns + c.pad, ldc = c.n + c.pad
        let a = (0..<aRows * lda).map { _ in Float(random.normal()) }
        let b = (0..<bRows * ldb).map { _ in Float(random.normal()) }
        let c0 = (0..<c.m * ldc).map { _ in Float(random.normal()) }
        var result = c0
        let engine = BF16GEMM(threads: 2)
        engine.gemm(
            transposeA: c.transposeA, transposeB: c.transposeB, m: c.m, n: c.n, k: c.k, a: a, lda: lda, b: b,
            ldb: ldb, beta: c.beta, c: &result, ldc: ldc)
        let u = pow(2.0, -24.0), gamma = Double(c.k) * u / (1 - Double(c.k) * u)
        var worst = 0.0
        for i in 0..<c.m {
            for j in 0..<c.n {
                var exact = 0.0, magnitude = 0.0
                for p in 0..<c.k {
                    let x = Double(BFloat16.rounded(c.transposeA ? a[p * lda + i] : a[i * lda + p]))
                    let y = Double(BFloat16.rounded(c.transposeB ? b[j * ldb + p] : b[p * ldb + j]))
                    exact += x * y
                    magnitude += abs(x * y)
                }
                let previous = Double(c0[i * ldc + j])
                if c.beta == 1 { exact += previous }
                let bound = gamma * magnitude + 2 * u * (abs(exact) + abs(previous)) + 1e-30
                worst = max(worst, abs(Double(result[i * ldc + j]) - exact) / bound)
            }
            // Padding columns of C are never written.
            for j in c.n..<ldc { #expect(result[i * ldc + j] == c0[i * ldc + j]) }
        }
        #expect(worst <= 1, "largest error is \(worst) of the bound for \(c)")
    }

    @Test("one primitive per shape, reused across calls")
    func cache() {
        let engine = BF16GEMM(threads: 1)
        let a = [Float](repeating: 1, count: 64), b = [Float](repeating: 2, count: 64)
        var c = [Float](repeating: 0, count: 64)
        for _ in 0..<3 {
            engine.gemm(
                transposeA: false, transposeB: false, m: 8, n: 8, k: 8, a: a, lda: 8, b: b, ldb: 8, beta: 0, c: &c,
                ldc: 8)
        }
        #expect(engine.shapeCount == 1)
        #expect(c.allSatisfy { $0 == 16 })
    }
}
