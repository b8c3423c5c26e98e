// The GEMM split over worker threads against a float64 product, for every transpose pair, beta 0
// and 1, strided operands and results, cuts along rows (tall C) and along columns (wide C), and a
// product small enough to stay serial. Tolerance: the fp32 accumulation bound gamma_K = K u / (1 -
// K u), u = 2^-24, on sum_k |alpha a_ik b_kj|, plus one rounding of the result and one of beta C.
// Also: the pieces together equal one serial OpenBLAS call on this machine to the bit or within
// that bound (they may differ only where OpenBLAS's edge micro-kernels order a sum differently).

import DinoKernels
import DinoTestSupport
import Foundation
import Testing

@Suite("parallel GEMM")
struct ParallelGEMMTests {
    struct Case: CustomStringConvertible, Sendable {
        var transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, pad: Int, beta: Float, threads: Int
        var description: String {
            "tA \(transposeA) tB \(transposeB) \(m)x\(n)x\(k) pad \(pad) beta \(beta) \(threads) threads"
        }
    }

    static let cases: [Case] = [
        Case(transposeA: false, transposeB: true, m: 1000, n: 192, k: 192, pad: 0, beta: 1, threads: 2),  // forward
        Case(transposeA: false, transposeB: false, m: 1000, n: 192, k: 576, pad: 3, beta: 0, threads: 3),  // dInput
        Case(transposeA: true, transposeB: false, m: 192, n: 768, k: 600, pad: 0, beta: 1, threads: 2),  // dWeight
        Case(transposeA: true, transposeB: true, m: 100, n: 517, k: 300, pad: 5, beta: 0, threads: 3),
        Case(transposeA: false, transposeB: true, m: 20, n: 30, k: 40, pad: 1, beta: 1, threads: 2),  // serial
    ]

    @Test("matches float64 within the fp32 accumulation bound; padding untouched", arguments: cases)
    func product(_ c: Case) {
        var random = TestRandom(seed: UInt64(c.m * 31 + c.n * 7 + c.k))
        let aRows = c.transposeA ? c.k : c.m, aColumns = c.transposeA ? c.m : c.k
        let bRows = c.transposeB ? c.n : c.k, bColumns = c.transposeB ? c.k : c.n
        let lda = aColumns + c.pad, ldb = bColumns + c.pad, ldc = c.n + c.pad
        let a = (0..<aRows * lda).map { _ in Float(random.normal()) }
        let b = (0..<bRows * ldb).map { _ in Float(random.normal()) }
        let c0 = (0..<c.m * ldc).map { _ in Float(random.normal()) }
        let alpha: Float = 0.75
        var parallel = c0, serial = c0
        BLAS.withThreadCount(1) {
            Float.gemm(
                transposeA: c.transposeA, transposeB: c.transposeB, m: c.m, n: c.n, k: c.k, alpha: alpha, a: a,
                lda: lda, b: b, ldb: ldb, beta: c.beta, c: &parallel, ldc: ldc, threads: c.threads)
            Float.gemm(
                transposeA: c.transposeA, transposeB: c.transposeB, m: c.m, n: c.n, k: c.k, alpha: alpha, a: a,
                lda: lda, b: b, ldb: ldb, beta: c.beta, c: &serial, ldc: ldc)
        }
        let u = pow(2.0, -24.0), gamma = Double(c.k) * u / (1 - Double(c.k) * u)
        var worst = 0.0, worstAgainstSerial = 0.0
        for i in 0..<c.m {
            for j in 0..<c.n {
                var exact = 0.0, magnitude = 0.0
                for p in 0..<c.k {
                    let x = Double(c.transposeA ? a[p * lda + i] : a[i * lda + p])
                    let y = Double(c.transposeB ? b[j * ldb + p] : b[p * ldb + j])
                    exact += Double(alpha) * x * y
                    magnitude += abs(Double(alpha) * x * y)
                }
                let previous = Double(c0[i * ldc + j])
                if c.beta == 1 { exact += previous }
                let bound = gamma * magnitude + 2 * u * (abs(exact) + abs(previous)) + 1e-30
                worst = max(worst, abs(Double(parallel[i * ldc + j]) - exact) / bound)
                let difference = abs(Double(parallel[i * ldc + j]) - Double(serial[i * ldc + j]))
                worstAgainstSerial = max(worstAgainstSerial, difference / (2 * bound))
            }
            for j in c.n..<ldc { #expect(parallel[i * ldc + j] == c0[i * ldc + j]) }
        }
        #expect(worst <= 1, "largest error is \(worst) of the bound for \(c)")
        #expect(worstAgainstSerial <= 1, "parallel and serial differ by \(worstAgainstSerial) of twice the bound")
    }
}
