// Row-major single-precision GEMM through OpenBLAS, and control of OpenBLAS's own thread pool.
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C[M, N]
// op(X) is X or its transpose; leading dimensions are the row strides of the stored matrices.

import CBLAS

/// OpenBLAS entry points used by the kernels.
public enum BLAS {
    /// Computes `C = alpha * op(A) * op(B) + beta * C` for row-major matrices.
    @inlinable
    public static func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans,
            transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda),
            b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Number of threads OpenBLAS uses for one call.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// The kernel family OpenBLAS selected for this CPU (for example "Cooperlake").
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}
