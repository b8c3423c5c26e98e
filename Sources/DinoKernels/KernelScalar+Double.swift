// float64 implementations of the element operations: plain loops with libm, the precision
// reference for finite-difference gradient checks of the same kernels.

import Foundation

extension Double {
    public static func addColumnSums(
        _ sums: UnsafeMutablePointer<Double>, _ x: UnsafePointer<Double>, rows: Int,
        columns: Int, stride: Int
    ) {
        for c in 0..<columns {
            var acc = 0.0
            for r in 0..<rows { acc += x[r * stride + c] }
            sums[c] += acc
        }
    }

    public static func multiply(
        _ out: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>,
        _ n: Int
    ) {
        for i in 0..<n { out[i] = a[i] * b[i] }
    }

    public static func add(_ x: UnsafeMutablePointer<Double>, _ y: UnsafePointer<Double>, _ n: Int) {
        for i in 0..<n { x[i] += y[i] }
    }

    public static func linearCombination(
        _ out: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>,
        _ alpha: Double, _ b: UnsafePointer<Double>, _ beta: Double, _ n: Int
    ) {
        for i in 0..<n { out[i] = alpha * a[i] + beta * b[i] }
    }

    public static func addScaledProduct(
        _ x: UnsafeMutablePointer<Double>, _ gamma: UnsafePointer<Double>,
        _ y: UnsafePointer<Double>, _ n: Int, _ scale: Double
    ) {
        for i in 0..<n { x[i] += scale * gamma[i] * y[i] }
    }

    public static func addScaledProductBackward(
        _ dY: UnsafeMutablePointer<Double>,
        _ dGamma: UnsafeMutablePointer<Double>, _ dX: UnsafePointer<Double>,
        _ y: UnsafePointer<Double>, _ gamma: UnsafePointer<Double>, _ n: Int,
        _ scale: Double
    ) {
        for i in 0..<n {
            dY[i] = scale * gamma[i] * dX[i]
            dGamma[i] += scale * y[i] * dX[i]
        }
    }

    public static func layerNormForward(
        _ out: UnsafeMutablePointer<Double>, _ x: UnsafePointer<Double>,
        _ weight: UnsafePointer<Double>, _ bias: UnsafePointer<Double>, _ n: Int,
        _ epsilon: Double
    ) -> (mean: Double, rstd: Double) {
        var mean = 0.0
        for i in 0..<n { mean += x[i] }
        mean /= Double(n)
        var variance = 0.0
        for i in 0..<n { variance += (x[i] - mean) * (x[i] - mean) }
        let rstd = 1 / (variance / Double(n) + epsilon).squareRoot()
        for i in 0..<n { out[i] = (x[i] - mean) * rstd * weight[i] + bias[i] }
        return (mean, rstd)
    }

    public static func layerNormBackward(
        _ dX: UnsafeMutablePointer<Double>, _ dWeight: UnsafeMutablePointer<Double>,
        _ dBias: UnsafeMutablePointer<Double>, _ dOut: UnsafePointer<Double>,
        _ x: UnsafePointer<Double>, _ weight: UnsafePointer<Double>, _ mean: Double,
        _ rstd: Double, _ n: Int, accumulate: Bool
    ) {
        var meanG = 0.0, meanGX = 0.0
        for i in 0..<n {
            let xhat = (x[i] - mean) * rstd
            dWeight[i] += dOut[i] * xhat
            dBias[i] += dOut[i]
            meanG += dOut[i] * weight[i]
            meanGX += dOut[i] * weight[i] * xhat
        }
        meanG /= Double(n)
        meanGX /= Double(n)
        for i in 0..<n {
            let xhat = (x[i] - mean) * rstd
            let d = rstd * (dOut[i] * weight[i] - meanG - xhat * meanGX)
            dX[i] = accumulate ? dX[i] + d : d
        }
    }

    public static func gelu(_ out: UnsafeMutablePointer<Double>, _ x: UnsafePointer<Double>, _ n: Int) {
        for i in 0..<n { out[i] = 0.5 * x[i] * (1 + Foundation.erf(x[i] / 2.0.squareRoot())) }
    }

    public static func geluBackward(
        _ dX: UnsafeMutablePointer<Double>, _ dOut: UnsafePointer<Double>,
        _ x: UnsafePointer<Double>, _ n: Int
    ) {
        for i in 0..<n {
            let cdf = 0.5 * (1 + Foundation.erf(x[i] / 2.0.squareRoot()))
            let pdf = Foundation.exp(-0.5 * x[i] * x[i]) / (2 * Double.pi).squareRoot()
            dX[i] = dOut[i] * (cdf + x[i] * pdf)
        }
    }

    public static func swiglu(
        _ out: UnsafeMutablePointer<Double>, _ x1: UnsafePointer<Double>,
        _ x2: UnsafePointer<Double>, _ n: Int
    ) {
        for i in 0..<n { out[i] = x1[i] / (1 + Foundation.exp(-x1[i])) * x2[i] }
    }

    public static func swigluBackward(
        _ dX1: UnsafeMutablePointer<Double>, _ dX2: UnsafeMutablePointer<Double>,
        _ dOut: UnsafePointer<Double>, _ x1: UnsafePointer<Double>,
        _ x2: UnsafePointer<Double>, _ n: Int
    ) {
        for i in 0..<n {
            let s = 1 / (1 + Foundation.exp(-x1[i]))
            dX2[i] = dOut[i] * x1[i] * s
            dX1[i] = dOut[i] * x2[i] * s * (1 + x1[i] * (1 - s))
        }
    }
}

extension Double {
    public static func attentionForward(
        out: UnsafeMutablePointer<Double>, lse: UnsafeMutablePointer<Double>,
        qkv: UnsafePointer<Double>, sequences: PackedSequences, heads: Int, headDim: Int,
        workspace: AttentionWorkspace<Double>, threads: Int
    ) {
        PackedAttention.forward(
            out: out, lse: lse, qkv: qkv, sequences: sequences, heads: heads, headDim: headDim,
            workspace: workspace, threads: threads)
    }

    public static func attentionBackward(
        dQKV: UnsafeMutablePointer<Double>, dOut: UnsafePointer<Double>,
        qkv: UnsafePointer<Double>, out: UnsafePointer<Double>, lse: UnsafePointer<Double>,
        sequences: PackedSequences, heads: Int, headDim: Int,
        workspace: AttentionWorkspace<Double>, threads: Int
    ) {
        PackedAttention.backward(
            dQKV: dQKV, dOut: dOut, qkv: qkv, out: out, lse: lse, sequences: sequences,
            heads: heads, headDim: headDim, workspace: workspace, threads: threads)
    }
}
