// Throughput of the ViT kernels on ViT-S/14 training shapes, with references measured in the same
// run: GEMM-bound ops against plain OpenBLAS sgemm on the same shapes (sgemm_ratio) and against the
// single-thread sgemm peak (peak_ratio, as the whole backbone forward+backward); the linear layers
// again at width 192 (`linear192_` rows: the narrow model, whose short K = 192 products run furthest
// below the peak). Where bf16 is native, the linear layers and the backbone again in bf16 (`_bf16`
// rows: rounding of the operands included), their peak_ratio against the single-thread bf16 GEMM peak
// and sgemm_ratio the fp32 kernel's time over the bf16 one (the speed-up).
// Shapes: one image's student pass is 2 x 224 px + 8 x 98 px crops = 2 x 257 + 8 x 50 = 914 tokens;
// `images` images give T = 914 x images rows.
// FLOPs of the backbone (counted exactly for the architecture): per block and token 24 D^2 (qkv 6,
// proj 2, fc1 8, fc2 8 D^2) in forward, twice that in backward; attention 4 L^2 D per crop in
// forward, 2.5x that in backward; patch embedding 2 * 588 D per patch forward, the same for the
// weight gradient. LayerNorm, GELU, softmax and the other pointwise work are not counted.

import DinoCore
import DinoKernels
import DinoModel

/// One measured kernel.
public struct KernelRecord: Codable, Sendable {
    public var name: String
    public var seconds: Double
    public var gflops: Double
    public var sgemmRatio: Double?
    public var peakRatio: Double?
    public var detail: String

    enum CodingKeys: String, CodingKey {
        case name, seconds, gflops, detail
        case sgemmRatio = "sgemm_ratio"
        case peakRatio = "peak_ratio"
    }
}

/// The kernel and backbone benchmark.
public struct KernelBenchmark {
    public var images = 2
    public var repeats = 5

    public init() {}

    public func run(progress: (String) -> Void = { _ in }) throws -> [KernelRecord] {
        let saved = BLAS.threadCount
        BLAS.threadCount = 1
        defer { BLAS.threadCount = saved }
        // Best of two trials, as bench step's peak: on a shared host one trial can land in a slow spell.
        let peak = max(
            AttentionBenchmark.sgemmPeak(threads: 1, repeats: repeats),
            AttentionBenchmark.sgemmPeak(threads: 1, repeats: repeats))
        progress("sgemm peak (best of 1024^3 and 2048^3, 1 thread): \(Int(peak.rounded())) GFLOP/s")
        var records = [
            KernelRecord(
                name: "sgemm_peak", seconds: 0, gflops: peak, sgemmRatio: nil, peakRatio: 1,
                detail: "best of 1024^3 and 2048^3, two trials, 1 thread")
        ]
        let t = 914 * images, d = 384
        for (prefix, width) in [("linear", d), ("linear192", 192)] {
            for (name, inF, outF) in Self.linearShapes(width: width) {
                records += linearRecords(name: "\(prefix)_\(name)", rows: t, inF: inF, outF: outF).map {
                    var record = $0
                    record.peakRatio = record.gflops / peak
                    return record
                }
            }
        }
        records += pointwiseRecords(rows: t, channels: d)
        progress("measured kernels")
        records.append(try backboneRecord(peak: peak))
        progress("measured the backbone")
        if let first = AttentionBenchmark.bf16Peak(threads: 1, repeats: repeats),
            let second = AttentionBenchmark.bf16Peak(threads: 1, repeats: repeats)
        {
            let bf16Peak = max(first, second)
            progress("bf16 GEMM peak (best of 2048^3 and 1024 x 1024 x 4096, 1 thread): \(Int(bf16Peak)) GFLOP/s")
            let engine = BF16GEMM(threads: 1)
            for (name, inF, outF) in Self.linearShapes(width: d) {
                let fp32 = records.filter { $0.name.hasPrefix("linear_\(name)_") }
                for var record in linearRecords(name: "linear_\(name)", rows: t, inF: inF, outF: outF, engine: engine) {
                    let direction = record.name.hasSuffix("_fwd") ? "_fwd" : "_bwd"
                    let reference = fp32.first { $0.name == "linear_\(name)\(direction)" }
                    record.sgemmRatio = reference.map { $0.seconds / record.seconds }
                    record.peakRatio = record.gflops / bf16Peak
                    record.name += "_bf16"
                    records.append(record)
                }
            }
            var backbone = try backboneRecord(peak: bf16Peak, engine: engine)
            backbone.sgemmRatio = records.first { $0.name == "vits14_backbone_fwd_bwd" }.map {
                $0.seconds / backbone.seconds
            }
            backbone.name += "_bf16"
            records.append(backbone)
            progress("measured the bf16 rows")
        } else {
            progress("no bf16 rows: oneDNN reports \(BF16GEMM.instructionSet), without AVX512-BF16 or AMX")
        }
        return records
    }

