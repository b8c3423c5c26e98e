// The packed attention kernel against a float64 per-sequence reference, float64 finite differences
// of its own double-precision instantiation, exact isolation between sequences, and bitwise
// independence from the thread count.

import DinoKernels
import DinoTestSupport
import Foundation
import Testing

struct KernelOutput<T: KernelScalar> {
    var out: [T]
    var lse: [T]
    var dQKV: [T]
}

/// Runs forward and backward of the kernel in precision T. Outputs start as NaN, so any element
/// the kernel fails to write shows up.
func runAttention<T: KernelScalar>(
    _: T.Type, qkv: [Double], dOut: [Double], sequences: PackedSequences, heads: Int, headDim: Int,
    tiling: AttentionTiling = .standard, threads: Int = 1, workspace: AttentionWorkspace<T>? = nil
) -> KernelOutput<T> {
    let c = heads * headDim, tokens = sequences.tokens
    let input = qkv.map { T($0) }, gradient = dOut.map { T($0) }
    var result = KernelOutput<T>(
        out: .init(repeating: .nan, count: tokens * c),
        lse: .init(repeating: .nan, count: tokens * heads),
        dQKV: .init(repeating: .nan, count: tokens * 3 * c))
    let ws = workspace ?? AttentionWorkspace<T>(tiling: tiling)
    input.withUnsafeBufferPointer { qkvPointer in
        gradient.withUnsafeBufferPointer { dOutPointer in
            result.out.withUnsafeMutableBufferPointer { outPointer in
                result.lse.withUnsafeMutableBufferPointer { lsePointer in
                    result.dQKV.withUnsafeMutableBufferPointer { dPointer in
                        guard let q = qkvPointer.baseAddress, let o = outPointer.baseAddress,
                            let l = lsePointer.baseAddress, let g = dOutPointer.baseAddress,
                            let dq = dPointer.baseAddress
                        else { return }
                        T.runPackedAttention(
                            out: o, lse: l, dQKV: dq, qkv: q, dOut: g, sequences: sequences,
                            heads: heads, headDim: headDim, workspace: ws, threads: threads)
                    }
                }
            }
        }
    }
    return result
}

/// Runs forward then backward through the precision's own entry points.
extension KernelScalar {
    static func runPackedAttention(
        out: UnsafeMutablePointer<Self>, lse: UnsafeMutablePointer<Self>,
        dQKV: UnsafeMutablePointer<Self>, qkv: UnsafePointer<Self>, dOut: UnsafePointer<Self>,
        sequences: PackedSequences, heads: Int, headDim: Int,
        workspace: AttentionWorkspace<Self>, threads: Int
    ) {
        attentionForward(
            out: out, lse: lse, qkv: qkv, sequences: sequences, heads: heads, headDim: headDim,
            workspace: workspace, threads: threads)
        attentionBackward(
            dQKV: dQKV, dOut: dOut, qkv: qkv, out: out, lse: lse, sequences: sequences, heads: heads,
            headDim: headDim, workspace: workspace, threads: threads)
    }
}

/// The q (part 0), k (1) or v (2) block of every row of a [T, 3, C] array.
func part3<E>(_ all: [E], part: Int, tokens: Int, channels c: Int) -> [E] {
    var picked: [E] = []
    picked.reserveCapacity(tokens * c)
    for t in 0..<tokens {
        let begin = (t * 3 + part) * c
        picked.append(contentsOf: all[begin..<(begin + c)])
    }
    return picked
}

@Suite("packed attention")
struct PackedAttentionTests {
    /// Lengths that hit every edge: 1, tails of 16/64 tiles, the DINOv2 crops (50, 257, with 4
    /// registers 54, 261) and, above the 512-key tile, the online-softmax path.
    static let mixedLengths = [257, 1, 50, 2, 15, 17, 63, 64, 65, 54, 261, 513, 600]

