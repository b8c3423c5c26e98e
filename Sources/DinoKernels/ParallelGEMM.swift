// A GEMM split over this program's worker threads, each piece a serial OpenBLAS call:
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C[M, N]   (BLAS.sgemm's conventions)
// C is cut into `threads` pieces along M (rows) or N (columns), boundaries on multiples of 16.
// A piece along M re-packs all of op(B) (K x N elements), a piece along N all of op(A) (M x K), so
// the cut goes across the dimension whose duplicated packing is smaller: M for the activations
// of a linear layer (tokens x features), N for a weight gradient (features x features, summed
// over tokens). Every element of C is still one serial dot product over all of K, in OpenBLAS's
// serial order, so results equal a serial call's up to where its micro-kernels change at the piece
// edges; they depend on the thread count as OpenBLAS's own threading did.
// Why not OpenBLAS's threads: its idle workers spin (sched_yield) for ~2^28 cycles after each call,
// taking a core from the attention and element-wise loops that run between GEMMs on the same cores;
// one pool for everything removed that (measured in Benchmarks/RESULTS.md).

import DinoCore

extension KernelScalar {
    /// `gemm` on `threads` workers (serial below about 60 us of work, where a dispatch costs
    /// more than it saves), OpenBLAS pinned to one thread inside: its threaded driver would give
    /// other bits (see BLAS.withThreadCount), so results depend only on `threads`.
    @inlinable
    public static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Self = 1,
        a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int, beta: Self,
        c: UnsafeMutablePointer<Self>, ldc: Int, threads: Int
    ) {
        BLAS.withThreadCount(1) {
            gemmPieces(
                transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, threads: threads)
        }
    }

    @inlinable
    static func gemmPieces(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Self,
        a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int, beta: Self,
        c: UnsafeMutablePointer<Self>, ldc: Int, threads: Int
    ) {
        let flops = 2 * Double(m) * Double(n) * Double(k)
        guard threads > 1, flops >= ParallelGEMM.minimumFLOPs, Swift.max(m, n) >= 32 else {
            gemm(
                transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        let cut = ParallelGEMM.Cut(m: m, n: n, threads: threads)
        WorkQueue.run(count: cut.pieces, threads: threads) { piece, _ in
            let (first, count) = cut.range(piece)
            guard count > 0 else { return }
            if cut.alongRows {
                // Rows of op(A): rows of A, or columns of A when it is transposed.
                let aPiece = transposeA ? a + first : a + first * lda
                gemm(
                    transposeA: transposeA, transposeB: transposeB, m: count, n: n, k: k, alpha: alpha,
                    a: aPiece, lda: lda, b: b, ldb: ldb, beta: beta, c: c + first * ldc, ldc: ldc)
            } else {
                // Columns of op(B): columns of B, or rows of B when it is transposed.
                let bPiece = transposeB ? b + first * ldb : b + first
                gemm(
                    transposeA: transposeA, transposeB: transposeB, m: m, n: count, k: k, alpha: alpha,
                    a: a, lda: lda, b: bPiece, ldb: ldb, beta: beta, c: c + first, ldc: ldc)
            }
        }
    }
}

/// Thresholds of the parallel GEMM.
public enum ParallelGEMM {
    /// Below this much work a GEMM runs on the calling thread: 2^23 FLOPs are ~60 us on one core,
    /// several times a dispatch's cost.
    public static let minimumFLOPs: Double = 8_388_608

    /// How C [m, n] is cut among `threads` workers: a row piece re-packs op(B) (K x N) and a column
    /// piece op(A) (M x K), so the cut goes across the longer side; pieces start on multiples of 16.
    public struct Cut: Sendable {
        public let alongRows: Bool
        public let pieces: Int
        let length: Int, step: Int

        public init(m: Int, n: Int, threads: Int) {
            alongRows = m >= n
            length = alongRows ? m : n
            pieces = Swift.max(1, Swift.min(threads, length / 16))
            step = ((length + pieces - 1) / pieces + 15) / 16 * 16
        }

        /// First row (or column) and count of piece `index` (the count may be 0 for a last piece).
        public func range(_ index: Int) -> (first: Int, count: Int) {
            let first = Swift.min(index * step, length)
            return (first, Swift.min(step, length - first))
        }
    }
}
