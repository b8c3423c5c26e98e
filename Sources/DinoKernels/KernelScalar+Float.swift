// float32 implementations of the element operations: SIMD16 loops (one zmm register per step on
// AVX-512 builds); the ragged tail goes through the same vector code on a partially filled vector.

extension Float {
    /// Visits `n` elements in vectors of 16: `body(offset, count)` with count 16, or fewer at the end.
    @inlinable @inline(__always)
    static func vectorLoop(_ n: Int, _ body: (_ offset: Int, _ count: Int) -> Void) {
        var i = 0
        while i < n {
            body(i, Swift.min(16, n - i))
            i += 16
        }
    }

    @inlinable @inline(__always)
    static func load(_ p: UnsafePointer<Float>, _ offset: Int, _ count: Int) -> SIMD16<Float> {
        count == 16
            ? UnsafeRawPointer(p + offset).loadUnaligned(as: SIMD16<Float>.self)
            : FastMath.loadPartial(p + offset, count)
    }

    @inlinable @inline(__always)
    static func store(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>, _ offset: Int, _ count: Int) {
        if count == 16 {
            UnsafeMutableRawPointer(p + offset).storeBytes(of: v, as: SIMD16<Float>.self)
        } else {
            FastMath.storePartial(v, p + offset, count)
        }
    }

    @inlinable
    public static func addColumnSums(
        _ sums: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: Int,
        columns: Int, stride: Int
    ) {
        // Strips of 64 columns (four registers) walked down the rows: each row contributes 256
        // contiguous bytes, where 16-column strips touched a new cache line per row. Per column the
        // order is that of a plain column walk (0 + x0 + x1 + ..., then sums += total).
        var first = 0
        while first + 64 <= columns {
            var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
            for r in 0..<rows {
                let row = x + r * stride + first
                a0 += load(row, 0, 16)
                a1 += load(row, 16, 16)
                a2 += load(row, 32, 16)
                a3 += load(row, 48, 16)
            }
            let target = sums + first
            store(load(target, 0, 16) + a0, target, 0, 16)
            store(load(target, 16, 16) + a1, target, 16, 16)
            store(load(target, 32, 16) + a2, target, 32, 16)
            store(load(target, 48, 16) + a3, target, 48, 16)
            first += 64
        }
        vectorLoop(columns - first) { i, c in
            var acc = SIMD16<Float>()
            for r in 0..<rows { acc += load(x + r * stride + first, i, c) }
            store(load(sums + first, i, c) + acc, sums + first, i, c)
        }
    }

    @inlinable
    public static func multiply(
        _ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
        _ n: Int
    ) {
        vectorLoop(n) { i, c in store(load(a, i, c) * load(b, i, c), out, i, c) }
    }

    @inlinable
    public static func add(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) {
        vectorLoop(n) { i, c in store(load(x, i, c) + load(y, i, c), x, i, c) }
    }

    @inlinable
    public static func linearCombination(
        _ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ alpha: Float,
        _ b: UnsafePointer<Float>, _ beta: Float, _ n: Int
    ) {
        let va = SIMD16<Float>(repeating: alpha), vb = SIMD16<Float>(repeating: beta)
        vectorLoop(n) { i, c in store(load(a, i, c) * va + load(b, i, c) * vb, out, i, c) }
    }

    @inlinable
    public static func addScaledProduct(
        _ x: UnsafeMutablePointer<Float>, _ gamma: UnsafePointer<Float>,
        _ y: UnsafePointer<Float>, _ n: Int, _ scale: Float
    ) {
        let s = SIMD16<Float>(repeating: scale)
        vectorLoop(n) { i, c in store(load(x, i, c) + s * load(gamma, i, c) * load(y, i, c), x, i, c) }
    }

    @inlinable
    public static func addScaledProductBackward(
        _ dY: UnsafeMutablePointer<Float>, _ dGamma: UnsafeMutablePointer<Float>,
        _ dX: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
        _ gamma: UnsafePointer<Float>, _ n: Int, _ scale: Float
    ) {
        let s = SIMD16<Float>(repeating: scale)
        vectorLoop(n) { i, c in
            let g = load(dX, i, c) * s
            store(g * load(gamma, i, c), dY, i, c)
            store(load(dGamma, i, c) + g * load(y, i, c), dGamma, i, c)
        }
    }

    @inlinable
    public static func layerNormForward(
        _ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
        _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>, _ n: Int,
        _ epsilon: Float
    ) -> (mean: Float, rstd: Float) {
        var sum = SIMD16<Float>()
        vectorLoop(n) { i, c in sum += load(x, i, c) }  // partial vectors are zero-filled
        let mean = FastMath.horizontalSum(sum) / Float(n)
        let m = SIMD16<Float>(repeating: mean)
        var squares = SIMD16<Float>()
        vectorLoop(n) { i, c in
            var d = load(x, i, c) - m
            if c < 16 { for j in c..<16 { d[j] = 0 } }
            squares += d * d
        }
        let rstd = 1 / (FastMath.horizontalSum(squares) / Float(n) + epsilon).squareRoot()
        let r = SIMD16<Float>(repeating: rstd)
        vectorLoop(n) { i, c in store((load(x, i, c) - m) * r * load(weight, i, c) + load(bias, i, c), out, i, c) }
        return (mean, rstd)
    }