    @Test(
        "float32 kernel matches the float64 reference (normwise relative error <= 1e-5)",
        arguments: [(64, 1.0), (32, 1.0), (48, 1.0), (80, 1.0), (64, 3.0)])
    func matchesReference(headDim: Int, logitScale: Double) {
        let heads = 2
        let sequences = PackedSequences(lengths: Self.mixedLengths)
        var random = TestRandom(seed: UInt64(headDim) &* 7919 &+ UInt64(logitScale))
        let tokens = sequences.tokens, c = heads * headDim
        // q and k scaled by logitScale: logits of standard deviation ~logitScale^2.
        var qkv = random.normals(tokens * 3 * c)
        for t in 0..<tokens { for x in 0..<(2 * c) { qkv[t * 3 * c + x] *= logitScale } }
        let dOut = random.normals(tokens * c)
        let reference = AttentionReference.run(
            qkv: qkv, dOut: dOut, starts: sequences.starts, heads: heads, headDim: headDim)
        let got = runAttention(Float.self, qkv: qkv, dOut: dOut, sequences: sequences, heads: heads, headDim: headDim)
        // float32 rounding of logits (~6e-8 |S|) is amplified through exp; 1e-5 leaves margin at |S| ~ 9.
        #expect(normwiseError(got.out, reference.out) <= 1e-5)
        #expect(normwiseError(got.lse, reference.lse) <= 1e-5)
        for (part, name) in [(0, "dQ"), (1, "dK"), (2, "dV")] {
            let mine: [Float] = part3(got.dQKV, part: part, tokens: tokens, channels: c)
            let theirs: [Double] = part3(reference.dQKV, part: part, tokens: tokens, channels: c)
            let error = normwiseError(mine, theirs)
            #expect(error <= 1e-5, "\(name) error \(error)")
        }
    }

    @Test(
        "hundreds of short sequences, and one 518 px crop with registers (1374 tokens)",
        arguments: ["many", "long"])
    func extremes(kind: String) {
        var random = TestRandom(seed: kind == "many" ? 101 : 202)
        let lengths = kind == "many" ? (0..<300).map { _ in Int.random(in: 1...60, using: &random) } : [1374, 3]
        let heads = 2, d = 64
        let sequences = PackedSequences(lengths: lengths)
        let qkv = random.normals(sequences.tokens * 3 * heads * d)
        let dOut = random.normals(sequences.tokens * heads * d)
        let reference = AttentionReference.run(qkv: qkv, dOut: dOut, starts: sequences.starts, heads: heads, headDim: d)
        let got = runAttention(
            Float.self, qkv: qkv, dOut: dOut, sequences: sequences, heads: heads, headDim: d,
            threads: 2)
        #expect(normwiseError(got.out, reference.out) <= 1e-5)
        #expect(normwiseError(got.lse, reference.lse) <= 1e-5)
        #expect(normwiseError(got.dQKV, reference.dQKV) <= 1e-5)
    }

    @Test("small tiles (online softmax over many key tiles) give the same answer as one tile")
    func tilingInvariance() {
        let heads = 3, d = 16
        let sequences = PackedSequences(lengths: [37, 5, 1, 64, 23])
        var random = TestRandom(seed: 11)
        let qkv = random.normals(sequences.tokens * 3 * heads * d, scale: 2)
        let dOut = random.normals(sequences.tokens * heads * d)
        let reference = AttentionReference.run(qkv: qkv, dOut: dOut, starts: sequences.starts, heads: heads, headDim: d)
        for tiling in [
            AttentionTiling(queryBlock: 1, keyBlock: 1), AttentionTiling(queryBlock: 7, keyBlock: 5),
            AttentionTiling(queryBlock: 16, keyBlock: 16), AttentionTiling(queryBlock: 64, keyBlock: 64),
        ] {
            let got = runAttention(
                Float.self, qkv: qkv, dOut: dOut, sequences: sequences, heads: heads, headDim: d,
                tiling: tiling)
            #expect(normwiseError(got.out, reference.out) <= 1e-5, "\(tiling)")
            #expect(normwiseError(got.lse, reference.lse) <= 1e-5, "\(tiling)")
            #expect(normwiseError(got.dQKV, reference.dQKV) <= 1e-5, "\(tiling)")
        }
    }

