// The element operations every kernel is written over, for float32 (vectorised, the training path)
// and float64 (the same algorithms at double precision, for gradient checks against finite
// differences). Kernels are generic shells over these: all element loops live here, implemented
// concretely per type, so even an unspecialised generic caller runs vectorised loops.
// Row operations act on n contiguous elements; sums reduce in a fixed order, so results never
// depend on which thread runs them.

import CBLAS
import Foundation

extension KernelScalar {
    /// `addColumnSums` of a dense [rows, columns] matrix.
    @inlinable
    public static func addColumnSums(
        _ sums: UnsafeMutablePointer<Self>, _ x: UnsafePointer<Self>, rows: Int, columns: Int
    ) {
        addColumnSums(sums, x, rows: rows, columns: columns, stride: columns)
    }
}

/// A floating-point type the kernels run in.
public protocol KernelScalar: BinaryFloatingPoint, Sendable {
    /// Row-major GEMM: `C = alpha * op(A) * op(B) + beta * C`.
    static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Self,
        a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int, beta: Self,
        c: UnsafeMutablePointer<Self>, ldc: Int)
    /// The largest of `n` elements (`-infinity` for n = 0).
    static func rowMax(_ x: UnsafePointer<Self>, _ n: Int) -> Self
    /// `x[i] = exp(x[i] - shift)` for i < n; returns the sum of the new values.
    static func expSubtractSum(_ x: UnsafeMutablePointer<Self>, _ n: Int, _ shift: Self) -> Self
    /// `x[i] = exp(x[i] - shift)` for i < n.
    static func expSubtract(_ x: UnsafeMutablePointer<Self>, _ n: Int, _ shift: Self)
    /// `x[i] *= factor` for i < n.
    static func scale(_ x: UnsafeMutablePointer<Self>, _ n: Int, _ factor: Self)
    /// `out[i] = a[i] * b[i]` for i < n (out may alias a or b).
    static func multiply(
        _ out: UnsafeMutablePointer<Self>, _ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, _ n: Int)
    /// `sum_i a[i] * b[i]`.
    static func dot(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, _ n: Int) -> Self
    /// Sum of `n` values.
    static func sum(_ x: UnsafePointer<Self>, _ n: Int) -> Self
    /// Softmax backward on one row: `dp[i] = p[i] * (dp[i] - rowDot)`.
    static func softmaxBackward(_ dp: UnsafeMutablePointer<Self>, _ p: UnsafePointer<Self>, _ n: Int, _ rowDot: Self)
    /// Scalar exp and natural log.
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self

    /// Packed attention forward in this precision (see `PackedAttention`).
    static func attentionForward(
        out: UnsafeMutablePointer<Self>, lse: UnsafeMutablePointer<Self>,
        qkv: UnsafePointer<Self>, sequences: PackedSequences, heads: Int, headDim: Int,
        workspace: AttentionWorkspace<Self>, threads: Int)
    /// Packed attention backward in this precision (see `PackedAttention`).
    static func attentionBackward(
        dQKV: UnsafeMutablePointer<Self>, dOut: UnsafePointer<Self>, qkv: UnsafePointer<Self>,
        out: UnsafePointer<Self>, lse: UnsafePointer<Self>, sequences: PackedSequences,
        heads: Int, headDim: Int, workspace: AttentionWorkspace<Self>, threads: Int)
    /// `sums[c] += sum over rows of x[r, c]` for `columns` columns of rows `stride` apart; the row
    /// sum is formed first, so calling twice from zero gives exactly twice the result (the
    /// accumulation contract of parameter gradients).
    static func addColumnSums(
        _ sums: UnsafeMutablePointer<Self>, _ x: UnsafePointer<Self>, rows: Int, columns: Int, stride: Int)
    /// `x += y`.
    static func add(_ x: UnsafeMutablePointer<Self>, _ y: UnsafePointer<Self>, _ n: Int)
    /// `out = alpha * a + beta * b` (out may alias a or b).
    static func linearCombination(
        _ out: UnsafeMutablePointer<Self>, _ a: UnsafePointer<Self>, _ alpha: Self,
        _ b: UnsafePointer<Self>, _ beta: Self, _ n: Int)
    /// LayerScale into the residual stream: `x += scale * gamma * y`.
    static func addScaledProduct(
        _ x: UnsafeMutablePointer<Self>, _ gamma: UnsafePointer<Self>, _ y: UnsafePointer<Self>,
        _ n: Int, _ scale: Self)
    /// Backward of `addScaledProduct`: `dY = scale * gamma * dX` (=), `dGamma += scale * y * dX`.
    static func addScaledProductBackward(
        _ dY: UnsafeMutablePointer<Self>, _ dGamma: UnsafeMutablePointer<Self>,
        _ dX: UnsafePointer<Self>, _ y: UnsafePointer<Self>,
        _ gamma: UnsafePointer<Self>, _ n: Int, _ scale: Self)
    /// LayerNorm of one row: `out = (x - mean) * rstd * weight + bias`; returns (mean, rstd).
    static func layerNormForward(
        _ out: UnsafeMutablePointer<Self>, _ x: UnsafePointer<Self>, _ weight: UnsafePointer<Self>,
        _ bias: UnsafePointer<Self>, _ n: Int, _ epsilon: Self
    ) -> (mean: Self, rstd: Self)
    /// LayerNorm backward of one row: dWeight, dBias accumulate; dX accumulates when `accumulate`.
    static func layerNormBackward(
        _ dX: UnsafeMutablePointer<Self>, _ dWeight: UnsafeMutablePointer<Self>,
        _ dBias: UnsafeMutablePointer<Self>, _ dOut: UnsafePointer<Self>,
        _ x: UnsafePointer<Self>, _ weight: UnsafePointer<Self>, _ mean: Self, _ rstd: Self,
        _ n: Int, accumulate: Bool)
    /// Exact GELU `0.5 x (1 + erf(x / sqrt 2))`.
    static func gelu(_ out: UnsafeMutablePointer<Self>, _ x: UnsafePointer<Self>, _ n: Int)
    /// GELU backward: `dX = dOut * (Phi(x) + x phi(x))` (=).
    static func geluBackward(
        _ dX: UnsafeMutablePointer<Self>, _ dOut: UnsafePointer<Self>, _ x: UnsafePointer<Self>,
        _ n: Int)
    /// SwiGLU gate: `out = silu(x1) * x2`.
    static func swiglu(
        _ out: UnsafeMutablePointer<Self>, _ x1: UnsafePointer<Self>, _ x2: UnsafePointer<Self>, _ n: Int)
    /// SwiGLU backward: `dX1 = dOut * x2 * silu'(x1)`, `dX2 = dOut * silu(x1)` (both =).
    static func swigluBackward(
        _ dX1: UnsafeMutablePointer<Self>, _ dX2: UnsafeMutablePointer<Self>,
        _ dOut: UnsafePointer<Self>, _ x1: UnsafePointer<Self>, _ x2: UnsafePointer<Self>,
        _ n: Int)
}

