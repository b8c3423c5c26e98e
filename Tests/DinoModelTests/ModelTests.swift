// Parameter table against the official counts and names; whole-backbone gradients against float64
// finite differences (registers, masks, two crop sizes, stochastic depth); packed equals separate;
// the accumulation contract; stochastic-depth subsets; the official initialisation.

import DinoConfig
import DinoCore
import DinoKernels
import DinoModel
import DinoTestSupport
import Foundation
import Testing

@Suite("ViT backbone")
struct ModelTests {
    func official(_ arch: String, ffn: String = "mlp", imageSize: Int = 518, chunks: Int = 0) throws -> ParameterLayout
    {
        var student = StudentConfig()
        student.arch = try #require(Architecture(rawValue: arch))
        student.patchSize = 14
        student.ffnLayer = try #require(FeedForwardLayer(rawValue: ffn))
        student.blockChunks = chunks
        return ParameterLayout(try ViTArchitecture(student: student, imageSize: imageSize))
    }

    @Test("parameter counts equal the official models (position embedding for 518 px)")
    func parameterCounts() throws {
        #expect(try official("vit_small").parameterCount == 22_056_576)
        #expect(try official("vit_base").parameterCount == 86_580_480)
        #expect(try official("vit_large").parameterCount == 304_368_640)
        #expect(try official("vit_giant2", ffn: "swiglufused").parameterCount == 1_136_480_768)
    }

    @Test("ViT-S/14 state-dict names, order and PyTorch shapes")
    func names() throws {
        let layout = try official("vit_small")
        #expect(layout.entries.count == 175)
        let head = layout.entries.prefix(8).map { "\($0.name) \($0.shape)" }
        #expect(
            head == [
                "cls_token [1, 1, 384]", "pos_embed [1, 1370, 384]", "mask_token [1, 384]",
                "patch_embed.proj.weight [384, 3, 14, 14]", "patch_embed.proj.bias [384]",
                "blocks.0.norm1.weight [384]", "blocks.0.norm1.bias [384]", "blocks.0.attn.qkv.weight [1152, 384]",
            ])
        #expect(layout.entry(named: "blocks.11.mlp.fc2.weight")?.shape == [384, 1536])
        #expect(layout.entries.suffix(2).map(\.name) == ["norm.weight", "norm.bias"])
        #expect(layout.units.count == 14)  // embed, 12 blocks, norm
        // Every tensor a disjoint contiguous range of its unit, covering it exactly.
        for (u, unit) in layout.units.enumerated() {
            let ranges = layout.entries.filter { $0.unit == u }.map { $0.offset..<($0.offset + $0.count) }
            #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == unit.count)
            #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        }
        let chunked = try official("vit_large", chunks: 4)
        // block_chunks names the tensors blocks.<chunk>.<block>.*; units stay one block each.
        #expect(chunked.units.count == 26)
        #expect(chunked.entry(named: "blocks.1.6.attn.qkv.weight")?.unit == 7)
        #expect(chunked.units[7].name == "blocks.1.6" && chunked.units[7].blocks == 6..<7)
        var registers = StudentConfig()
        registers.arch = .vitSmall
        registers.patchSize = 14
        registers.registerTokens = 4
        let withRegisters = ParameterLayout(try ViTArchitecture(student: registers, imageSize: 518))
        #expect(withRegisters.entries[2].name == "register_tokens" && withRegisters.entries[2].shape == [1, 4, 384])
    }

    @Test("official initialisation, identical for any draw order")
    func initialization() throws {
        let layout = try official("vit_small", imageSize: 224)
        let store = LocalParameters<Float>(layout: layout)
        store.initialize(seed: 7)
        let qkv = try #require(store.tensor("blocks.3.attn.qkv.weight")).map(Double.init)
        let mean = qkv.reduce(0, +) / Double(qkv.count)
        let std = (qkv.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(qkv.count)).squareRoot()
        // 442,368 draws: the sample std of N(0, 0.02) is within 0.5 % of 0.02 with overwhelming probability.
        #expect(abs(std - 0.02) < 1e-4 && abs(mean) < 1e-4)
        #expect(qkv.allSatisfy { abs($0) <= 2 })
        #expect(try #require(store.tensor("blocks.0.ls1.gamma")).allSatisfy { $0 == 1e-5 })
        #expect(try #require(store.tensor("mask_token")).allSatisfy { $0 == 0 })
        #expect(try #require(store.tensor("blocks.0.attn.qkv.bias")).allSatisfy { $0 == 0 })
        #expect(try #require(store.tensor("norm.weight")).allSatisfy { $0 == 1 })
        let bound = Float(1 / (3.0 * 14 * 14).squareRoot())
        #expect(try #require(store.tensor("patch_embed.proj.weight")).allSatisfy { abs($0) <= bound })
        let again = LocalParameters<Float>(layout: layout)
        again.initialize(seed: 7)
        #expect(again.tensor("pos_embed") == store.tensor("pos_embed"))
    }

    /// A tiny model: width 8, depth 2, 2 heads, patch 2, 2 registers, position embedding for 8 px.
    func tiny(_ feedForward: FeedForward = .mlp(hidden: 12), antialias: Bool = false) -> ParameterLayout {
        var a = ViTArchitecture(
            embedDim: 8, depth: 2, heads: 2, patchSize: 2, feedForward: feedForward, registers: 2,
            imageSize: 8)
        a.interpolateAntialias = antialias
        return ParameterLayout(a)
    }

