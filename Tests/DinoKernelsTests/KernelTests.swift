// Every ViT kernel: its float64 instantiation against central finite differences (the gradients
// are right), its float32 instantiation against a naive float64 reference written here (the fast
// code is right), and the accumulation contract (parameter gradients add up over calls).

import DinoKernels
import DinoTestSupport
import Foundation
import Testing

// MARK: - Array wrappers, generic over the precision

func linear<T: KernelScalar>(_ x: [T], _ w: [T], _ b: [T], rows: Int, inF: Int, outF: Int) -> [T] {
    var out = [T](repeating: .nan, count: rows * outF)
    x.withUnsafeBufferPointer { xp in
        w.withUnsafeBufferPointer { wp in
            b.withUnsafeBufferPointer { bp in
                out.withUnsafeMutableBufferPointer { op in
                    Linear.forward(
                        out: op.baseAddress!, input: xp.baseAddress!, weight: wp.baseAddress!, bias: bp.baseAddress,
                        rows: rows, inFeatures: inF, outFeatures: outF)
                }
            }
        }
    }
    return out
}

/// Returns (dInput, dWeight, dBias) for upstream `g`, with dWeight/dBias starting from `start`.
func linearBackward<T: KernelScalar>(
    _ g: [T], _ x: [T], _ w: [T], rows: Int, inF: Int, outF: Int,
    startWeight: [T]? = nil, startBias: [T]? = nil
) -> ([T], [T], [T]) {
    var dx = [T](repeating: .nan, count: rows * inF)
    var dw = startWeight ?? [T](repeating: 0, count: outF * inF)
    var db = startBias ?? [T](repeating: 0, count: outF)
    g.withUnsafeBufferPointer { gp in
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                dx.withUnsafeMutableBufferPointer { dxp in
                    dw.withUnsafeMutableBufferPointer { dwp in
                        db.withUnsafeMutableBufferPointer { dbp in
                            Linear.backward(
                                dInput: dxp.baseAddress!, dWeight: dwp.baseAddress!, dBias: dbp.baseAddress!,
                                dOut: gp.baseAddress!, input: xp.baseAddress!, weight: wp.baseAddress!, rows: rows,
                                inFeatures: inF, outFeatures: outF)
                        }
                    }
                }
            }
        }
    }
    return (dx, dw, db)
}

func layerNorm<T: KernelScalar>(_ x: [T], _ w: [T], _ b: [T], rows: Int, channels: Int) -> ([T], [T], [T]) {
    var out = [T](repeating: .nan, count: x.count), mean = [T](repeating: 0, count: rows), rstd = mean
    x.withUnsafeBufferPointer { xp in
        w.withUnsafeBufferPointer { wp in
            b.withUnsafeBufferPointer { bp in
                out.withUnsafeMutableBufferPointer { op in
                    mean.withUnsafeMutableBufferPointer { mp in
                        rstd.withUnsafeMutableBufferPointer { rp in
                            LayerNorm.forward(
                                out: op.baseAddress!, mean: mp.baseAddress!, rstd: rp.baseAddress!,
                                input: xp.baseAddress!, weight: wp.baseAddress!, bias: bp.baseAddress!, rows: rows,
                                channels: channels)
                        }
                    }
                }
            }
        }
    }
    return (out, mean, rstd)
}