    @inlinable
    public static func layerNormBackward(
        _ dX: UnsafeMutablePointer<Float>, _ dWeight: UnsafeMutablePointer<Float>,
        _ dBias: UnsafeMutablePointer<Float>, _ dOut: UnsafePointer<Float>,
        _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ mean: Float,
        _ rstd: Float, _ n: Int, accumulate: Bool
    ) {
        let m = SIMD16<Float>(repeating: mean), r = SIMD16<Float>(repeating: rstd)
        var sumG = SIMD16<Float>(), sumGX = SIMD16<Float>()
        vectorLoop(n) { i, c in
            let g = load(dOut, i, c)
            let xhat = (load(x, i, c) - m) * r
            store(load(dWeight, i, c) + g * xhat, dWeight, i, c)
            store(load(dBias, i, c) + g, dBias, i, c)
            let gw = g * load(weight, i, c)  // zero in unused lanes: dOut lanes load as 0
            sumG += gw
            sumGX += gw * xhat
        }
        let meanG = SIMD16<Float>(repeating: FastMath.horizontalSum(sumG) / Float(n))
        let meanGX = SIMD16<Float>(repeating: FastMath.horizontalSum(sumGX) / Float(n))
        vectorLoop(n) { i, c in
            let xhat = (load(x, i, c) - m) * r
            let d = r * (load(dOut, i, c) * load(weight, i, c) - meanG - xhat * meanGX)
            store(accumulate ? load(dX, i, c) + d : d, dX, i, c)
        }
    }

    // The heavier pointwise kernels spell their loop out: a closure this large is not inlined into
    // vectorLoop, and the call per vector (with SIMD16 values through memory) costs 10x.

    @inlinable
    public static func gelu(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i < n {
            let c = Swift.min(16, n - i)
            store(geluVector(load(x, i, c)), out, i, c)
            i += 16
        }
    }

    @inlinable @inline(__always)
    static func geluVector(_ v: SIMD16<Float>) -> SIMD16<Float> {
        SIMD16<Float>(repeating: 0.5) * v
            * (SIMD16<Float>(repeating: 1) + FastMath.erf(v * SIMD16<Float>(repeating: 0.707_106_781_186_547_6)))
    }

    @inlinable
    public static func geluBackward(
        _ dX: UnsafeMutablePointer<Float>, _ dOut: UnsafePointer<Float>,
        _ x: UnsafePointer<Float>, _ n: Int
    ) {
        var i = 0
        while i < n {
            let c = Swift.min(16, n - i)
            store(load(dOut, i, c) * geluDerivativeVector(load(x, i, c)), dX, i, c)
            i += 16
        }
    }

    /// GELU'(v) = Phi(v) + v phi(v). Two exponentials (one inside erf) instead of one shared: sharing
    /// it made LLVM split the whole body into 128-bit pieces (4x slower); this form stays in zmm.
    @inlinable @inline(__always)
    static func geluDerivativeVector(_ v: SIMD16<Float>) -> SIMD16<Float> {
        let cdf =
            SIMD16<Float>(repeating: 0.5)
            * (SIMD16<Float>(repeating: 1) + FastMath.erf(v * SIMD16<Float>(repeating: 0.707_106_781_186_547_6)))
        let pdf =
            SIMD16<Float>(repeating: 0.398_942_280_401_432_7) * FastMath.exp(v * v * SIMD16<Float>(repeating: -0.5))
        return cdf + v * pdf
    }

    @inlinable
    public static func swiglu(
        _ out: UnsafeMutablePointer<Float>, _ x1: UnsafePointer<Float>, _ x2: UnsafePointer<Float>,
        _ n: Int
    ) {
        var i = 0
        while i < n {
            let c = Swift.min(16, n - i)
            let a = load(x1, i, c)
            store(a * FastMath.sigmoid(a) * load(x2, i, c), out, i, c)
            i += 16
        }
    }

    @inlinable
    public static func swigluBackward(
        _ dX1: UnsafeMutablePointer<Float>, _ dX2: UnsafeMutablePointer<Float>,
        _ dOut: UnsafePointer<Float>, _ x1: UnsafePointer<Float>, _ x2: UnsafePointer<Float>,
        _ n: Int
    ) {
        let one = SIMD16<Float>(repeating: 1)
        var i = 0
        while i < n {
            let c = Swift.min(16, n - i)
            let a = load(x1, i, c), g = load(dOut, i, c)
            let s = FastMath.sigmoid(a)
            store(g * a * s, dX2, i, c)
            store(g * load(x2, i, c) * s * (one + a * (one - s)), dX1, i, c)
            i += 16
        }
    }
}

extension Float {
    public static func attentionForward(
        out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
        qkv: UnsafePointer<Float>, sequences: PackedSequences, heads: Int, headDim: Int,
        workspace: AttentionWorkspace<Float>, threads: Int
    ) {
        PackedAttention.forward(
            out: out, lse: lse, qkv: qkv, sequences: sequences, heads: heads, headDim: headDim,
            workspace: workspace, threads: threads)
    }

    public static func attentionBackward(
        dQKV: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
        qkv: UnsafePointer<Float>, out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
        sequences: PackedSequences, heads: Int, headDim: Int,
        workspace: AttentionWorkspace<Float>, threads: Int
    ) {
        PackedAttention.backward(
            dQKV: dQKV, dOut: dOut, qkv: qkv, out: out, lse: lse, sequences: sequences,
            heads: heads, headDim: headDim, workspace: workspace, threads: threads)
    }
}
