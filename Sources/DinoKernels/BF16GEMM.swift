// bf16 matrix products through oneDNN, with the conventions of BLAS.sgemm (row-major, op(X) = X or
// X^T, leading dimensions are row strides):
//   C[M, N] (fp32) = op(A)[M, K] . op(B)[K, N]            (beta 0)
//   C[M, N] (fp32) += op(A)[M, K] . op(B)[K, N]           (beta 1)
// A and B arrive in fp32 and are rounded to bf16 (nearest, ties to even) into scratch; the products
// accumulate in fp32 (AMX tiles or AVX512-BF16 dot products, whichever oneDNN picks for this CPU).
// So the result equals the fp32 product of the bf16-rounded operands up to fp32 summation order.
// With several workers the rounding is shared among them and C is cut across its longer side into
// one piece per worker, each a single-threaded oneDNN product (its own engine, stream, primitives).
// A oneDNN primitive costs 1-3 ms to create: one is made per distinct shape and worker, and kept.

import CDNNL
import DinoCore
import Foundation

/// bf16 GEMMs with fp32 accumulation and fp32 results.
public final class BF16GEMM {
    /// True when oneDNN runs bf16 products natively here (AVX512-BF16 or AMX). oneDNN's own
    /// `ONEDNN_MAX_CPU_ISA` limit is honoured, so `ONEDNN_MAX_CPU_ISA=AVX512_CORE` shows the fallback.
    public static var isSupported: Bool {
        let bf16Bits = dnnl_cpu_isa_avx512_core_bf16.rawValue
        return dnnl_get_effective_cpu_isa().rawValue & bf16Bits == bf16Bits
    }

    /// The instruction set oneDNN will use, for logs ("avx512_core_amx", "avx512_core_bf16", ...).
    public static var instructionSet: String {
        switch dnnl_get_effective_cpu_isa() {
        case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx"
        case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16"
        case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni"
        case dnnl_cpu_isa_avx512_core: return "avx512_core"
        case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni"
        case dnnl_cpu_isa_avx2: return "avx2"
        default: return "isa 0x" + String(dnnl_get_effective_cpu_isa().rawValue, radix: 16)
        }
    }

    /// A product's shape; `lda` / `ldb` are the row strides of the packed bf16 operands as stored
    /// (a piece of a larger product keeps the whole operand's stride).
    private struct Shape: Hashable {
        var transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int
        var accumulate: Bool
    }

    /// One matmul primitive and the memory objects its pointers are swapped into.
    private final class Product {
        let primitive: dnnl_primitive_t
        let a: dnnl_memory_t, b: dnnl_memory_t, c: dnnl_memory_t

