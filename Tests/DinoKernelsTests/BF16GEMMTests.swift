// The oneDNN bf16 GEMM against a float64 product of the bf16-rounded operands, for every transpose
// pair, beta 0 and 1, strided operands and results, shapes the ViT and head layers use, and the
// cuts of a product among two workers along rows and along columns.
// Tolerance: the fp32 accumulation bound of GEMMReference.swift. The bf16 rounding itself is not in
// the error: the reference multiplies the same rounded values.

import DinoKernels
import DinoTestSupport
import Foundation
import Testing

@Suite("bf16 GEMM (oneDNN)", .enabled(if: BF16GEMM.isSupported, "needs AVX512-BF16 or AMX"))
struct BF16GEMMTests {
    static let cases: [GEMMCase] = [
        GEMMCase(transposeA: false, transposeB: true, m: 257, n: 1152, k: 384, pad: 0, beta: 0),  // qkv forward
        GEMMCase(transposeA: false, transposeB: false, m: 257, n: 384, k: 1536, pad: 0, beta: 1),  // dInput, +=
        GEMMCase(transposeA: true, transposeB: false, m: 384, n: 1536, k: 300, pad: 0, beta: 1),  // dWeight +=
        GEMMCase(transposeA: true, transposeB: true, m: 33, n: 17, k: 65, pad: 3, beta: 0),
        // Tall products, cut along rows among the two workers (the ones above are cut along columns or serial).
        GEMMCase(transposeA: false, transposeB: true, m: 1000, n: 192, k: 192, pad: 5, beta: 1),
        GEMMCase(transposeA: true, transposeB: false, m: 700, n: 64, k: 300, pad: 0, beta: 0),
        GEMMCase(transposeA: false, transposeB: true, m: 5, n: 7, k: 3, pad: 2, beta: 1),
    ]

    @Test("matches float64 on the rounded operands within the fp32 accumulation bound", arguments: cases)
    func product(_ c: GEMMCase) {
        let (a, b, c0) = c.operands()
        var result = c0
        let engine = BF16GEMM(threads: 2)
        engine.gemm(
            transposeA: c.transposeA, transposeB: c.transposeB, m: c.m, n: c.n, k: c.k, a: a, lda: c.lda, b: b,
            ldb: c.ldb, beta: c.beta, c: &result, ldc: c.ldc)
        var worst = 0.0
        c.forEachReference(a: a, b: b, c0: c0, operand: BFloat16.rounded) { i, j, exact, bound in
            worst = max(worst, abs(Double(result[i * c.ldc + j]) - exact) / bound)
        }
        // Padding columns of C are never written.
        for i in 0..<c.m { for j in c.n..<c.ldc { #expect(result[i * c.ldc + j] == c0[i * c.ldc + j]) } }
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
