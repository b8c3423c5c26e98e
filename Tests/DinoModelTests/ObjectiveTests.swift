// The DINOv2 objective: every loss against values worked out by hand (numpy, printed once and
// written here), float64 finite differences of the losses through a projection head, centering,
// Sinkhorn-Knopp against a direct implementation and its marginals, KoLeo on duplicates, masks; the
// copy-detection loss against a direct version, by finite differences, and split over ranks.

import DinoCore
import DinoKernels
import DinoModel
import DinoTestSupport
import Foundation
import Testing

@Suite("DINOv2 objective")
struct ObjectiveTests {
    @Test("DINO CLS loss: 1 image, 1 local crop, 3 prototypes, by hand")
    func clsLossByHand() {
        let studentGlobal: [Double] = [1, 0, 0, 0, 1, 0], studentLocal: [Double] = [0, 0, 1]
        let targets: [Double] = [0.5, 0.3, 0.2, 0.2, 0.2, 0.6]
        var dGlobal = [Double](repeating: .nan, count: 6), dLocal = [Double](repeating: .nan, count: 3)
        var scratch = [Double](repeating: 0, count: 6)
        let (local, global) = DinoLosses.clsLoss(
            dGlobal: &dGlobal, dLocal: &dLocal, studentGlobal: studentGlobal,
            studentLocal: studentLocal, teacherTargets: targets, images: 1,
            localCrops: 1, prototypes: 3, weight: 1, scratch: &scratch)
        // (H(q2, s1) + H(q1, s2)) / 4 and (H(q1, sl) + H(q2, sl)) / 4 with 4 = 2 + max(2 * 1, 1) terms.
        #expect(abs(global - 3.750_045_397_868_733_6) < 1e-12)
        #expect(abs(local - 3.000_045_397_868_733_6) < 1e-12)
    }

    @Test("iBOT loss: two masked tokens of one crop (weights 1/2), two global crops, by hand")
    func patchLossByHand() {
        let student: [Double] = [0.3, -0.2, 0.5, 0.1, 0.4, -0.3], targets: [Double] = [0.6, 0.3, 0.1, 0.1, 0.1, 0.8]
        var d = [Double](repeating: .nan, count: 6), scratch = [Double](repeating: 0, count: 3)
        let loss = DinoLosses.patchLoss(
            dStudent: &d, student: student, teacherTargets: targets, tokenWeights: [0.5, 0.5],
            globalCrops: 2, prototypes: 3, weight: 1, scratch: &scratch)
        #expect(abs(loss - 2.344_296_620_332_626_5) < 1e-12)
    }

    @Test("CLS and iBOT losses on two threads: the same bits as one thread (losses and gradients)")
    func lossesAcrossThreads() {
        let b = 3, localCrops = 2, k = 1_000, tokens = 7
        var random = TestRandom(seed: 21)
        let logits = random.normals((2 + localCrops) * b * k + tokens * k, scale: 4).map { Float($0) }
        // Targets: softmax rows of random logits (each sums to 1).
        func softmaxRows(_ rows: Int) -> [Float] {
            var out = [Float](repeating: 0, count: rows * k)
            let raw = random.normals(rows * k, scale: 3).map { Float($0) }
            raw.withUnsafeBufferPointer { r in
                out.withUnsafeMutableBufferPointer {
                    Softmax.forward(
                        out: $0.baseAddress!, logits: r.baseAddress!, rows: rows, columns: k, temperature: 1)
                }
            }
            return out
        }
        let clsTargets = softmaxRows(2 * b), patchTargets = softmaxRows(tokens)
        let weights = (0..<tokens).map { 1 / Double(1 + $0 % 3) }
        func run(_ threads: Int) -> (Double, Double, Double, [UInt32]) {
            var d = [Float](repeating: .nan, count: logits.count)
            var scratch = [Float](repeating: 0, count: Swift.max(2 * b * k, threads * k))
            var cls = (local: 0.0, global: 0.0), patch = 0.0
            logits.withUnsafeBufferPointer { l in
                d.withUnsafeMutableBufferPointer { dp in
                    scratch.withUnsafeMutableBufferPointer { sp in
                        let base = l.baseAddress!, dBase = dp.baseAddress!, clsRows = (2 + localCrops) * b
                        cls = DinoLosses.clsLoss(
                            dGlobal: dBase, dLocal: dBase + 2 * b * k, studentGlobal: base,
                            studentLocal: base + 2 * b * k, teacherTargets: clsTargets, images: b,
                            localCrops: localCrops, prototypes: k, weight: 1, scratch: sp.baseAddress!,
                            threads: threads)
                        patch = DinoLosses.patchLoss(
                            dStudent: dBase + clsRows * k, student: base + clsRows * k,
                            teacherTargets: patchTargets, tokenWeights: weights, globalCrops: 2 * b,
                            prototypes: k, weight: 1, scratch: sp.baseAddress!, threads: threads)
                    }
                }
            }
            return (cls.local, cls.global, patch, d.map(\.bitPattern))
        }
        let one = run(1), two = run(2)
        #expect(one.0.isFinite && one.1 > 0 && one.2 > 0 && !one.3.contains(Float.nan.bitPattern))
        #expect(one.0 == two.0 && one.1 == two.1 && one.2 == two.2)
        #expect(one.3 == two.3)
    }