func layerNormBackward<T: KernelScalar>(
    _ g: [T], _ x: [T], _ w: [T], _ b: [T], rows: Int, channels: Int,
    dInputStart: [T]
) -> ([T], [T], [T]) {
    let (_, mean, rstd) = layerNorm(x, w, b, rows: rows, channels: channels)
    var dx = dInputStart, dw = [T](repeating: 0, count: channels), db = dw
    g.withUnsafeBufferPointer { gp in
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                mean.withUnsafeBufferPointer { mp in
                    rstd.withUnsafeBufferPointer { rp in
                        dx.withUnsafeMutableBufferPointer { dxp in
                            dw.withUnsafeMutableBufferPointer { dwp in
                                db.withUnsafeMutableBufferPointer { dbp in
                                    LayerNorm.backward(
                                        dInput: dxp.baseAddress!, dWeight: dwp.baseAddress!, dBias: dbp.baseAddress!,
                                        dOut: gp.baseAddress!, input: xp.baseAddress!, weight: wp.baseAddress!,
                                        mean: mp.baseAddress!, rstd: rp.baseAddress!, rows: rows, channels: channels)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    return (dx, dw, db)
}

func pointwise<T: KernelScalar>(_ x: [T], _ body: (UnsafeMutablePointer<T>, UnsafePointer<T>, Int) -> Void) -> [T] {
    var out = [T](repeating: .nan, count: x.count)
    x.withUnsafeBufferPointer { xp in
        out.withUnsafeMutableBufferPointer { body($0.baseAddress!, xp.baseAddress!, x.count) }
    }
    return out
}

// MARK: - Tests

@Suite("ViT kernels")
struct KernelTests {
    @Test("linear: float64 gradients equal finite differences; float32 matches a naive reference; += contract")
    func linearLayer() {
        let rows = 5, inF = 7, outF = 3
        var random = TestRandom(seed: 1)
        let x = random.normals(rows * inF), w = random.normals(outF * inF), b = random.normals(outF)
        let g = random.normals(rows * outF)
        let (dx, dw, db) = linearBackward(g, x, w, rows: rows, inF: inF, outF: outF)
        #expect(
            finiteDifferenceError(at: x, analytic: dx) {
                dotProduct(linear($0, w, b, rows: rows, inF: inF, outF: outF), g)
            } <= 1e-8)
        #expect(
            finiteDifferenceError(at: w, analytic: dw) {
                dotProduct(linear(x, $0, b, rows: rows, inF: inF, outF: outF), g)
            } <= 1e-8)
        #expect(
            finiteDifferenceError(at: b, analytic: db) {
                dotProduct(linear(x, w, $0, rows: rows, inF: inF, outF: outF), g)
            } <= 1e-8)

        // Naive float64 reference: out[r, o] = sum_i x[r, i] w[o, i] + b[o].
        var reference = [Double](repeating: 0, count: rows * outF)
        for r in 0..<rows {
            for o in 0..<outF {
                reference[r * outF + o] = b[o] + (0..<inF).reduce(0) { $0 + x[r * inF + $1] * w[o * inF + $1] }
            }
        }
        let f = { (a: [Double]) in a.map { Float($0) } }
        // float32 rounding of 7-term dot products of unit-scale values: well under 1e-6 relative.
        #expect(normwiseError(linear(f(x), f(w), f(b), rows: rows, inF: inF, outF: outF), reference) <= 1e-6)
        let (_, dw1, db1) = linearBackward(f(g), f(x), f(w), rows: rows, inF: inF, outF: outF)
        let (_, dw2, db2) = linearBackward(
            f(g), f(x), f(w), rows: rows, inF: inF, outF: outF, startWeight: dw1, startBias: db1)
        #expect(dw2 == dw1.map { $0 * 2 } && db2 == db1.map { $0 * 2 })
    }

    @Test("LayerNorm: finite differences in float64, naive reference in float32, dInput accumulates")
    func layerNormLayer() {
        let rows = 4, channels = 37  // not a multiple of 16: exercises the vector tail
        var random = TestRandom(seed: 2)
        let x = random.normals(rows * channels, scale: 3).map { $0 + 1.5 }
        let w = random.normals(channels), b = random.normals(channels), g = random.normals(rows * channels)
        let zero = [Double](repeating: 0, count: rows * channels)
        let (dx, dw, db) = layerNormBackward(g, x, w, b, rows: rows, channels: channels, dInputStart: zero)
        func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {
            dotProduct(layerNorm(x, w, b, rows: rows, channels: channels).0, g)
        }
        #expect(finiteDifferenceError(at: x, analytic: dx) { loss($0, w, b) } <= 1e-7)
        #expect(finiteDifferenceError(at: w, analytic: dw) { loss(x, $0, b) } <= 1e-7)
        #expect(finiteDifferenceError(at: b, analytic: db) { loss(x, w, $0) } <= 1e-7)
        var reference = [Double](repeating: 0, count: rows * channels)
        for r in 0..<rows {
            let row = x[(r * channels)..<((r + 1) * channels)]
            let mean = row.reduce(0, +) / Double(channels)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(channels)
            for c in 0..<channels {
                reference[r * channels + c] =
                    (x[r * channels + c] - mean) / (variance + 1e-6).squareRoot() * w[c] + b[c]
            }
        }
        let f = { (a: [Double]) in a.map { Float($0) } }
        #expect(normwiseError(layerNorm(f(x), f(w), f(b), rows: rows, channels: channels).0, reference) <= 2e-6)
        let (dxf, _, _) = layerNormBackward(
            f(g), f(x), f(w), f(b), rows: rows, channels: channels, dInputStart: f(zero))
        #expect(normwiseError(dxf, dx) <= 2e-6)
        let (dxTwice, _, _) = layerNormBackward(g, x, w, b, rows: rows, channels: channels, dInputStart: dx)
        #expect(normwiseError(dxTwice, dx.map { 2 * $0 }) <= 1e-15)  // dInput += (the residual stream)
    }

    @Test("GELU (exact erf): float32 within 4e-7 of float64; derivative equals finite differences")
    func gelu() {
        let x = stride(from: -8.0, through: 8.0, by: 0.0137).map { $0 }
        let exact = x.map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }
        let fast = pointwise(x.map { Float($0) }) { GELU.forward(out: $0, input: $1, count: $2) }
        var worst = 0.0
        for (v, e) in zip(fast, exact) { worst = max(worst, abs(Double(v) - e) / max(1, abs(e))) }
        // erf approximation 1.5e-7 absolute, times 0.5 |x|, plus float32 rounding, relative to max(1, |GELU|).
        #expect(worst <= 4e-7, "worst \(worst)")
        let g = x.map { sin($0) }
        let dx = pointwise(x) { out, input, n in
            g.withUnsafeBufferPointer { GELU.backward(dInput: out, dOut: $0.baseAddress!, input: input, count: n) }
        }
        #expect(
            finiteDifferenceError(at: x, analytic: dx, indices: Array(stride(from: 0, to: x.count, by: 7))) {
                dotProduct(pointwise($0) { GELU.forward(out: $0, input: $1, count: $2) }, g)
            } <= 1e-8)
        let dxf = pointwise(x.map { Float($0) }) { out, input, n in
            g.map { Float($0) }.withUnsafeBufferPointer {
                GELU.backward(dInput: out, dOut: $0.baseAddress!, input: input, count: n)
            }
        }
        #expect(normwiseError(dxf, dx) <= 1e-6)
    }

    @Test("GELU and SwiGLU on two threads give the bits of one thread (ranges split off a 16-multiple)")
    func activationsAcrossThreads() {
        // 100,003 values: three chunks of at least 32,768 would not fit, so two chunks and a ragged tail.
        // SwiGLU: 101 rows of 1,000 hidden features, in chunks of at least 32 rows.
        let n = 100_003, h = 1_000, rows = 101
        var random = TestRandom(seed: 11)
        let x = random.normals(2 * rows * h, scale: 3).map { Float($0) },
            g = random.normals(2 * rows * h).map { Float($0) }
        func run(_ threads: Int) -> [[UInt32]] {
            var out = [Float](repeating: .nan, count: n), dx = out
            var hidden = [Float](repeating: .nan, count: rows * h), dX12 = [Float](repeating: .nan, count: rows * 2 * h)
            x.withUnsafeBufferPointer { xp in
                g.withUnsafeBufferPointer { gp in
                    out.withUnsafeMutableBufferPointer {
                        GELU.forward(out: $0.baseAddress!, input: xp.baseAddress!, count: n, threads: threads)
                    }
                    dx.withUnsafeMutableBufferPointer {
                        GELU.backward(
                            dInput: $0.baseAddress!, dOut: gp.baseAddress!, input: xp.baseAddress!, count: n,
                            threads: threads)
                    }
                    hidden.withUnsafeMutableBufferPointer {
                        SwiGLU.forward(
                            hidden: $0.baseAddress!, x12: xp.baseAddress!, rows: rows, hiddenFeatures: h,
                            threads: threads)
                    }
                    dX12.withUnsafeMutableBufferPointer {
                        SwiGLU.backward(
                            dX12: $0.baseAddress!, dHidden: gp.baseAddress!, x12: xp.baseAddress!, rows: rows,
                            hiddenFeatures: h, threads: threads)
                    }
                }
            }
            return [out, dx, hidden, dX12].map { $0.map(\.bitPattern) }
        }
        let one = run(1), two = run(2)
        #expect(one[0].count == n && !one.joined().contains(Float.nan.bitPattern))
        for (a, b) in zip(one, two) { #expect(a == b) }
    }

    @Test("SwiGLU: official hidden sizes; finite differences; float32 against float64")
    func swiglu() {
        #expect(SwiGLU.hiddenFeatures(embedDim: 384) == 1024)
        #expect(SwiGLU.hiddenFeatures(embedDim: 768) == 2048)
        #expect(SwiGLU.hiddenFeatures(embedDim: 1024) == 2736)
        #expect(SwiGLU.hiddenFeatures(embedDim: 1536) == 4096)
        let rows = 3, h = 21
        var random = TestRandom(seed: 3)
        let x12 = random.normals(rows * 2 * h, scale: 2), g = random.normals(rows * h)
        func forward<T: KernelScalar>(_ x: [T]) -> [T] {
            var out = [T](repeating: .nan, count: rows * h)
            x.withUnsafeBufferPointer { xp in
                out.withUnsafeMutableBufferPointer {
                    SwiGLU.forward(hidden: $0.baseAddress!, x12: xp.baseAddress!, rows: rows, hiddenFeatures: h)
                }
            }
            return out
        }
        func backward<T: KernelScalar>(_ x: [T], _ g: [T]) -> [T] {
            var d = [T](repeating: .nan, count: rows * 2 * h)
            x.withUnsafeBufferPointer { xp in
                g.withUnsafeBufferPointer { gp in
                    d.withUnsafeMutableBufferPointer {
                        SwiGLU.backward(
                            dX12: $0.baseAddress!, dHidden: gp.baseAddress!, x12: xp.baseAddress!, rows: rows,
                            hiddenFeatures: h)
                    }
                }
            }
            return d
        }
        let d = backward(x12, g)
        #expect(finiteDifferenceError(at: x12, analytic: d) { dotProduct(forward($0), g) } <= 1e-8)
        #expect(normwiseError(forward(x12.map { Float($0) }), forward(x12)) <= 1e-6)
        #expect(normwiseError(backward(x12.map { Float($0) }, g.map { Float($0) }), d) <= 1e-6)
    }

    @Test("LayerScale with residual and stochastic-depth scale: finite differences; dGamma accumulates")
    func layerScale() {
        let rows = 3, c = 19
        var random = TestRandom(seed: 4)
        let x = random.normals(rows * c), y = random.normals(rows * c), gamma = random.normals(c)
        let g = random.normals(rows * c)
        let scale = 8.0 / 5.0
        func forward(_ y: [Double], _ gamma: [Double]) -> [Double] {
            var out = x
            y.withUnsafeBufferPointer { yp in
                gamma.withUnsafeBufferPointer { gp in
                    out.withUnsafeMutableBufferPointer {
                        LayerScale.forward(
                            residual: $0.baseAddress!, branch: yp.baseAddress!, gamma: gp.baseAddress!, rows: rows,
                            channels: c, scale: scale)
                    }
                }
            }
            return out
        }
        var dy = [Double](repeating: .nan, count: rows * c), dGamma = [Double](repeating: 0, count: c)
        for _ in 0..<2 {
            g.withUnsafeBufferPointer { gp in
                y.withUnsafeBufferPointer { yp in
                    gamma.withUnsafeBufferPointer { gap in
                        dy.withUnsafeMutableBufferPointer { dyp in
                            dGamma.withUnsafeMutableBufferPointer { dgp in
                                LayerScale.backward(
                                    dBranch: dyp.baseAddress!, dGamma: dgp.baseAddress!, dResidual: gp.baseAddress!,
                                    branch: yp.baseAddress!, gamma: gap.baseAddress!, rows: rows, channels: c,
                                    scale: scale)
                            }
                        }
                    }
                }
            }
        }
        #expect(finiteDifferenceError(at: y, analytic: dy) { dotProduct(forward($0, gamma), g) } <= 1e-8)
        #expect(
            finiteDifferenceError(at: gamma, analytic: dGamma.map { $0 / 2 }) { dotProduct(forward(y, $0), g) } <= 1e-8)
    }

    @Test("L2 normalisation and soft-target cross-entropy: finite differences in float64")
    func headHelpers() {
        let rows = 3, c = 17
        var random = TestRandom(seed: 5)
        let x = random.normals(rows * c), g = random.normals(rows * c)
        func normalize(_ x: [Double]) -> ([Double], [Double]) {
            var out = [Double](repeating: .nan, count: x.count), norms = [Double](repeating: 0, count: rows)
            x.withUnsafeBufferPointer { xp in
                out.withUnsafeMutableBufferPointer { op in
                    norms.withUnsafeMutableBufferPointer {
                        L2Normalize.forward(
                            out: op.baseAddress!, norms: $0.baseAddress!, input: xp.baseAddress!, rows: rows,
                            channels: c, epsilon: 1e-12)
                    }
                }
            }
            return (out, norms)
        }
        let (y, norms) = normalize(x)
        var dx = [Double](repeating: .nan, count: x.count)
        g.withUnsafeBufferPointer { gp in
            y.withUnsafeBufferPointer { yp in
                norms.withUnsafeBufferPointer { np in
                    dx.withUnsafeMutableBufferPointer {
                        L2Normalize.backward(
                            dInput: $0.baseAddress!, dOut: gp.baseAddress!, out: yp.baseAddress!,
                            norms: np.baseAddress!, rows: rows, channels: c, epsilon: 1e-12)
                    }
                }
            }
        }
        #expect(finiteDifferenceError(at: x, analytic: dx) { dotProduct(normalize($0).0, g) } <= 1e-8)
        for r in 0..<rows {
            #expect(abs(dotProduct(Array(y[(r * c)..<((r + 1) * c)]), Array(y[(r * c)..<((r + 1) * c)])) - 1) < 1e-12)
        }

        // Cross-entropy against soft targets that sum to one per row.
        var targets = random.normals(rows * c).map { exp($0) }
        for r in 0..<rows {
            let s = targets[(r * c)..<((r + 1) * c)].reduce(0, +)
            for j in 0..<c { targets[r * c + j] /= s }
        }
        let temperature = 0.1, weight = 0.7
        func crossEntropy(_ logits: [Double]) -> (Double, [Double]) {
            var d = [Double](repeating: .nan, count: logits.count), scratch = d
            let loss = logits.withUnsafeBufferPointer { lp in
                targets.withUnsafeBufferPointer { tp in
                    d.withUnsafeMutableBufferPointer { dp in
                        scratch.withUnsafeMutableBufferPointer { sp in
                            Softmax.crossEntropy(
                                dLogits: dp.baseAddress!, probabilities: sp.baseAddress!, logits: lp.baseAddress!,
                                targets: tp.baseAddress!, rows: rows, columns: c, temperature: temperature,
                                weight: weight)
                        }
                    }
                }
            }
            return (loss, d)
        }
        let logits = random.normals(rows * c)
        let (loss, dLogits) = crossEntropy(logits)
        var reference = 0.0
        for r in 0..<rows {
            let row = logits[(r * c)..<((r + 1) * c)].map { $0 / temperature }
            let m = row.max() ?? 0
            let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
            for j in 0..<c { reference -= weight * targets[r * c + j] * (row[j] - lse) }
        }
        #expect(abs(loss - reference) <= 1e-12 * abs(reference))
        #expect(finiteDifferenceError(at: logits, analytic: dLogits) { crossEntropy($0).0 } <= 1e-7)
    }

    @Test("patch embedding equals a naive float64 stride-p convolution; weight gradient by finite differences")
    func patchEmbedding() {
        let batch = 2, height = 28, width = 14, p = 7, d = 5
        var random = TestRandom(seed: 6)
        let images = random.normals(batch * 3 * height * width), w = random.normals(d * 3 * p * p),
            b = random.normals(d)
        let n = (height / p) * (width / p)
        func forward<T: KernelScalar>(_ images: [T], _ w: [T], _ b: [T]) -> ([T], [T]) {
            var out = [T](repeating: .nan, count: batch * n * d),
                columns = [T](repeating: .nan, count: batch * n * 3 * p * p)
            images.withUnsafeBufferPointer { ip in
                w.withUnsafeBufferPointer { wp in
                    b.withUnsafeBufferPointer { bp in
                        out.withUnsafeMutableBufferPointer { op in
                            columns.withUnsafeMutableBufferPointer { cp in
                                PatchEmbed.forward(
                                    out: op.baseAddress!, columns: cp.baseAddress!, images: ip.baseAddress!,
                                    weight: wp.baseAddress!, bias: bp.baseAddress!, batch: batch, height: height,
                                    width: width, patch: p, embedDim: d)
                            }
                        }
                    }
                }
            }
            return (out, columns)
        }
        var reference = [Double](repeating: 0, count: batch * n * d)
        for bi in 0..<batch {
            for gy in 0..<(height / p) {
                for gx in 0..<(width / p) {
                    for o in 0..<d {
                        var sum = b[o]
                        for c in 0..<3 {
                            for ky in 0..<p {
                                for kx in 0..<p {
                                    sum +=
                                        images[((bi * 3 + c) * height + gy * p + ky) * width + gx * p + kx]
                                        * w[((o * 3 + c) * p + ky) * p + kx]
                                }
                            }
                        }
                        reference[((bi * (height / p) + gy) * (width / p) + gx) * d + o] = sum
                    }
                }
            }
        }
        let (out64, columns) = forward(images, w, b)
        #expect(normwiseError(out64, reference) <= 1e-14)
        #expect(
            normwiseError(forward(images.map { Float($0) }, w.map { Float($0) }, b.map { Float($0) }).0, reference)
                <= 1e-6)
        let g = random.normals(batch * n * d)
        var dw = [Double](repeating: 0, count: w.count), db = [Double](repeating: 0, count: d)
        g.withUnsafeBufferPointer { gp in
            columns.withUnsafeBufferPointer { cp in
                w.withUnsafeBufferPointer { wp in
                    dw.withUnsafeMutableBufferPointer { dwp in
                        db.withUnsafeMutableBufferPointer { dbp in
                            PatchEmbed.backward(
                                dWeight: dwp.baseAddress!, dBias: dbp.baseAddress!, dOut: gp.baseAddress!,
                                columns: cp.baseAddress!, weight: wp.baseAddress!, rows: batch * n, patch: p,
                                embedDim: d)
                        }
                    }
                }
            }
        }
        #expect(
            finiteDifferenceError(at: w, analytic: dw, indices: Array(stride(from: 0, to: w.count, by: 11))) {
                dotProduct(forward(images, $0, b).0, g)
            } <= 1e-8)
        #expect(finiteDifferenceError(at: b, analytic: db) { dotProduct(forward(images, w, $0).0, g) } <= 1e-8)
    }

    @Test("vector erf: absolute error <= 5e-7 over [-6, 6] (1.5e-7 formula + float32 rounding)")
    func fastErf() {
        var worst = 0.0
        var x = -6.0
        while x < 6 {
            var lanes = SIMD16<Float>()
            for i in 0..<16 { lanes[i] = Float(x + Double(i) * 0.000_37) }
            let e = FastMath.erf(lanes)
            for i in 0..<16 { worst = max(worst, abs(Double(e[i]) - erf(Double(lanes[i])))) }
            x += 0.0061
        }
        #expect(worst <= 5e-7, "worst absolute error \(worst)")
    }
}