    // MARK: - Linear layers against sgemm on the same shapes

    /// The four products of a block at `width`: (name, in features, out features).
    static func linearShapes(width d: Int) -> [(String, Int, Int)] {
        [("qkv", d, 3 * d), ("proj", d, d), ("fc1", d, 4 * d), ("fc2", 4 * d, d)]
    }

    private func linearRecords(
        name: String, rows: Int, inF: Int, outF: Int, engine: BF16GEMM? = nil
    ) -> [KernelRecord] {
        let x = filled(rows * inF), w = filled(outF * inF), b = filled(outF), g = filled(rows * outF)
        let out = filled(rows * outF), dx = filled(rows * inF), dw = filled(outF * inF), db = filled(outF)
        defer { for p in [x, w, b, g, out, dx, dw, db] { p.deallocate() } }
        let forwardFlops = 2.0 * Double(rows * inF * outF)
        let forward = time {
            Linear.forward(
                out: out, input: x, weight: w, bias: b, rows: rows, inFeatures: inF, outFeatures: outF, engine: engine)
        }
        let forwardGemm = time {
            BLAS.sgemm(
                transposeA: false, transposeB: true, m: rows, n: outF, k: inF, a: x, lda: inF, b: w, ldb: inF,
                c: out, ldc: outF)
        }
        let backward = time {
            Linear.backward(
                dInput: dx, dWeight: dw, dBias: db, dOut: g, input: x, weight: w, rows: rows,
                inFeatures: inF, outFeatures: outF, engine: engine)
        }
        let backwardGemm = time {
            BLAS.sgemm(
                transposeA: false, transposeB: false, m: rows, n: inF, k: outF, a: g, lda: outF, b: w, ldb: inF,
                c: dx, ldc: inF)
            BLAS.sgemm(
                transposeA: true, transposeB: false, m: outF, n: inF, k: rows, a: g, lda: outF, b: x, ldb: inF,
                beta: 1, c: dw, ldc: inF)
        }
        let shape = "[\(rows), \(inF)] x [\(outF), \(inF)]^T"
        return [
            KernelRecord(
                name: "\(name)_fwd", seconds: forward, gflops: forwardFlops / forward / 1e9,
                sgemmRatio: forwardGemm / forward, peakRatio: nil, detail: shape),
            KernelRecord(
                name: "\(name)_bwd", seconds: backward, gflops: 2 * forwardFlops / backward / 1e9,
                sgemmRatio: backwardGemm / backward, peakRatio: nil, detail: shape + ", dInput and dWeight"),
        ]
    }

    // MARK: - Pointwise kernels (throughput; FLOPs per element as stated)

    private func pointwiseRecords(rows: Int, channels: Int) -> [KernelRecord] {
        let n = rows * channels, h = 4 * n
        let x = filled(h), y = filled(h), z = filled(h), w = filled(channels), b = filled(channels)
        let mean = filled(rows), rstd = filled(rows), dw = filled(channels), db = filled(channels)
        defer { for p in [x, y, z, w, b, mean, rstd, dw, db] { p.deallocate() } }
        let ln = time {
            LayerNorm.forward(
                out: y, mean: mean, rstd: rstd, input: x, weight: w, bias: b, rows: rows, channels: channels)
        }
        let lnBack = time {
            LayerNorm.backward(
                dInput: z, dWeight: dw, dBias: db, dOut: y, input: x, weight: w, mean: mean, rstd: rstd,
                rows: rows, channels: channels)
        }
        let gelu = time { GELU.forward(out: y, input: x, count: h) }
        let geluBack = time { GELU.backward(dInput: z, dOut: y, input: x, count: h) }
        func record(_ name: String, _ seconds: Double, _ elements: Int, _ flopsPerElement: Double) -> KernelRecord {
            KernelRecord(
                name: name, seconds: seconds, gflops: Double(elements) * flopsPerElement / seconds / 1e9,
                sgemmRatio: nil, peakRatio: nil,
                detail:
                    "\(elements) elements, \(Int(Double(elements) / seconds / 1e6)) M elements/s, "
                    + "\(Int(flopsPerElement)) flop/element counted"
            )
        }
        return [
            record("layernorm_fwd", ln, n, 8), record("layernorm_bwd", lnBack, n, 14),
            record("gelu_fwd", gelu, h, 20), record("gelu_bwd", geluBack, h, 30),
        ]
    }

