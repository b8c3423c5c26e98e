// Times the packed attention kernel on DINOv2 shapes against (a) the sgemm peak measured in the
// same run at the same thread count and (b) the materialising baseline, and reports both methods'
// extra memory. FLOPs: forward 4 L^2 D per head and sequence; forward+backward 3.5x that (backward
// recomputes S: five GEMMs), the convention of the FlashAttention benchmarks.

import DinoCore
import DinoKernels

/// One measured attention configuration and direction.
public struct AttentionRecord: Codable, Sendable {
    public var name: String
    public var tokens: Int
    public var sequences: Int
    public var heads: Int
    public var headDim: Int
    public var threads: Int
    public var seconds: Double
    public var gflops: Double
    public var peakRatio: Double
    public var sgemmPeakGflops: Double
    public var naiveSeconds: Double
    public var speedupOverNaive: Double
    public var extraBytes: Int
    public var naiveExtraBytes: Int

    enum CodingKeys: String, CodingKey {
        case name, tokens, sequences, heads, threads, seconds, gflops
        case headDim = "head_dim"
        case peakRatio = "peak_ratio"
        case sgemmPeakGflops = "sgemm_peak_gflops"
        case naiveSeconds = "naive_seconds"
        case speedupOverNaive = "speedup_over_naive"
        case extraBytes = "extra_bytes"
        case naiveExtraBytes = "naive_extra_bytes"
    }
}

/// The attention benchmark cases and their runner.
public struct AttentionBenchmark {
    public struct Case: Sendable {
        public var name: String
        public var lengths: [Int]
        public var heads: Int
        public var headDim: Int
    }

    /// Batch 8 of 2 x 224 px + 8 x 98 px crops at patch 14 (257 and 50 tokens), ViT-S (6 heads) and
    /// ViT-L (16 heads); batch 8 of 518 px crops (1370 tokens) with ViT-S heads.
    public static let dinov2Cases: [Case] = {
        let crops = Array(repeating: [257, 257] + Array(repeating: 50, count: 8), count: 8).flatMap { $0 }
        return [
            Case(name: "attention_vits14", lengths: crops, heads: 6, headDim: 64),
            Case(name: "attention_vitl14", lengths: crops, heads: 16, headDim: 64),
            Case(name: "attention_518", lengths: Array(repeating: 1370, count: 8), heads: 6, headDim: 64),
        ]
    }()

    public var repeats = 5
    public var threads = 1

    public init() {}

    /// The sgemm peak at `threads` OpenBLAS threads: the better of the median GFLOP/s of square
    /// 1024^3 and 2048^3 products (large model GEMMs can beat 1024^3 by a few percent).
    public static func sgemmPeak(threads: Int, repeats: Int = 5) -> Double {
        [1024, 2048].map { sgemmThroughput(size: $0, threads: threads, repeats: repeats) }.max() ?? 0
    }

    /// The bf16 GEMM peak at `threads` threads (oneDNN, fp32 accumulation and results): the best
    /// median GFLOP/s of 2048^3 and of 1024 x 1024 x 4096 (a long inner dimension amortises writing
    /// the fp32 result). nil where bf16 is not native.
    public static func bf16Peak(threads: Int, repeats: Int = 5) -> Double? {
        guard BF16GEMM.isSupported else { return nil }
        let engine = BF16GEMM(threads: threads)
        return [(2048, 2048, 2048), (1024, 1024, 4096)].map { m, n, k in
            let a = [Float](repeating: 0.01, count: m * k), b = [Float](repeating: 0.02, count: k * n)
            var c = [Float](repeating: 0, count: m * n)
            let seconds = medianSeconds(repeats: repeats) {
                engine.gemm(
                    transposeA: false, transposeB: false, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, beta: 0,
                    c: &c, ldc: n)
            }
            return 2 * Double(m * n * k) / seconds / 1e9
        }.max()
    }

    /// Median GFLOP/s of `size`^3 sgemm at `threads` OpenBLAS threads, after one warm-up product.
    public static func sgemmThroughput(size n: Int, threads: Int, repeats: Int) -> Double {
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        defer {
            a.deallocate()
            b.deallocate()
            c.deallocate()
        }
        for i in 0..<(n * n) {
            a[i] = Float(i % 13) * 0.01
            b[i] = Float(i % 7) * 0.02
        }
        let saved = BLAS.threadCount
        BLAS.threadCount = threads
        defer { BLAS.threadCount = saved }
        let seconds = medianSeconds(repeats: repeats) {
            BLAS.sgemm(transposeA: false, transposeB: false, m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, c: c, ldc: n)
        }
        return 2 * Double(n * n * n) / seconds / 1e9
    }

    /// Runs every case: forward, and forward+backward, for the kernel and the baseline.
    public func run(_ cases: [Case] = dinov2Cases, progress: (String) -> Void = { _ in }) -> [AttentionRecord] {
        let saved = BLAS.threadCount
        BLAS.threadCount = 1  // parallelism comes from the work items, never from OpenBLAS inside them
        defer { BLAS.threadCount = saved }
        let peak = Self.sgemmPeak(threads: threads)
        progress("sgemm peak (best of 1024^3 and 2048^3, \(threads) thread(s)): \(Int(peak.rounded())) GFLOP/s")
        var records: [AttentionRecord] = []
        for benchCase in cases {
            records += measure(benchCase, peak: peak)
            progress("measured \(benchCase.name)")
        }
        return records
    }