    @Test("float64 kernel: gradients equal central finite differences of its own forward")
    func finiteDifferences() {
        let heads = 2, d = 4
        let sequences = PackedSequences(lengths: [5, 3, 7, 1])
        let tiling = AttentionTiling(queryBlock: 2, keyBlock: 3)  // multi-tile online softmax, ragged tails
        var random = TestRandom(seed: 5)
        let qkv = random.normals(sequences.tokens * 3 * heads * d)
        let weights = random.normals(sequences.tokens * heads * d)  // loss = sum(out * weights), so dOut = weights
        func loss(_ input: [Double]) -> Double {
            let run = runAttention(
                Double.self, qkv: input, dOut: weights, sequences: sequences, heads: heads,
                headDim: d, tiling: tiling)
            return zip(run.out, weights).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let analytic = runAttention(
            Double.self, qkv: qkv, dOut: weights, sequences: sequences, heads: heads,
            headDim: d, tiling: tiling
        ).dQKV
        let epsilon = 1e-6
        var worst = 0.0
        for index in stride(from: 0, to: qkv.count, by: 3) {  // a third of all inputs: q, k and v entries
            var plus = qkv, minus = qkv
            plus[index] += epsilon
            minus[index] -= epsilon
            let numeric = (loss(plus) - loss(minus)) / (2 * epsilon)
            worst = max(worst, abs(numeric - analytic[index]) / max(1, abs(analytic[index])))
        }
        // Central differences: truncation ~eps^2 and cancellation ~1e-16 / eps: ~1e-9 expected.
        #expect(worst <= 1e-7, "worst finite-difference error \(worst)")

        // A directional derivative over all inputs at once.
        let direction = random.normals(qkv.count)
        let step = 1e-5
        let along =
            (loss(zip(qkv, direction).map { $0 + step * $1 }) - loss(zip(qkv, direction).map { $0 - step * $1 }))
            / (2 * step)
        let predicted = zip(analytic, direction).reduce(0) { $0 + $1.0 * $1.1 }
        #expect(abs(along - predicted) <= 1e-7 * max(1, abs(predicted)))
    }

    @Test("the float64 reference's own gradients agree with the float64 kernel")
    func referenceAgreesWithKernel() {
        let heads = 2, d = 8
        let sequences = PackedSequences(lengths: [9, 1, 4])
        var random = TestRandom(seed: 9)
        let qkv = random.normals(sequences.tokens * 3 * heads * d)
        let dOut = random.normals(sequences.tokens * heads * d)
        let reference = AttentionReference.run(qkv: qkv, dOut: dOut, starts: sequences.starts, heads: heads, headDim: d)
        let kernel = runAttention(
            Double.self, qkv: qkv, dOut: dOut, sequences: sequences, heads: heads, headDim: d,
            tiling: AttentionTiling(queryBlock: 3, keyBlock: 2))
        #expect(normwiseError(kernel.out, reference.out) <= 1e-13)
        #expect(normwiseError(kernel.lse, reference.lse) <= 1e-13)
        #expect(normwiseError(kernel.dQKV, reference.dQKV) <= 1e-13)
    }

    @Test("perturbing one sequence leaves every other sequence bitwise unchanged")
    func isolation() {
        let heads = 3, d = 32
        let sequences = PackedSequences(lengths: [50, 257, 1, 50, 70])
        let c = heads * d
        var random = TestRandom(seed: 21)
        let qkv = random.normals(sequences.tokens * 3 * c)
        let dOut = random.normals(sequences.tokens * c)
        let base = runAttention(Float.self, qkv: qkv, dOut: dOut, sequences: sequences, heads: heads, headDim: d)
        let victim = 1
        var perturbed = qkv
        for t in sequences.starts[victim]..<sequences.starts[victim + 1] {
            for x in 0..<(3 * c) { perturbed[t * 3 * c + x] += 0.5 * sin(Double(t * 31 + x)) }
        }
        let changed = runAttention(
            Float.self, qkv: perturbed, dOut: dOut, sequences: sequences, heads: heads, headDim: d)
        for s in 0..<sequences.count where s != victim {
            let rows = sequences.starts[s]..<sequences.starts[s + 1]
            let same = rows.allSatisfy { t in
                base.out[t * c..<(t + 1) * c] == changed.out[t * c..<(t + 1) * c]
                    && base.lse[t * heads..<(t + 1) * heads] == changed.lse[t * heads..<(t + 1) * heads]
                    && base.dQKV[t * 3 * c..<(t + 1) * 3 * c] == changed.dQKV[t * 3 * c..<(t + 1) * 3 * c]
            }
            #expect(same, "sequence \(s) changed")
        }
        let victimRows = sequences.starts[victim]..<sequences.starts[victim + 1]
        #expect(victimRows.contains { t in base.out[t * c..<(t + 1) * c] != changed.out[t * c..<(t + 1) * c] })

        // A gradient only on the victim: every other sequence's dQKV is exactly zero.
        var localGradient = [Double](repeating: 0, count: dOut.count)
        for t in victimRows { for x in 0..<c { localGradient[t * c + x] = dOut[t * c + x] } }
        let local = runAttention(
            Float.self, qkv: qkv, dOut: localGradient, sequences: sequences, heads: heads, headDim: d)
        let outside = (0..<sequences.tokens).filter { !victimRows.contains($0) }
        #expect(outside.allSatisfy { t in local.dQKV[t * 3 * c..<(t + 1) * 3 * c].allSatisfy { $0 == 0 } })
    }

    @Test("1, 2 and 3 threads give bitwise equal results")
    func threadIndependence() {
        let heads = 6, d = 64
        let sequences = PackedSequences(lengths: [257, 257, 50, 50, 50, 50, 50, 50, 50, 50, 1, 600])
        var random = TestRandom(seed: 3)
        let qkv = random.normals(sequences.tokens * 3 * heads * d)
        let dOut = random.normals(sequences.tokens * heads * d)
        // OpenBLAS's own thread count (its threaded driver splits K unlike its serial one) must not matter.
        let one = BLAS.withThreadCount(3) {
            runAttention(
                Float.self, qkv: qkv, dOut: dOut, sequences: sequences, heads: heads, headDim: d, threads: 1)
        }
        for threads in [2, 3] {
            let many = runAttention(
                Float.self, qkv: qkv, dOut: dOut, sequences: sequences, heads: heads, headDim: d,
                threads: threads)
            #expect(one.out == many.out && one.lse == many.lse && one.dQKV == many.dQKV, "\(threads) threads")
        }
    }

    @Test("a reused workspace gives the same results when the packing changes between calls")
    func changingPackings() {
        let heads = 2, d = 16
        let workspace = AttentionWorkspace<Float>()
        var random = TestRandom(seed: 8)
        for lengths in [[30, 5], [700, 1, 2], [3], [64, 64, 64, 64]] {
            let sequences = PackedSequences(lengths: lengths)
            let qkv = random.normals(sequences.tokens * 3 * heads * d)
            let dOut = random.normals(sequences.tokens * heads * d)
            let fresh = runAttention(Float.self, qkv: qkv, dOut: dOut, sequences: sequences, heads: heads, headDim: d)
            let reused = runAttention(
                Float.self, qkv: qkv, dOut: dOut, sequences: sequences, heads: heads, headDim: d,
                threads: 2, workspace: workspace)
            #expect(fresh.out == reused.out && fresh.lse == reused.lse && fresh.dQKV == reused.dQKV, "\(lengths)")
        }
    }

    @Test("a sequence of length 1 returns its value row exactly")
    func singleToken() {
        let heads = 2, d = 8, c = heads * d
        var random = TestRandom(seed: 4)
        let qkv = random.normals(3 * c)
        let dOut = random.normals(c)
        let got = runAttention(
            Float.self, qkv: qkv, dOut: dOut, sequences: PackedSequences(lengths: [1]),
            heads: heads, headDim: d)
        #expect(got.out == qkv[(2 * c)..<(3 * c)].map { Float($0) })
        // Softmax over one key has zero gradient: dS = P (dP - rowsum(dO * O)) with P = 1 and O = V.
        // dP (an OpenBLAS GEMM) and the row sum (a vector dot) add the same d products in orders that
        // depend on OpenBLAS's kernels, so their difference is rounding: at most 2 d eps sum |dO_i V_i|
        // (float32 eps 2^-24), times scale max|K| in dQ and scale max|Q| in dK.
        let scale = 1 / Double(d).squareRoot(), eps = Double(Float.ulpOfOne) / 2
        for h in 0..<heads {
            let head = (h * d)..<((h + 1) * d)
            let rounding =
                2 * Double(d) * eps
                * head.map { abs(Double(Float(dOut[$0])) * Double(Float(qkv[2 * c + $0]))) }
                .reduce(0, +)
            let q = head.map { abs(Double(Float(qkv[$0]))) }.max()!,
                k = head.map { abs(Double(Float(qkv[c + $0]))) }.max()!
            #expect(head.allSatisfy { abs(Double(got.dQKV[$0])) <= scale * rounding * k }, "dQ of head \(h)")
            #expect(head.allSatisfy { abs(Double(got.dQKV[c + $0])) <= scale * rounding * q }, "dK of head \(h)")
        }
    }

    @Test("vector exp: relative error <= 3e-7 over [-87, 88], exact zero below the float range")
    func fastExp() {
        var worst = 0.0
        var x = -87.0
        while x < 88 {
            var lanes = SIMD16<Float>()
            for i in 0..<16 { lanes[i] = Float(x + Double(i) * 0.000_731) }
            let e = FastMath.exp(lanes)
            for i in 0..<16 {
                let exact = Foundation.exp(Double(lanes[i]))
                worst = max(worst, abs(Double(e[i]) - exact) / exact)
            }
            x += 0.0117
        }
        #expect(worst <= 3e-7, "worst relative error \(worst)")
        let low = FastMath.exp(SIMD16<Float>(repeating: -.infinity))
        #expect(low == SIMD16<Float>(repeating: 0))
        #expect(FastMath.exp(SIMD16<Float>(repeating: -100)) == SIMD16<Float>(repeating: 0))
        #expect(FastMath.exp(SIMD16<Float>(repeating: 0)) == SIMD16<Float>(repeating: 1))
    }
}