extension Float: KernelScalar {
    @inlinable
    public static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        BLAS.sgemm(
            transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
            b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    @inlinable
    public static func rowMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        let raw = UnsafeRawPointer(x)
        var best = SIMD16<Float>(repeating: -.infinity)
        var i = 0
        while i + 16 <= n {
            best = FastMath.maximum(best, raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self))
            i += 16
        }
        var result = FastMath.horizontalMax(best)
        while i < n {
            result = Swift.max(result, x[i])
            i += 1
        }
        return result
    }

    @inlinable
    public static func expSubtractSum(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ shift: Float) -> Float {
        let raw = UnsafeMutableRawPointer(x)
        let s = SIMD16<Float>(repeating: shift)
        var sum = SIMD16<Float>()
        var i = 0
        while i + 16 <= n {
            let e = FastMath.exp(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) - s)
            raw.storeBytes(of: e, toByteOffset: i * 4, as: SIMD16<Float>.self)
            sum += e
            i += 16
        }
        if i < n {
            let e = expTail(x + i, n - i, shift)
            sum += e
        }
        return FastMath.horizontalSum(sum)
    }

    @inlinable
    public static func expSubtract(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ shift: Float) {
        let raw = UnsafeMutableRawPointer(x)
        let s = SIMD16<Float>(repeating: shift)
        var i = 0
        while i + 16 <= n {
            let e = FastMath.exp(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) - s)
            raw.storeBytes(of: e, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        if i < n { _ = expTail(x + i, n - i, shift) }
    }

    /// The last `count` (< 16) elements through one vector exp; returns their values (0 in unused lanes).
    @inlinable @inline(__always)
    static func expTail(_ x: UnsafeMutablePointer<Float>, _ count: Int, _ shift: Float) -> SIMD16<Float> {
        var lanes = SIMD16<Float>(repeating: -.infinity)
        for j in 0..<count { lanes[j] = x[j] - shift }
        let e = FastMath.exp(lanes)  // -inf lanes give exactly 0
        for j in 0..<count { x[j] = e[j] }
        return e
    }

    @inlinable
    public static func scale(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ factor: Float) {
        let raw = UnsafeMutableRawPointer(x)
        let f = SIMD16<Float>(repeating: factor)
        var i = 0
        while i + 16 <= n {
            raw.storeBytes(
                of: raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * f,
                toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n {
            x[i] *= factor
            i += 1
        }
    }

    @inlinable
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var acc = SIMD16<Float>()
        var i = 0
        while i + 16 <= n {
            acc.addProduct(
                ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self),
                rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self))
            i += 16
        }
        var result = FastMath.horizontalSum(acc)
        while i < n {
            result = result.addingProduct(a[i], b[i])
            i += 1
        }
        return result
    }

    @inlinable
    public static func sum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        let raw = UnsafeRawPointer(x)
        var acc = SIMD16<Float>()
        var i = 0
        while i + 16 <= n {
            acc += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        var result = FastMath.horizontalSum(acc)
        while i < n {
            result += x[i]
            i += 1
        }
        return result
    }

    @inlinable
    public static func softmaxBackward(
        _ dp: UnsafeMutablePointer<Float>, _ p: UnsafePointer<Float>, _ n: Int,
        _ rowDot: Float
    ) {
        let rd = UnsafeMutableRawPointer(dp), rp = UnsafeRawPointer(p)
        let d = SIMD16<Float>(repeating: rowDot)
        var i = 0
        while i + 16 <= n {
            let g = rd.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            let pr = rp.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            rd.storeBytes(of: pr * (g - d), toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n {
            dp[i] = p[i] * (dp[i] - rowDot)
            i += 1
        }
    }

    @inlinable public static func exp(_ x: Float) -> Float { Foundation.exp(x) }
    @inlinable public static func log(_ x: Float) -> Float { Foundation.log(x) }
}

extension Double: KernelScalar {
    public static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Double,
        a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int, beta: Double,
        c: UnsafeMutablePointer<Double>, ldc: Int
    ) {
        cblas_dgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    public static func rowMax(_ x: UnsafePointer<Double>, _ n: Int) -> Double {
        var result = -Double.infinity
        for i in 0..<n { result = Swift.max(result, x[i]) }
        return result
    }

    public static func expSubtractSum(_ x: UnsafeMutablePointer<Double>, _ n: Int, _ shift: Double) -> Double {
        var sum = 0.0
        for i in 0..<n {
            x[i] = Foundation.exp(x[i] - shift)
            sum += x[i]
        }
        return sum
    }

    public static func expSubtract(_ x: UnsafeMutablePointer<Double>, _ n: Int, _ shift: Double) {
        for i in 0..<n { x[i] = Foundation.exp(x[i] - shift) }
    }

    public static func scale(_ x: UnsafeMutablePointer<Double>, _ n: Int, _ factor: Double) {
        for i in 0..<n { x[i] *= factor }
    }

    public static func dot(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ n: Int) -> Double {
        var sum = 0.0
        for i in 0..<n { sum += a[i] * b[i] }
        return sum
    }

    public static func sum(_ x: UnsafePointer<Double>, _ n: Int) -> Double {
        var total = 0.0
        for i in 0..<n { total += x[i] }
        return total
    }

    public static func softmaxBackward(
        _ dp: UnsafeMutablePointer<Double>, _ p: UnsafePointer<Double>, _ n: Int,
        _ rowDot: Double
    ) {
        for i in 0..<n { dp[i] = p[i] * (dp[i] - rowDot) }
    }

    public static func exp(_ x: Double) -> Double { Foundation.exp(x) }
    public static func log(_ x: Double) -> Double { Foundation.log(x) }
}

extension UnsafeMutablePointer where Pointee: KernelScalar {
    /// Sets `count` elements to +0 with one memset. `update(repeating: 0, count:)` in code that is
    /// not specialised for the element type assigns element by element through the type's value
    /// witnesses, tens of times slower on gradient buffers of millions of elements.
    @inlinable
    public func setToZero(count: Int) {
        guard count > 0 else { return }
        memset(self, 0, count * MemoryLayout<Pointee>.stride)
    }
}