    private func measure(_ benchCase: Case, peak: Double) -> [AttentionRecord] {
        let sequences = PackedSequences(lengths: benchCase.lengths)
        let h = benchCase.heads, d = benchCase.headDim, c = h * d, t = sequences.tokens
        let qkv = UnsafeMutablePointer<Float>.allocate(capacity: t * 3 * c)
        let dOut = UnsafeMutablePointer<Float>.allocate(capacity: t * c)
        let out = UnsafeMutablePointer<Float>.allocate(capacity: t * c)
        let lse = UnsafeMutablePointer<Float>.allocate(capacity: t * h)
        let dQKV = UnsafeMutablePointer<Float>.allocate(capacity: t * 3 * c)
        defer { for p in [qkv, dOut, out, lse, dQKV] { p.deallocate() } }
        var state: UInt32 = 12345
        func next() -> Float {
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(Int32(bitPattern: state >> 8) - (1 << 23)) / Float(1 << 23)
        }
        for i in 0..<(t * 3 * c) { qkv[i] = next() }
        for i in 0..<(t * c) { dOut[i] = next() }

        let workspace = AttentionWorkspace<Float>()
        let kernelForward = time {
            PackedAttention.forward(
                out: out, lse: lse, qkv: qkv, sequences: sequences, heads: h, headDim: d,
                workspace: workspace, threads: threads)
        }
        let kernelBoth = time {
            PackedAttention.forward(
                out: out, lse: lse, qkv: qkv, sequences: sequences, heads: h, headDim: d,
                workspace: workspace, threads: threads)
            PackedAttention.backward(
                dQKV: dQKV, dOut: dOut, qkv: qkv, out: out, lse: lse, sequences: sequences,
                heads: h, headDim: d, workspace: workspace, threads: threads)
        }
        let extra = workspace.bytes + t * h * MemoryLayout<Float>.stride

        let naive = MaterializedAttention(sequences: sequences, heads: h, headDim: d, threads: threads)
        let naiveForward = time { naive.forward(out: out, qkv: qkv, threads: threads) }
        let naiveBoth = time {
            naive.forward(out: out, qkv: qkv, threads: threads)
            naive.backward(dQKV: dQKV, dOut: dOut, qkv: qkv, out: out, threads: threads)
        }

        let flops = PackedAttention.forwardFLOPs(sequences: sequences, heads: h, headDim: d)
        func record(_ suffix: String, _ seconds: Double, _ naiveSeconds: Double, _ multiple: Double) -> AttentionRecord
        {
            let gflops = flops * multiple / seconds / 1e9
            return AttentionRecord(
                name: benchCase.name + suffix, tokens: t, sequences: sequences.count, heads: h,
                headDim: d, threads: threads, seconds: seconds, gflops: gflops,
                peakRatio: gflops / peak, sgemmPeakGflops: peak, naiveSeconds: naiveSeconds,
                speedupOverNaive: naiveSeconds / seconds, extraBytes: extra,
                naiveExtraBytes: naive.extraBytes)
        }
        return [record("_fwd", kernelForward, naiveForward, 1), record("_fwd_bwd", kernelBoth, naiveBoth, 3.5)]
    }

    private func time(_ body: () -> Void) -> Double { medianSeconds(repeats: repeats, body) }

    /// A fixed-width table of `records`.
    public static func table(_ records: [AttentionRecord]) -> String {
        let header = ["name", "tokens", "ms", "GFLOP/s", "peak", "naive ms", "vs naive", "extra MiB", "naive MiB"]
        var rows = [header]
        for r in records {
            rows.append([
                r.name, String(r.tokens), format(r.seconds * 1e3, 1), format(r.gflops, 1),
                format(r.peakRatio, 3), format(r.naiveSeconds * 1e3, 1), format(r.speedupOverNaive, 2) + "x",
                format(Double(r.extraBytes) / 1_048_576, 2), format(Double(r.naiveExtraBytes) / 1_048_576, 1),
            ])
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.indices.map { column in
                let cell = row[column]
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return column == 0 ? cell + padding : padding + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

/// Median wall time of `repeats` runs of `body` after one warm-up run.
func medianSeconds(repeats: Int, _ body: () -> Void) -> Double {
    body()
    var times: [Double] = []
    for _ in 0..<max(1, repeats) {
        let start = MonotonicClock.seconds()
        body()
        times.append(MonotonicClock.seconds() - start)
    }
    return Statistics.median(times)
}

/// `value` with exactly `digits` decimals.
func format(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = "\(rounded)"
    if text.contains("e") { return text }
    if !text.contains(".") { text += "." }
    let decimals = text.count - 1 - (text.firstIndex(of: ".").map { text.distance(from: text.startIndex, to: $0) } ?? 0)
    if decimals < digits { text += String(repeating: "0", count: digits - decimals) }
    return digits == 0 ? String(text.dropLast()) : text
}
