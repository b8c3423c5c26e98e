// Row-major single-precision GEMM through OpenBLAS, and control of OpenBLAS's own thread pool.
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C[M, N]
// op(X) is X or its transpose; leading dimensions are the row strides of the stored matrices.

import CBLAS
import Foundation

/// OpenBLAS entry points used by the kernels.
public enum BLAS {
    /// Computes `C = alpha * op(A) * op(B) + beta * C` for row-major matrices.
    @inlinable
    public static func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans,
            transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda),
            b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Number of threads OpenBLAS uses for one call. Setting it waits for any `withThreadCount` scope
    /// of another thread to end, so a count fixed there holds for the whole scope.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set {
            threadCountLock.lock()
            defer { threadCountLock.unlock() }
            openblas_set_num_threads(Int32(max(1, newValue)))
        }
    }

    /// Runs `body` with OpenBLAS on `count` threads, then restores the previous count. OpenBLAS's
    /// threaded and serial drivers split K differently (for GEMM_Q < K < 2 GEMM_Q), so a GEMM's bits
    /// depend on the count: code that promises bitwise-equal results pins it here. The count is one
    /// process-wide setting, so scopes of different threads run one after the other.
    public static func withThreadCount<R>(_ count: Int, _ body: () throws -> R) rethrows -> R {
        threadCountLock.lock()
        defer { threadCountLock.unlock() }
        let saved = openblas_get_num_threads(), wanted = Int32(max(1, count))
        if saved != wanted { openblas_set_num_threads(wanted) }
        defer { if saved != wanted { openblas_set_num_threads(saved) } }
        return try body()
    }

    private static let threadCountLock = NSRecursiveLock()

    /// The kernel family OpenBLAS selected for this CPU (for example "Cooperlake").
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// OpenBLAS's generic x86 kernel families: what it falls back to on a CPU newer than itself.
    static let genericCores: Set<String> = [
        "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Katmai",
        "Coppermine", "Northwood", "Banias", "Atom", "Athlon", "Opteron",
        "Barcelona", "Unknown", "unknown",
    ]

    /// The kernel family to force through OPENBLAS_CORETYPE when OpenBLAS chose a generic one on a
    /// CPU with AVX2 or AVX-512 (nil otherwise, or when the user set OPENBLAS_CORETYPE). Debian 12's
    /// OpenBLAS 0.3.21 does not know Sapphire Rapids (family 6, model 143) and runs its SSE3
    /// "Prescott" kernels there: sgemm at ~25 instead of ~135 GFLOP/s per core, measured.
    public static var preferredCoreType: String? {
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil, genericCores.contains(coreName),
            let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return nil }
        let flags = Set(line.split(separator: " ").map(String.init))
        let amd = cpuinfo.contains("AuthenticAMD")
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"]) {
            return flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX"
        }
        if flags.isSuperset(of: ["avx2", "fma"]) { return amd ? "Zen" : "Haswell" }
        return nil
    }
}