        init(_ shape: Shape, engine: dnnl_engine_t) {
            func descriptor(
                rows: Int, columns: Int, rowStride: Int, columnStride: Int, type: dnnl_data_type_t
            )
                -> dnnl_memory_desc_t
            {
                var desc = dnnl_memory_desc_t()
                var dims: [dnnl_dim_t] = [dnnl_dim_t(rows), dnnl_dim_t(columns)]
                var strides: [dnnl_dim_t] = [dnnl_dim_t(rowStride), dnnl_dim_t(columnStride)]
                BF16GEMM.check(dnnl_memory_desc_init_by_strides(&desc, 2, &dims, type, &strides), "memory descriptor")
                return desc
            }
            // Stored op(A) is [k, m] when transposed, else [m, k], rows `lda` apart; likewise B.
            let m = shape.m, n = shape.n, k = shape.k
            var aDesc =
                shape.transposeA
                ? descriptor(rows: m, columns: k, rowStride: 1, columnStride: shape.lda, type: dnnl_bf16)
                : descriptor(rows: m, columns: k, rowStride: shape.lda, columnStride: 1, type: dnnl_bf16)
            var bDesc =
                shape.transposeB
                ? descriptor(rows: k, columns: n, rowStride: 1, columnStride: shape.ldb, type: dnnl_bf16)
                : descriptor(rows: k, columns: n, rowStride: shape.ldb, columnStride: 1, type: dnnl_bf16)
            var cDesc = descriptor(rows: m, columns: n, rowStride: shape.ldc, columnStride: 1, type: dnnl_f32)
            var matmul = dnnl_matmul_desc_t()
            BF16GEMM.check(dnnl_matmul_desc_init(&matmul, &aDesc, &bDesc, nil, &cDesc), "matmul descriptor")
            var attributes: dnnl_primitive_attr_t? = nil
            BF16GEMM.check(dnnl_primitive_attr_create(&attributes), "attributes")
            defer { dnnl_primitive_attr_destroy(attributes) }
            if shape.accumulate {
                var postOps: dnnl_post_ops_t? = nil
                BF16GEMM.check(dnnl_post_ops_create(&postOps), "post-ops")
                defer { dnnl_post_ops_destroy(postOps) }
                BF16GEMM.check(dnnl_post_ops_append_sum(postOps, 1), "sum post-op")
                BF16GEMM.check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "post-op attribute")
            }
            var descriptor: dnnl_primitive_desc_t? = nil
            BF16GEMM.check(
                dnnl_primitive_desc_create(&descriptor, &matmul, attributes, engine, nil), "matmul for \(shape)")
            defer { dnnl_primitive_desc_destroy(descriptor) }
            var primitive: dnnl_primitive_t? = nil
            BF16GEMM.check(dnnl_primitive_create(&primitive, descriptor), "matmul primitive")
            self.primitive = primitive!
            var a: dnnl_memory_t? = nil, b: dnnl_memory_t? = nil, c: dnnl_memory_t? = nil
            BF16GEMM.check(dnnl_memory_create(&a, &aDesc, engine, nil), "memory")
            BF16GEMM.check(dnnl_memory_create(&b, &bDesc, engine, nil), "memory")
            BF16GEMM.check(dnnl_memory_create(&c, &cDesc, engine, nil), "memory")
            self.a = a!
            self.b = b!
            self.c = c!
            arguments = [
                dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: a),
                dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: b),
                dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: c),
            ]
        }

        /// The execution arguments (fixed: the memory objects stay, their pointers change), built once
        /// so that running a product allocates nothing.
        var arguments: [dnnl_exec_arg_t]

        deinit {
            dnnl_memory_destroy(a)
            dnnl_memory_destroy(b)
            dnnl_memory_destroy(c)
            dnnl_primitive_destroy(primitive)
        }
    }

    /// One worker thread's oneDNN engine, stream and compiled products (memory objects get their
    /// pointers swapped in per call, so two threads never share one).
    private final class Worker: @unchecked Sendable {
        let engine: dnnl_engine_t
        let stream: dnnl_stream_t
        var products: [Shape: Product] = [:]

        init() {
            var engine: dnnl_engine_t? = nil, stream: dnnl_stream_t? = nil
            BF16GEMM.check(dnnl_engine_create(&engine, dnnl_cpu, 0), "CPU engine")
            BF16GEMM.check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue), "stream")
            self.engine = engine!
            self.stream = stream!
        }

        deinit {
            // Primitives and memory objects go before the engine they were made on (stored properties
            // would only be released after this body).
            products.removeAll()
            dnnl_stream_destroy(stream)
            dnnl_engine_destroy(engine)
        }

        /// Runs one product on the calling thread (an OpenMP team of one).
        func run(
            _ shape: Shape, a: UnsafeMutablePointer<UInt16>, b: UnsafeMutablePointer<UInt16>,
            c: UnsafeMutablePointer<Float>
        ) {
            let product: Product
            if let cached = products[shape] {
                product = cached
            } else {
                product = Product(shape, engine: engine)
                products[shape] = product
            }
            BF16GEMM.check(dnnl_memory_set_data_handle(product.a, a), "operand A")
            BF16GEMM.check(dnnl_memory_set_data_handle(product.b, b), "operand B")
            BF16GEMM.check(dnnl_memory_set_data_handle(product.c, c), "result C")
            BF16GEMM.setThreadCount(1)
            BF16GEMM.check(dnnl_primitive_execute(product.primitive, stream, 3, &product.arguments), "matmul")
            BF16GEMM.check(dnnl_stream_wait(stream), "stream")
        }
    }

    private let threads: Int
    private let workers: [Worker]
    private let packedA = GrowableBuffer<UInt16>(), packedB = GrowableBuffer<UInt16>()

    /// A GEMM engine whose products are cut into pieces run on `threads` workers, each piece one
    /// single-threaded oneDNN product (as ParallelGEMM for fp32: one thread pool, no OpenMP team
    /// spinning on the cores between products). Callers check `isSupported` first: without bf16
    /// instructions oneDNN emulates them far below the fp32 speed.
    public init(threads: Int) {
        self.threads = max(1, threads)
        workers = (0..<max(1, threads)).map { _ in Worker() }
    }

    /// Bytes of the packed bf16 operands (grown to the largest A and B so far).
    public var bytes: Int { packedA.bytes + packedB.bytes }

    /// Distinct shapes compiled so far (over all workers).
    public var shapeCount: Int { workers.reduce(0) { $0 + $1.products.count } }

    /// `C = op(A) op(B) + beta C` with `beta` 0 or 1 (see the file header).
    public func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        precondition(beta == 0 || beta == 1, "BF16GEMM supports beta 0 or 1, not \(beta)")
        guard m > 0, n > 0 else { return }
        if k == 0 {
            if beta == 0 { for row in 0..<m { (c + row * ldc).update(repeating: 0, count: n) } }
            return
        }
        // Stored operands: A is [m, k] (or [k, m] transposed) with row stride lda; likewise B.
        let aRows = transposeA ? k : m, aColumns = transposeA ? m : k
        let bRows = transposeB ? n : k, bColumns = transposeB ? k : n
        let a16 = packedA.reserve(aRows * aColumns), b16 = packedB.reserve(bRows * bColumns)
        let flops = 2 * Double(m) * Double(n) * Double(k)
        let split = threads > 1 && flops >= 4 * ParallelGEMM.minimumFLOPs && Swift.max(m, n) >= 32
        BF16GEMM.pack(a, rows: aRows, columns: aColumns, stride: lda, into: a16, threads: split ? threads : 1)
        BF16GEMM.pack(b, rows: bRows, columns: bColumns, stride: ldb, into: b16, threads: split ? threads : 1)
        let whole = Shape(
            transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, lda: aColumns, ldb: bColumns,
            ldc: ldc, accumulate: beta == 1)
        guard split else {
            workers[0].run(whole, a: a16, b: b16, c: c)
            return
        }
        let cut = ParallelGEMM.Cut(m: m, n: n, threads: threads)
        WorkQueue.run(count: cut.pieces, threads: threads) { piece, worker in
            let (first, count) = cut.range(piece)
            guard count > 0 else { return }
            var shape = whole
            if cut.alongRows {
                shape.m = count
                let aPiece = transposeA ? a16 + first : a16 + first * aColumns
                workers[worker].run(shape, a: aPiece, b: b16, c: c + first * ldc)
            } else {
                shape.n = count
                let bPiece = transposeB ? b16 + first * bColumns : b16 + first
                workers[worker].run(shape, a: a16, b: bPiece, c: c + first)
            }
        }
    }

    /// Rounds a strided fp32 matrix into a packed bf16 one, rows shared among `threads` workers.
    private static func pack(
        _ source: UnsafePointer<Float>, rows: Int, columns: Int, stride: Int, into target: UnsafeMutablePointer<UInt16>,
        threads: Int
    ) {
        WorkQueue.forEachChunk(count: rows, threads: threads, minimumChunk: Swift.max(1, 65_536 / columns)) { range in
            if stride == columns {
                BFloat16.round(
                    source + range.lowerBound * columns, into: target + range.lowerBound * columns,
                    count: range.count * columns)
            } else {
                for row in range {
                    BFloat16.round(source + row * stride, into: target + row * columns, count: columns)
                }
            }
        }
    }

    private typealias SetThreads = @convention(c) (Int32) -> Void
    /// libgomp's `omp_set_num_threads`, looked up in the process (libdnnl loads libgomp; Debian ships
    /// no unversioned libgomp.so to link against by name).
    private static let setThreads: SetThreads? = {
        guard let symbol = dlsym(nil, "omp_set_num_threads") else { return nil }
        return unsafeBitCast(symbol, to: SetThreads.self)
    }()

    /// Sets the OpenMP team size of the calling thread (a per-thread setting, so set before each product:
    /// one, since the parallelism comes from the pieces).
    static func setThreadCount(_ count: Int) { setThreads?(Int32(count)) }

    static func check(_ status: dnnl_status_t, _ what: @autoclosure () -> String) {
        precondition(status == dnnl_success, "oneDNN failed (status \(status.rawValue)) creating or running \(what())")
    }
}

extension KernelScalar {
    /// `gemm` in bf16 on `engine` when one is given and this is fp32 (the bf16 path has no float64
    /// form: gradient checks run the float64 kernels), else in this precision on `threads` workers.
    @inlinable
    public static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Self>, lda: Int,
        b: UnsafePointer<Self>, ldb: Int, beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int, engine: BF16GEMM?,
        threads: Int = 1
    ) {
        if let engine, Self.self == Float.self {
            engine.gemm(
                transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                a: UnsafeRawPointer(a).assumingMemoryBound(to: Float.self), lda: lda,
                b: UnsafeRawPointer(b).assumingMemoryBound(to: Float.self), ldb: ldb, beta: Float(beta),
                c: UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), ldc: ldc)
        } else {
            gemm(
                transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: b,
                ldb: ldb, beta: beta, c: c, ldc: ldc, threads: threads)
        }
    }
}
