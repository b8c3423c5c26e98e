// Schedules, parameter multipliers, AdamW and clipping against values worked out by hand from the
// official formulas.

import DinoConfig
import DinoCore
import DinoModel
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("optimisation")
struct OptimizationTests {
    func close(_ a: Double, _ b: Double, _ tolerance: Double = 1e-12) -> Bool {
        abs(a - b) <= tolerance * max(1, abs(b))
    }

    @Test("schedules of the default recipe on 32 ranks at chosen iterations")
    func schedules() {
        let config = TrainingConfig().resolved(worldSize: 32)  // global batch 2048: lr = 0.004 sqrt 2
        let s = TrainingSchedules(config)
        let base = 0.004 * 2.0.squareRoot()
        #expect(close(s.values(at: 0).lr, 0))
        #expect(close(s.values(at: 1).lr, base / 12_499))  // linspace(0, base, 12500)
        #expect(close(s.values(at: 12_499).lr, base))
        #expect(close(s.values(at: 12_500).lr, base))  // cosine starts at base
        #expect(close(s.values(at: 12_500 + 56_250).lr, (base + 1e-6) / 2))  // half-way through the cosine
        #expect(close(s.values(at: 125_000).lr, 1e-6) && close(s.values(at: 200_000).lr, 1e-6))
        #expect(s.values(at: 1_249).lastLayerLR == 0 && close(s.values(at: 1_250).lastLayerLR, s.values(at: 1_250).lr))
        #expect(close(s.values(at: 0).weightDecay, 0.04) && close(s.values(at: 62_500).weightDecay, 0.22))
        #expect(close(s.values(at: 125_000).weightDecay, 0.4))
        #expect(close(s.values(at: 0).momentum, 0.992) && close(s.values(at: 62_500).momentum, 0.996))
        #expect(close(s.values(at: 0).teacherTemperature, 0.04))
        #expect(close(s.values(at: 100).teacherTemperature, 0.04 + 100 * 0.03 / 37_499))
        #expect(
            close(s.values(at: 37_499).teacherTemperature, 0.07) && close(s.values(at: 90_000).teacherTemperature, 0.07)
        )
    }

    @Test("layer-wise decay, patch-embedding multiplier and weight-decay exemptions (ViT-S, decay 0.9)")
    func multipliers() {
        func g(_ name: String) -> ParameterGroup {
            ParameterGroups.backbone(name, depth: 12, layerwiseDecay: 0.9, patchEmbedMultiplier: 0.2)
        }
        #expect(close(g("pos_embed").lrMultiplier, pow(0.9, 13)))  // 0.254187
        #expect(close(g("blocks.0.attn.qkv.weight").lrMultiplier, pow(0.9, 12)))
        #expect(close(g("blocks.11.mlp.fc2.weight").lrMultiplier, 0.9))
        #expect(close(g("blocks.1.6.norm1.weight").lrMultiplier, pow(0.9, 6)))  // chunked name: global index 6
        #expect(close(g("norm.weight").lrMultiplier, 1))
        #expect(close(g("patch_embed.proj.weight").lrMultiplier, pow(0.9, 13) * 0.2))  // 0.050837
        for name in [
            "cls_token", "pos_embed", "mask_token", "register_tokens", "patch_embed.proj.weight",
            "blocks.0.attn.qkv.weight",
        ] {
            #expect(g(name).weightDecayMultiplier == 1, "\(name)")
        }
        for name in ["blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "blocks.0.ls1.gamma", "norm.bias"] {
            #expect(g(name).weightDecayMultiplier == 0, "\(name)")
        }
        #expect(
            ParameterGroups.head("last_layer.weight_g")
                == ParameterGroup(lrMultiplier: 1, weightDecayMultiplier: 1, isLastLayer: true))
        #expect(ParameterGroups.head("mlp.0.bias").weightDecayMultiplier == 0)
    }

    @Test("AdamW matches the PyTorch update worked out by hand")
    func adamW() {
        var p: [Float] = [1], m: [Float] = [0], v: [Float] = [0]
        func step(_ gradient: Float, _ t: Int) {
            let g = [gradient]
            g.withUnsafeBufferPointer { gp in
                p.withUnsafeMutableBufferPointer { pp in
                    m.withUnsafeMutableBufferPointer { mp in
                        v.withUnsafeMutableBufferPointer { vp in
                            AdamW.update(
                                parameters: pp.baseAddress!, gradients: gp.baseAddress!, firstMoment: mp.baseAddress!,
                                secondMoment: vp.baseAddress!, count: 1, lr: 0.1, weightDecay: 0.04, beta1: 0.9,
                                beta2: 0.999, step: t)
                        }
                    }
                }
            }
        }
        step(0.5, 1)
        // p = 1 (1 - 0.1 * 0.04) - (0.1 / 0.1) * 0.05 / (sqrt(0.00025) / sqrt(0.001) + 1e-8) = 0.996 - 0.0999999980
        #expect(abs(Double(p[0]) - 0.896_000_002) <= 1e-7)
        step(-0.2, 2)
        let m2 = 0.9 * 0.05 + 0.1 * -0.2, v2 = 0.999 * 0.00025 + 0.001 * 0.04
        let expected =
            0.896_000_002 * (1 - 0.004) - (0.1 / (1 - 0.81)) * m2
            / (v2.squareRoot() / (1 - 0.998_001).squareRoot() + 1e-8)
        #expect(abs(Double(p[0]) - expected) <= 1e-6)
        #expect(close(AdamW.clipCoefficient(norm: 6, maxNorm: 3), 3 / (6 + 1e-6)))
        #expect(AdamW.clipCoefficient(norm: 2, maxNorm: 3) == 1)
    }

    @Test("AdamW's 16-wide path (on one or two threads) gives the bits of its scalar path, element by element")
    func adamWVectorMatchesScalar() throws {
        // 37 parameters: two full vectors and a tail of 5. The reference updates one element per
        // call, which only the scalar loop handles.
        try check(count: 37, threads: 1)
        // Two threads over 100,003 parameters: ranges split off a multiple of 16, same bits again.
        try check(count: 100_003, threads: 2)
    }

    private func check(count n: Int, threads: Int) throws {
        let stream = RandomStream(seed: 7, purpose: .test)
        var drawn: UInt64 = 0
        func draws(_ scale: Float) -> [Float] {
            defer { drawn += UInt64(n) }
            return (0..<n).map { Float(stream.normal(drawn + UInt64($0))) * scale }
        }
        var vector = (p: draws(1), m: draws(0.1), v: draws(0.01).map { $0 * $0 })
        var scalar = vector
        for t in 1...3 {
            let g = draws(0.5)
            g.withUnsafeBufferPointer { gp in
                vector.p.withUnsafeMutableBufferPointer { pp in
                    vector.m.withUnsafeMutableBufferPointer { mp in
                        vector.v.withUnsafeMutableBufferPointer { vp in
                            AdamW.update(
                                parameters: pp.baseAddress!, gradients: gp.baseAddress!, firstMoment: mp.baseAddress!,
                                secondMoment: vp.baseAddress!, count: n, lr: 1e-3, weightDecay: 0.04, beta1: 0.9,
                                beta2: 0.999, step: t, threads: threads)
                        }
                    }
                }
                scalar.p.withUnsafeMutableBufferPointer { pp in
                    scalar.m.withUnsafeMutableBufferPointer { mp in
                        scalar.v.withUnsafeMutableBufferPointer { vp in
                            for i in 0..<n {
                                AdamW.update(
                                    parameters: pp.baseAddress! + i, gradients: gp.baseAddress! + i,
                                    firstMoment: mp.baseAddress! + i, secondMoment: vp.baseAddress! + i, count: 1,
                                    lr: 1e-3, weightDecay: 0.04, beta1: 0.9, beta2: 0.999, step: t)
                            }
                        }
                    }
                }
            }
        }
        #expect(vector.p.map(\.bitPattern) == scalar.p.map(\.bitPattern))
        #expect(vector.m.map(\.bitPattern) == scalar.m.map(\.bitPattern))
        #expect(vector.v.map(\.bitPattern) == scalar.v.map(\.bitPattern))
    }
}