    func tinyBatches(_ random: inout TestRandom) -> [TestBatch] {
        [
            TestBatch(
                images: random.normals(4 * 3 * 8 * 8), count: 4, size: 8,
                masks: (0..<(4 * 16)).map { _ in Bool.random(using: &random) }),
            TestBatch(images: random.normals(3 * 3 * 6 * 6), count: 3, size: 6, masks: nil),
        ]
    }

    /// Random parameters of unit scale (the official init's LayerScale 1e-5 would hide the blocks).
    func randomize<T: KernelScalar>(_ store: LocalParameters<T>, _ random: inout TestRandom) {
        for entry in store.table.entries {
            let values = random.normals(entry.count, scale: 0.4)
            store.setTensor(
                entry.name,
                values.map {
                    entry.name.hasSuffix("norm1.weight") || entry.name.hasSuffix("norm2.weight")
                        ? T(1 + $0 * 0.2) : T($0)
                })
        }
    }

    @Test(
        "float64 backbone gradients equal finite differences (registers, masks, two crop sizes, stochastic depth)",
        arguments: [("mlp", false), ("swiglu", true)])
    func finiteDifferences(kind: String, antialias: Bool) throws {
        let layout = tiny(kind == "mlp" ? .mlp(hidden: 12) : .swiglu(hidden: 8), antialias: antialias)
        var random = TestRandom(seed: 17)
        let store = LocalParameters<Double>(layout: layout)
        randomize(store, &random)
        let batches = tinyBatches(&random)
        let dropPath = DropPath(seed: 3, iteration: 11, rate: 0.5, depth: 2, uniform: true)
        let backbone = Backbone<Double>(layout: layout)
        let tokens = 4 * (1 + 2 + 16) + 3 * (1 + 2 + 9)
        let weights = random.normals(tokens * 8)
        _ = try runBackbone(backbone, store: store, batches: batches, dropPath: dropPath, dOutput: weights)
        for entry in layout.entries {
            let values = try #require(store.tensor(entry.name))
            let analytic = try #require(store.gradient(entry.name))
            let probe = Array(stride(from: 0, to: entry.count, by: max(1, entry.count / 6)))
            let error = try finiteDifferenceError(at: values, analytic: analytic, indices: probe) { perturbed in
                let copy = LocalParameters<Double>(layout: layout)
                for other in layout.entries { copy.setTensor(other.name, store.tensor(other.name) ?? []) }
                copy.setTensor(entry.name, perturbed)
                let out = try runBackbone(
                    Backbone<Double>(layout: layout), store: copy, batches: batches, dropPath: dropPath)
                return dotProduct(out, weights)
            }
            #expect(error <= 1e-7, "\(entry.name): \(error)")
        }
        // Drop path really dropped something: with rate 0.5 some crops skip some branches.
        let full = try runBackbone(Backbone<Double>(layout: layout), store: store, batches: batches)
        let dropped = try runBackbone(
            Backbone<Double>(layout: layout), store: store, batches: batches, dropPath: dropPath)
        #expect(normwiseError(dropped, full) > 1e-3)
    }

    @Test("packed batches give the same tokens as each batch alone (within 1e-6)")
    func packedEqualsSeparate() throws {
        let layout = tiny()
        var random = TestRandom(seed: 5)
        let store = LocalParameters<Float>(layout: layout)
        randomize(store, &random)
        let batches = tinyBatches(&random)
        let packed = try runBackbone(Backbone<Float>(layout: layout), store: store, batches: batches)
        let first = try runBackbone(Backbone<Float>(layout: layout), store: store, batches: [batches[0]])
        let second = try runBackbone(Backbone<Float>(layout: layout), store: store, batches: [batches[1]])
        #expect(normwiseError(packed, (first + second).map(Double.init)) <= 1e-6)
    }

    @Test("running backward twice gives exactly twice the parameter gradients")
    func accumulation() throws {
        let layout = tiny()
        var random = TestRandom(seed: 6)
        let store = LocalParameters<Float>(layout: layout)
        randomize(store, &random)
        let batches = tinyBatches(&random)
        let dropPath = DropPath(seed: 1, iteration: 2, rate: 0.3, depth: 2, uniform: false)
        let weights = random.normals((4 * 19 + 3 * 12) * 8)
        let backbone = Backbone<Float>(layout: layout)
        _ = try runBackbone(backbone, store: store, batches: batches, dropPath: dropPath, dOutput: weights)
        let once = layout.entries.map { store.gradient($0.name) ?? [] }
        _ = try runBackbone(backbone, store: store, batches: batches, dropPath: dropPath, dOutput: weights)
        let twice = layout.entries.map { store.gradient($0.name) ?? [] }
        #expect(zip(once, twice).allSatisfy { a, b in zip(a, b).allSatisfy { $1 == 2 * $0 } })
    }

    @Test("stochastic depth keeps int(b (1 - rate)) crops, the same ones for the same step")
    func dropPathSubsets() {
        let stream = RandomStream(seed: 9, purpose: .dropPath, 4, 1, 0)
        let kept = stream.subset(of: 16, count: 6)
        #expect(kept.count == 6 && Set(kept).count == 6 && kept.allSatisfy { (0..<16).contains($0) })
        #expect(kept == RandomStream(seed: 9, purpose: .dropPath, 4, 1, 0).subset(of: 16, count: 6))
        #expect(kept != RandomStream(seed: 9, purpose: .dropPath, 5, 1, 0).subset(of: 16, count: 6))
        let linear = DropPath(seed: 0, iteration: 0, rate: 0.4, depth: 5, uniform: false)
        #expect(linear.rates.map { ($0 * 1000).rounded() } == [0, 100, 200, 300, 400])
    }
}