    @Test("KoLeo by hand; finite when two embeddings coincide; gradient by finite differences")
    func koleo() {
        var dX = [Double](repeating: .nan, count: 6)
        let loss = DinoLosses.koleo(dX: &dX, x: [1, 0, 0, 2, 1, 1], rows: 3, channels: 2, weight: 1)
        #expect(abs(loss - 0.267_399_987_661_178_06) < 1e-9)
        var dFloat = [Float](repeating: .nan, count: 6)
        let duplicate = DinoLosses.koleo(
            dX: &dFloat, x: [Float]([0.3, 0.4, 0.3, 0.4, -1, 2]), rows: 3, channels: 2, weight: 1)
        #expect(duplicate.isFinite && dFloat.allSatisfy { $0.isFinite })
        var random = TestRandom(seed: 12)
        let x = random.normals(5 * 4)
        var g = [Double](repeating: 0, count: x.count)
        _ = DinoLosses.koleo(dX: &g, x: x, rows: 5, channels: 4, weight: 0.1)
        #expect(
            finiteDifferenceError(at: x, analytic: g) { probe in
                var unused = [Double](repeating: 0, count: probe.count)
                return DinoLosses.koleo(dX: &unused, x: probe, rows: 5, channels: 4, weight: 0.1)
            } <= 1e-7)
    }

    /// SSCD's InfoNCE written out directly: rows [2B, D] (view 1 of the B images, then view 2), every
    /// row an anchor whose positive is the other view of its image.
    static func copyLossDirectly(_ x: [Double], images b: Int, channels d: Int, temperature: Double) -> Double {
        let n = 2 * b
        let z = (0..<n).map { i in
            let row = Array(x[(i * d)..<((i + 1) * d)])
            let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return row.map { $0 / norm }
        }
        var loss = 0.0
        for i in 0..<n {
            let similarities = (0..<n).map { j in zip(z[i], z[j]).reduce(0) { $0 + $1.0 * $1.1 } / temperature }
            let others = (0..<n).filter { $0 != i }.map { similarities[$0] }
            let largest = others.max()!
            let logSum = largest + log(others.reduce(0) { $0 + exp($1 - largest) })
            loss += logSum - similarities[(i + b) % n]
        }
        return loss / Double(n)
    }

    @Test("copy loss: InfoNCE against a direct float64 version; gradient by finite differences")
    func copyLossOnOneRank() throws {
        var random = TestRandom(seed: 21)
        let b = 3, d = 4, temperature = 0.1, weight = 0.7
        let x = random.normals(2 * b * d)
        var dX = [Double](repeating: .nan, count: x.count)
        let scratch = CopyLossScratch<Double>()
        func loss(_ x: [Double], _ dX: inout [Double]) throws -> Double {
            try DinoLosses.copyContrastive(
                dX: &dX, x: x, images: b, channels: d, temperature: temperature, weight: weight,
                reducer: LocalRowReducer(), scratch: scratch)
        }
        let value = try loss(x, &dX)
        let direct = weight * Self.copyLossDirectly(x, images: b, channels: d, temperature: temperature)
        #expect(abs(value - direct) <= 1e-12 * abs(direct))
        // A copy pair that is already the nearest of its anchor scores lower than a random pairing.
        var pairs = x
        for i in 0..<(b * d) { pairs[b * d + i] = x[i] + 0.01 }
        var unused = dX
        #expect(try loss(pairs, &unused) < value)
        #expect(
            try finiteDifferenceError(at: x, analytic: dX) { probe in
                var unused = [Double](repeating: 0, count: probe.count)
                return try loss(probe, &unused)
            } <= 1e-7)
    }

    /// One rank of `ranks` whose row sum (the gather of the copy loss) returns every rank's rows, prepared
    /// by the test as the other ranks would send them.
    final class GatheredRows: RowReducer {
        let ranks: Int, rank: Int, total: [Double]
        init(ranks: Int, rank: Int, total: [Double]) { (self.ranks, self.rank, self.total) = (ranks, rank, total) }
        func sum(_ values: UnsafeMutableBufferPointer<Double>) throws {
            precondition(values.count == total.count, "the gather covers every rank's rows")
            for i in values.indices { values[i] = total[i] }
        }
        func sum(_ value: Double) throws -> Double { value }
        func max(_ value: Double) throws -> Double { value }
    }

    @Test("copy loss over 2 ranks: mean of the ranks' losses and averaged gradients = one rank with the batch")
    func copyLossAcrossRanks() throws {
        var random = TestRandom(seed: 22)
        let ranks = 2, b = 2, d = 5, temperature = 0.05, weight = 1.5
        // The whole batch on one rank: view 1 of images 0-3, then view 2.
        let x = random.normals(2 * ranks * b * d)
        var dX = [Double](repeating: .nan, count: x.count)
        let whole = try DinoLosses.copyContrastive(
            dX: &dX, x: x, images: ranks * b, channels: d, temperature: temperature, weight: weight,
            reducer: LocalRowReducer(), scratch: CopyLossScratch<Double>())
        // Rank r holds images 2r, 2r + 1: its rows are their view 1, then their view 2.
        func row(_ view: Int, _ image: Int) -> ArraySlice<Double> {
            x[((view * ranks * b + image) * d)..<((view * ranks * b + image + 1) * d)]
        }
        let rankRows = (0..<ranks).map { r in (0..<2).flatMap { v in (0..<b).flatMap { row(v, r * b + $0) } } }
        var gathered = [Double]()
        for rows in rankRows {
            var normalized = rows, norms = [Double](repeating: 0, count: 2 * b)
            L2Normalize.forward(out: &normalized, norms: &norms, input: rows, rows: 2 * b, channels: d, epsilon: 1e-8)
            gathered += normalized
        }
        var meanLoss = 0.0
        for r in 0..<ranks {
            var dRank = [Double](repeating: .nan, count: 2 * b * d)
            meanLoss +=
                try DinoLosses.copyContrastive(
                    dX: &dRank, x: rankRows[r], images: b, channels: d, temperature: temperature, weight: weight,
                    reducer: GatheredRows(ranks: ranks, rank: r, total: gathered), scratch: CopyLossScratch<Double>())
                / Double(ranks)
            for v in 0..<2 {
                for i in 0..<b {
                    for c in 0..<d {
                        let single = dX[(v * ranks * b + r * b + i) * d + c]
                        #expect(abs(dRank[(v * b + i) * d + c] / Double(ranks) - single) <= 1e-12 * max(1, abs(single)))
                    }
                }
            }
        }
        #expect(abs(meanLoss - whole) <= 1e-12 * abs(whole))
    }

    @Test(
        "DINO and iBOT losses through a head: float64 finite differences of head parameters and inputs",
        arguments: [7, 3])
    func throughHead(prototypesPerUnit: Int) throws {
        // 3: the last layer in units of 3, 3 and 1 prototypes (pieces last_layer.weight_v[0:3] ...).
        let head = DinoHead<Double>(
            HeadArchitecture(
                inDim: 6, hidden: 10, bottleneck: 5, layers: 3, prototypes: 7, prototypesPerUnit: prototypesPerUnit))
        #expect(head.table.units.count == (prototypesPerUnit == 7 ? 2 : 4))
        let store = LocalParameters<Double>(table: head.table)
        store.initialize(seed: 3)
        var random = TestRandom(seed: 4)
        for entry in head.table.entries { store.setTensor(entry.name, random.normals(entry.count, scale: 0.5)) }
        let b = 2, local = 2, k = 7
        let rows = 2 * b + local * b
        let input = random.normals(rows * 6)
        var targets = random.normals(2 * b * k).map { exp($0) }
        for r in 0..<(2 * b) {
            let s = targets[(r * k)..<((r + 1) * k)].reduce(0, +)
            for c in 0..<k { targets[r * k + c] /= s }
        }
        func loss(_ input: [Double], _ store: LocalParameters<Double>, backward: Bool) throws -> (Double, [Double]) {
            try input.withUnsafeBufferPointer { try head.forward($0.baseAddress!, rows: rows, store: store) }
            let logits = Array(UnsafeBufferPointer(start: head.output, count: rows * k))
            var d = [Double](repeating: 0, count: rows * k), scratch = [Double](repeating: 0, count: 2 * b * k)
            let (l, g) = d.withUnsafeMutableBufferPointer { dp in
                DinoLosses.clsLoss(
                    dGlobal: dp.baseAddress!, dLocal: dp.baseAddress! + 2 * b * k, studentGlobal: logits,
                    studentLocal: Array(logits[(2 * b * k)...]), teacherTargets: targets, images: b,
                    localCrops: local, prototypes: k, weight: 1, scratch: &scratch)
            }
            // iBOT on two of the rows as masked tokens of one crop (weights 1/2), against the first targets.
            let ibot = d.withUnsafeMutableBufferPointer { dp -> Double in
                var scratch = [Double](repeating: 0, count: k)
                var dTokens = [Double](repeating: 0, count: 2 * k)
                let loss = DinoLosses.patchLoss(
                    dStudent: &dTokens, student: Array(logits[((rows - 2) * k)...]),
                    teacherTargets: Array(targets[0..<(2 * k)]), tokenWeights: [0.5, 0.5],
                    globalCrops: 2 * b, prototypes: k, weight: 0.8, scratch: &scratch)
                for i in 0..<(2 * k) { dp[(rows - 2) * k + i] += dTokens[i] }
                return loss
            }
            var dInput = [Double](repeating: 0, count: input.count)
            if backward {
                try d.withUnsafeBufferPointer { dp in
                    try dInput.withUnsafeMutableBufferPointer {
                        try head.backward(dp.baseAddress!, dInput: $0.baseAddress!, store: store)
                    }
                }
            }
            return (l + g + ibot, dInput)
        }
        let (_, dInput) = try loss(input, store, backward: true)
        #expect(
            try finiteDifferenceError(at: input, analytic: dInput) { try loss($0, store, backward: false).0 } <= 1e-7)
        for entry in head.table.entries {
            let values = try #require(store.tensor(entry.name)), analytic = try #require(store.gradient(entry.name))
            let error = try finiteDifferenceError(
                at: values, analytic: analytic,
                indices: Array(stride(from: 0, to: entry.count, by: max(1, entry.count / 8)))
            ) {
                let copy = LocalParameters<Double>(table: head.table)
                for other in head.table.entries { copy.setTensor(other.name, store.tensor(other.name) ?? []) }
                copy.setTensor(entry.name, $0)
                return try loss(input, copy, backward: false).0
            }
            #expect(error <= 1e-7, "\(entry.name): \(error)")
        }
    }

    @Test("a last layer cut into units draws the same initial values and computes the same head (float64)")
    func headInUnits() throws {
        func run(
            _ perUnit: Int
        ) throws -> (values: [String: [Double]], logits: [Double], dInput: [Double], grads: [String: [Double]]) {
            let head = DinoHead<Double>(
                HeadArchitecture(
                    inDim: 6, hidden: 10, bottleneck: 5, layers: 2, prototypes: 11, prototypesPerUnit: perUnit))
            let store = LocalParameters<Double>(table: head.table)
            store.initialize(seed: 9)
            var random = TestRandom(seed: 5)
            let rows = 4
            let input = random.normals(rows * 6), dLogits = random.normals(rows * 11)
            try input.withUnsafeBufferPointer { try head.forward($0.baseAddress!, rows: rows, store: store) }
            let logits = Array(UnsafeBufferPointer(start: head.output, count: rows * 11))
            var dInput = [Double](repeating: 0, count: input.count)
            try dLogits.withUnsafeBufferPointer { d in
                try dInput.withUnsafeMutableBufferPointer {
                    try head.backward(d.baseAddress!, dInput: $0.baseAddress!, store: store)
                }
            }
            // Each tensor reassembled from its pieces, in order.
            var values: [String: [Double]] = [:], grads: [String: [Double]] = [:]
            for entry in head.table.entries {
                values[entry.tensor, default: []] += store.tensor(entry.name) ?? []
                grads[entry.tensor, default: []] += store.gradient(entry.name) ?? []
            }
            return (values, logits, dInput, grads)
        }
        let whole = try run(11), cut = try run(4)  // units of 4, 4 and 3 prototypes
        #expect(whole.values == cut.values)
        // Relative to the largest magnitude (at least 1).
        func maxDifference(_ a: [Double], _ b: [Double]) -> Double {
            let scale = max(1, a.map(abs).max() ?? 0)
            return a.count == b.count ? (zip(a, b).map { abs($0 - $1) }.max() ?? 0) / scale : .infinity
        }
        // Only the order of the dz sums over the 3 units differs: a few float64 roundings (2.2e-16 each)
        // of sums of 11 terms, ~1e-14 of the largest value at most.
        #expect(maxDifference(whole.logits, cut.logits) <= 1e-13)
        #expect(maxDifference(whole.dInput, cut.dInput) <= 1e-13)
        for (name, gradient) in whole.grads {
            #expect(maxDifference(gradient, cut.grads[name] ?? []) <= 1e-13, "\(name)")
        }
    }

    @Test("softmax centering applies the EMA center one step late")
    func centering() throws {
        let reducer = LocalRowReducer()
        let center = SoftmaxCenter<Double>(prototypes: 2)
        let logits: [Double] = [1, 3, 3, 5]  // two rows; batch mean [2, 4]
        var out = [Double](repeating: 0, count: 4)
        TeacherTargets.centered(out: &out, logits: logits, rows: 2, prototypes: 2, temperature: 0.5, center: center)
        #expect(abs(out[0] - 1 / (1 + exp(4.0))) < 1e-15)  // center 0: softmax([2, 6])
        try center.recordBatch(logits, rows: 2, rankMean: false, reducer: reducer)
        TeacherTargets.centered(out: &out, logits: logits, rows: 2, prototypes: 2, temperature: 0.5, center: center)
        // The center: 0.9 * 0 + 0.1 * [2, 4].
        #expect(abs(center.values.base[0] - 0.2) < 1e-15 && abs(center.values.base[1] - 0.4) < 1e-15)
        #expect(abs(out[0] - 1 / (1 + exp((3 - 0.4 - 1 + 0.2) / 0.5))) < 1e-15)
    }

    /// Sinkhorn-Knopp written directly from the official procedure (no max subtraction), one rank.
    func referenceSinkhorn(_ t: [Double], rows n: Int, k: Int, temperature: Double) -> [Double] {
        var q = t.map { exp($0 / temperature) }
        let total = q.reduce(0, +)
        q = q.map { $0 / total }
        for _ in 0..<3 {
            for c in 0..<k {
                let s = (0..<n).reduce(0.0) { $0 + q[$1 * k + c] }
                for r in 0..<n { q[r * k + c] /= s * Double(k) }
            }
            for r in 0..<n {
                let s = q[(r * k)..<((r + 1) * k)].reduce(0, +)
                for c in 0..<k { q[r * k + c] /= s * Double(n) }
            }
        }
        return q.map { $0 * Double(n) }
    }

    @Test("Sinkhorn-Knopp equals the direct procedure; every row of the targets sums to 1")
    func sinkhorn() throws {
        var random = TestRandom(seed: 8)
        let n = 12, k = 9
        let t = random.normals(n * k)
        var out = [Double](repeating: 0, count: n * k), scratch = [Double](repeating: 0, count: k)
        try TeacherTargets.sinkhornKnopp(
            out: &out, logits: t, rows: n, prototypes: k, temperature: 0.07, totalRows: n,
            reducer: LocalRowReducer(), scratch: &scratch)
        #expect(normwiseError(out, referenceSinkhorn(t, rows: n, k: k, temperature: 0.07)) <= 1e-12)
        for r in 0..<n { #expect(abs(out[(r * k)..<((r + 1) * k)].reduce(0, +) - 1) < 1e-12) }
        // Run to convergence, both marginals reach the transport polytope's: rows 1, prototypes n / k.
        try TeacherTargets.sinkhornKnopp(
            out: &out, logits: t, rows: n, prototypes: k, temperature: 1, totalRows: n,
            iterations: 300, reducer: LocalRowReducer(), scratch: &scratch)
        for c in 0..<k { #expect(abs((0..<n).reduce(0.0) { $0 + out[$1 * k + c] } - Double(n) / Double(k)) < 1e-9) }
        for r in 0..<n { #expect(abs(out[(r * k)..<((r + 1) * k)].reduce(0, +) - 1) < 1e-12) }
    }

    @Test(
        "masks: every rank's slice of the global plan gets half its crops masked and an even share of the ratio strata")
    func maskBalance() {
        let grid = 16, patches = 256, images = 64
        for iteration in 0..<20 {
            let plan = MaskPlan(
                seed: 3, iteration: UInt64(iteration), globalImages: images, grid: grid, probability: 0.5,
                ratioRange: [0.1, 0.5])
            for ranks in [2, 4, 8, 16] {
                let b = images / ranks
                var tokens: [Int] = []
                for rank in 0..<ranks {
                    let mine = (0..<2).flatMap { view in (0..<b).map { plan.targets[view * images + rank * b + $0] } }
                    // Exactly half of the rank's 2b crops are masked (one per image), as the official per-rank collate.
                    #expect(mine.filter { $0 > 0 }.count == b, "rank \(rank) of \(ranks)")
                    tokens.append(mine.reduce(0, +))
                }
                // Strata in mirrored pairs: a rank's b masked crops carry the same strata sum as any other's,
                // so totals differ only by the draw inside each stratum (< one stratum width, 0.4 N / 64
                // tokens, plus 1 for the rounding down, per crop).
                #expect(
                    Double(tokens.max()! - tokens.min()!) <= Double(b) * (0.4 * Double(patches) / 64 + 1),
                    "\(ranks) ranks: \(tokens)")
            }
        }
    }

    @Test(
        "masks: over 10,000 crops the counts stay in the official range, half the crops masked, blocks within limits"
    )
    func masks() {
        let grid = 16, patches = 256
        var masked = 0, total = 0
        for iteration in 0..<50 {
            let plan = MaskPlan(
                seed: 1, iteration: UInt64(iteration), globalImages: 100, grid: grid, probability: 0.5,
                ratioRange: [0.1, 0.5])
            #expect(plan.targets.filter { $0 > 0 }.count == 100)  // exactly half of 200 global crops
            for crop in 0..<200 {
                let target = plan.targets[crop]
                total += 1
                guard target > 0 else { continue }
                masked += 1
                #expect(target >= Int(0.1 * Double(patches)) && target <= patches / 2)
                let (mask, rectangles) = plan.generator.mask(target: target, stream: plan.stream.child(3, UInt64(crop)))
                let count = mask.filter { $0 }.count
                // Never above the target; at most a few cells short of it (the last rectangle may not fit).
                #expect(count <= target && count >= target - 8, "target \(target), masked \(count)")
                for r in rectangles {
                    #expect(r.height * r.width <= plan.generator.maxPatches && r.height < grid && r.width < grid)
                    #expect(r.top >= 0 && r.left >= 0 && r.top + r.height <= grid && r.left + r.width <= grid)
                }
            }
        }
        #expect(total == 10_000 && masked == 5_000)
        // The plan does not depend on how the global batch is split over ranks.
        let plan = MaskPlan(seed: 2, iteration: 3, globalImages: 8, grid: 4, probability: 0.5, ratioRange: [0.1, 0.5])
        let whole = plan.masks(firstImage: 0, count: 8)
        let halves = plan.masks(firstImage: 0, count: 4) + plan.masks(firstImage: 4, count: 4)
        let rowsOf = { (m: [Bool], view: Int, image: Int, count: Int) in
            Array(m[((view * count + image) * 16)..<((view * count + image + 1) * 16)])
        }
        #expect(rowsOf(whole, 1, 5, 8) == rowsOf(Array(halves[128...]), 1, 1, 4))
    }
}
