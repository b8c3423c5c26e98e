// The GEMM split over worker threads against a float64 product, for every transpose pair, beta 0
// and 1, strided operands and results, cuts along rows (tall C) and along columns (wide C), and a
// product small enough to stay serial. Tolerance: the fp32 accumulation bound of GEMMReference.swift.
// Also: the pieces together equal one serial OpenBLAS call on this machine to the bit or within
// that bound (they may differ only where OpenBLAS's edge micro-kernels order a sum differently).

import DinoKernels
import DinoTestSupport
import Foundation
import Testing

@Suite("parallel GEMM")
struct ParallelGEMMTests {
    static let cases: [(GEMMCase, threads: Int)] = [
        (GEMMCase(transposeA: false, transposeB: true, m: 1000, n: 192, k: 192, pad: 0, beta: 1), 2),  // forward
        (GEMMCase(transposeA: false, transposeB: false, m: 1000, n: 192, k: 576, pad: 3, beta: 0), 3),  // dInput
        (GEMMCase(transposeA: true, transposeB: false, m: 192, n: 768, k: 600, pad: 0, beta: 1), 2),  // dWeight
        (GEMMCase(transposeA: true, transposeB: true, m: 100, n: 517, k: 300, pad: 5, beta: 0), 3),
        (GEMMCase(transposeA: false, transposeB: true, m: 20, n: 30, k: 40, pad: 1, beta: 1), 2),  // serial
    ]

    @Test("matches float64 within the fp32 accumulation bound; padding untouched", arguments: cases)
    func product(_ c: GEMMCase, threads: Int) {
        let (a, b, c0) = c.operands()
        let alpha: Float = 0.75
        var parallel = c0, serial = c0
        BLAS.withThreadCount(1) {
            Float.gemm(
                transposeA: c.transposeA, transposeB: c.transposeB, m: c.m, n: c.n, k: c.k, alpha: alpha, a: a,
                lda: c.lda, b: b, ldb: c.ldb, beta: c.beta, c: &parallel, ldc: c.ldc, threads: threads)
            Float.gemm(
                transposeA: c.transposeA, transposeB: c.transposeB, m: c.m, n: c.n, k: c.k, alpha: alpha, a: a,
                lda: c.lda, b: b, ldb: c.ldb, beta: c.beta, c: &serial, ldc: c.ldc)
        }
        var worst = 0.0, worstAgainstSerial = 0.0
        c.forEachReference(a: a, b: b, c0: c0, alpha: alpha) { i, j, exact, bound in
            let value = Double(parallel[i * c.ldc + j])
            worst = max(worst, abs(value - exact) / bound)
            worstAgainstSerial = max(worstAgainstSerial, abs(value - Double(serial[i * c.ldc + j])) / (2 * bound))
        }
        for i in 0..<c.m { for j in c.n..<c.ldc { #expect(parallel[i * c.ldc + j] == c0[i * c.ldc + j]) } }
        #expect(worst <= 1, "largest error is \(worst) of the bound for \(c), \(threads) threads")
        #expect(worstAgainstSerial <= 1, "parallel and serial differ by \(worstAgainstSerial) of twice the bound")
    }
}