    // MARK: - The whole ViT-S/14 backbone

    private func backboneRecord(peak: Double, engine: BF16GEMM? = nil) throws -> KernelRecord {
        var a = ViTArchitecture(embedDim: 384, depth: 12, heads: 6, patchSize: 14, feedForward: .mlp(hidden: 1536))
        a.imageSize = 224
        let layout = ParameterLayout(a)
        let store = LocalParameters<Float>(layout: layout)
        store.initialize(seed: 0)
        let global = filled(2 * images * 3 * 224 * 224), local = filled(8 * images * 3 * 98 * 98)
        defer {
            global.deallocate()
            local.deallocate()
        }
        let batches = [
            CropBatch(images: UnsafePointer(global), count: 2 * images, size: 224),
            CropBatch(images: UnsafePointer(local), count: 8 * images, size: 98),
        ]
        let backbone = Backbone<Float>(layout: layout)
        backbone.bf16 = engine
        let gradient = filled(914 * images * 384)
        defer { gradient.deallocate() }
        var failure: Error? = nil
        let seconds = time {
            do {
                try backbone.forward(batches, store: store)
                try backbone.backward(gradient, store: store)
            } catch { failure = error }
        }
        if let failure { throw failure }
        let flops = Self.backboneFLOPs(layout.architecture, crops: [(2 * images, 224), (8 * images, 98)])
        let gflops = flops / seconds / 1e9
        let activationMiB = Double(backbone.activationBytes) / 1_048_576
        return KernelRecord(
            name: "vits14_backbone_fwd_bwd", seconds: seconds, gflops: gflops, sgemmRatio: nil,
            peakRatio: gflops / peak,
            detail: "\(images) image(s) of 2 x 224 + 8 x 98 crops, \(914 * images) tokens, "
                + "saved activations and scratch \(Int(activationMiB)) MiB (\(Int(activationMiB / Double(images))) "
                + "MiB per image)"
        )
    }

    /// Model FLOPs of one forward+backward (see the file header).
    public static func backboneFLOPs(_ a: ViTArchitecture, crops: [(count: Int, size: Int)]) -> Double {
        crops.reduce(0) { $0 + a.trainingFLOPs(crops: $1.count, size: $1.size) }
    }

    private func filled(_ count: Int) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: count)
        var state: UInt32 = 2_463_534_242
        for i in 0..<count {
            state ^= state << 13
            state ^= state >> 17
            state ^= state << 5
            p[i] = Float(Int32(bitPattern: state >> 8) - (1 << 23)) / Float(1 << 24)
        }
        return p
    }

    private func time(_ body: () -> Void) -> Double { medianSeconds(repeats: repeats, body) }

    /// A fixed-width table of `records`.
    public static func table(_ records: [KernelRecord]) -> String {
        var lines = ["name                          ms   GFLOP/s  vs sgemm  vs peak  detail"]
        for r in records {
            let name = r.name.padding(toLength: 26, withPad: " ", startingAt: 0)
            let ms = format(r.seconds * 1e3, 2), gf = format(r.gflops, 1)
            let sg = r.sgemmRatio.map { format($0, 3) } ?? "-", pk = r.peakRatio.map { format($0, 3) } ?? "-"
            func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
            lines.append(name + pad(ms, 8) + pad(gf, 10) + pad(sg, 10) + pad(pk, 9) + "  " + r.detail)
        }
        return lines.joined(separator: "\n")
    }
}
