// The DINOv2 objective on head outputs (dinov2/loss/*.py, train/ssl_meta_arch.py):
//   teacher targets by softmax centering (EMA center, applied one step late) or Sinkhorn-Knopp;
//   the DINO CLS loss over multi-crop pairs; the iBOT masked-patch loss; the KoLeo regulariser.
// Shapes: B images per rank, K prototypes. Student global logits [2B, K] (rows: view 1 of every
// image, then view 2), local logits [n_local B, K] (crop-major), teacher targets [2B, K] in the
// teacher's own view order; masked-token logits [M, K].
// Gradients of the losses are written (=) into the caller's buffers, already multiplied by the
// loss weights, so they feed the heads' backward directly. The targets need sums and maxima over
// every rank's rows: they come through an injected `RowReducer`, so the model never sees a rank.

import DinoCore
import DinoKernels
import Foundation

/// Sums and maxima over the rows every rank holds: the collectives of the teacher targets. The
/// training step passes one over its communicator; one process on its own uses `LocalRowReducer`.
public protocol RowReducer: AnyObject {
    /// Ranks contributing rows.
    var ranks: Int { get }
    /// This process's place among them (its rows come after those of the ranks before it).
    var rank: Int { get }
    /// Element-wise sums over ranks, in place.
    func sum(_ values: UnsafeMutableBufferPointer<Double>) throws
    func sum(_ value: Double) throws -> Double
    func max(_ value: Double) throws -> Double
}

/// The reducer of a single process: every value is already the total.
public final class LocalRowReducer: RowReducer {
    public init() {}
    public var ranks: Int { 1 }
    public var rank: Int { 0 }
    public func sum(_ values: UnsafeMutableBufferPointer<Double>) throws {}
    public func sum(_ value: Double) throws -> Double { value }
    public func max(_ value: Double) throws -> Double { value }
}

/// Where the teacher's targets come from (`train.centering`).
public enum TeacherTargets {
    /// q = softmax((t - center) / tau); `rankMean`: the batch center is the mean of the per-rank
    /// means (iBOT), otherwise the mean over every row of every rank (DINO CLS).
    @inlinable  // specialised where it is called: element loops over K prototypes stay concrete
    public static func centered<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, logits: UnsafePointer<T>, rows: Int, prototypes k: Int, temperature: Double,
        center: SoftmaxCenter<T>, threads: Int = 1
    ) {
        center.applyPendingUpdate()
        let centerValues = UnsafePointer(center.values.base)
        WorkQueue.run(count: rows, threads: threads) { r, _ in
            let row = out + r * k
            T.linearCombination(row, logits + r * k, T(1 / temperature), centerValues, T(-1 / temperature), k)
            let sum = T.expSubtractSum(row, k, T.rowMax(row, k))
            T.scale(row, k, 1 / sum)
        }
    }

    /// Sinkhorn-Knopp with 3 iterations over the rows of every rank (`totalRows` of them in all):
    /// Q = exp(t / tau) / sum; 3 x (divide each prototype's sum (all-reduced) and by K; divide each
    /// row's sum and by totalRows); times totalRows, so every row sums to 1. The global maximum of
    /// t / tau is subtracted before exp (it cancels in the first normalisation) so nothing overflows.
    @inlinable  // specialised where it is called: element loops over K prototypes stay concrete
    public static func sinkhornKnopp<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, logits: UnsafePointer<T>, rows: Int, prototypes k: Int, temperature: Double,
        totalRows: Int, iterations: Int = 3, reducer: any RowReducer, scratch: UnsafeMutablePointer<Double>
    ) throws {
        // Vector kernels for exp and scaling; prototype sums in float64; divisions hoisted into one
        // reciprocal per prototype and per row (this runs on every teacher row of every step).
        var localMax = -Double.infinity
        for r in 0..<rows { localMax = Swift.max(localMax, Double(T.rowMax(logits + r * k, k))) }
        let globalMax = try reducer.max(rows > 0 ? localMax / temperature : -Double.greatestFiniteMagnitude)
        var localSum = 0.0
        for r in 0..<rows {
            let row = out + r * k
            row.update(from: logits + r * k, count: k)
            T.scale(row, k, T(1 / temperature))
            localSum += Double(T.expSubtractSum(row, k, T(globalMax)))
        }
        let total = try reducer.sum(localSum)
        T.scale(out, rows * k, T(1 / total))
        let prototypeScale = UnsafeMutableBufferPointer(start: scratch, count: k)
        for iteration in 0..<iterations {
            prototypeScale.update(repeating: 0)
            for r in 0..<rows {
                let row = out + r * k
                for c in 0..<k { prototypeScale[c] += Double(row[c]) }
            }
            try reducer.sum(prototypeScale)
            for c in 0..<k { prototypeScale[c] = 1 / (prototypeScale[c] * Double(k)) }
            // The last row normalisation leaves each row summing to 1 (the official final x totalRows).
            let rowTarget = iteration == iterations - 1 ? 1.0 : Double(totalRows)
            for r in 0..<rows {
                let row = out + r * k
                var rowSum = 0.0
                for c in 0..<k {
                    let value = T(Double(row[c]) * prototypeScale[c])
                    row[c] = value
                    rowSum += Double(value)
                }
                T.scale(row, k, T(1 / (rowSum * rowTarget)))
            }
        }
        if iterations == 0 { T.scale(out, rows * k, T(Double(totalRows))) }
    }
}

/// The EMA center of softmax centering (momentum 0.9), updated one step late as the official code.
public final class SoftmaxCenter<T: KernelScalar> {
    public let prototypes: Int
    public let momentum: Double
    public let values = GrowableBuffer<T>()
    @usableFromInline var pending: [Double]? = nil
    /// Column sums of the batch being recorded (reused every step).
    @usableFromInline let columnSums = GrowableBuffer<T>()

    public init(prototypes: Int, momentum: Double = 0.9) {
        self.prototypes = prototypes
        self.momentum = momentum
        values.reserve(prototypes).setToZero(count: prototypes)
    }

    /// The center that the next `TeacherTargets.centered` call will apply, for checkpoints.
    public var pendingBatchCenter: [Double]? { pending }

    /// Restores the state saved by a checkpoint.
    public func restore(center: [T], pending: [Double]?) {
        precondition(center.count == prototypes, "center of \(center.count) values for \(prototypes) prototypes")
        for i in 0..<prototypes { values.base[i] = center[i] }
        self.pending = pending
    }

    @inlinable
    func applyPendingUpdate() {
        guard let pending else { return }
        let c = values.base
        for i in 0..<prototypes { c[i] = T(Double(c[i]) * momentum + pending[i] * (1 - momentum)) }
        self.pending = nil
    }

    /// Records this step's batch center (used from the next step on): the sum of `logits` rows,
    /// all-reduced, divided by the global row count (`rankMean` false) or by rows x ranks per rank
    /// mean (`rankMean` true: each rank's mean weighs the same, as the official iBOT center).
    @inlinable  // specialised where it is called (the element loops are over K prototypes)
    public func recordBatch(_ logits: UnsafePointer<T>, rows: Int, rankMean: Bool, reducer: any RowReducer) throws {
        let columns = columnSums.reserve(prototypes)
        columns.setToZero(count: prototypes)
        T.addColumnSums(columns, logits, rows: rows, columns: prototypes)
        var sums = [Double](repeating: 0, count: prototypes)
        let rowScale = rankMean && rows > 0 ? 1 / Double(rows) : 1
        for c in 0..<prototypes { sums[c] = Double(columns[c]) * rowScale }
        try sums.withUnsafeMutableBufferPointer { try reducer.sum($0) }
        let divisor = rankMean ? Double(reducer.ranks) : try reducer.sum(Double(rows))
        for c in 0..<prototypes { sums[c] = divisor > 0 ? sums[c] / divisor : 0 }
        pending = sums
    }
}

/// The losses of one step, as the official code computes and logs them.
public enum DinoLosses {
    /// The DINO CLS loss. Returns (local part, global part), each divided by the official number of
    /// terms 2 + max(2 n_local, 1), times `weight`; writes the gradients of the student logits.
    public static func clsLoss<T: KernelScalar>(
        dGlobal: UnsafeMutablePointer<T>, dLocal: UnsafeMutablePointer<T>, studentGlobal: UnsafePointer<T>,
        studentLocal: UnsafePointer<T>, teacherTargets q: UnsafePointer<T>, images b: Int, localCrops: Int,
        prototypes k: Int, studentTemperature: Double = 0.1, weight: Double, scratch: UnsafeMutablePointer<T>,
        threads: Int = 1
    ) -> (local: Double, global: Double) {
        let terms = Double(2 + Swift.max(2 * localCrops, 1))
        let pairWeight = T(weight / (Double(b) * terms))
        var global: T = 0
        for view in 0..<2 {
            // Student view v against the teacher's other view.
            global += Softmax.crossEntropy(
                dLogits: dGlobal + view * b * k, probabilities: scratch,
                logits: studentGlobal + view * b * k, targets: q + (1 - view) * b * k,
                rows: b, columns: k, temperature: T(studentTemperature), weight: pairWeight,
                threads: threads)
        }
        // Each local crop against both teacher views: H is linear in the target, so one term with
        // the mean target and twice the weight.
        var local: T = 0
        if localCrops > 0 {
            let meanTarget = scratch + b * k
            T.linearCombination(meanTarget, q, 0.5, q + b * k, 0.5, b * k)
            for crop in 0..<localCrops {
                local += Softmax.crossEntropy(
                    dLogits: dLocal + crop * b * k, probabilities: scratch,
                    logits: studentLocal + crop * b * k, targets: meanTarget, rows: b,
                    columns: k, temperature: T(studentTemperature), weight: 2 * pairWeight,
                    threads: threads)
            }
        }
        return (Double(local), Double(global))
    }

    /// The iBOT loss: sum over masked tokens of H(q, s) / m_i (m_i = masked tokens of the token's
    /// crop), divided by the rank's global-crop count, times `weight`. `scratch` holds `threads * k`
    /// values; tokens run in parallel and their losses are summed in token order afterwards.
    public static func patchLoss<T: KernelScalar>(
        dStudent: UnsafeMutablePointer<T>, student: UnsafePointer<T>, teacherTargets q: UnsafePointer<T>,
        tokenWeights: [Double], globalCrops: Int, prototypes k: Int, studentTemperature: Double = 0.1, weight: Double,
        scratch: UnsafeMutablePointer<T>, threads: Int = 1
    ) -> Double {
        var tokenLosses = [Double](repeating: 0, count: tokenWeights.count)
        tokenLosses.withUnsafeMutableBufferPointer { losses in
            guard let out = losses.baseAddress else { return }
            WorkQueue.run(count: tokenWeights.count, threads: threads) { j, worker in
                out[j] = Double(
                    Softmax.crossEntropyRow(
                        dLogits: dStudent + j * k, probabilities: scratch + worker * k,
                        logits: student + j * k, targets: q + j * k, columns: k,
                        temperature: T(studentTemperature),
                        weight: T(weight * tokenWeights[j] / Double(globalCrops))))
            }
        }
        var total = 0.0
        for loss in tokenLosses { total += loss }
        return total
    }

    /// KoLeo on one view's backbone CLS tokens x [n, D] (n >= 2): -mean_i log(d_i + 1e-8) with d_i
    /// the distance (eps 1e-8 added to the difference, as PairwiseDistance) between the normalised
    /// x_i and its nearest neighbour by inner product. Writes dX (=) times `weight`.
    public static func koleo<T: KernelScalar>(
        dX: UnsafeMutablePointer<T>, x: UnsafePointer<T>, rows n: Int, channels d: Int,
        weight: Double
    ) -> Double {
        precondition(n >= 2, "KoLeo needs at least two rows per view (got \(n))")
        var y = [T](repeating: 0, count: n * d), norms = [T](repeating: 0, count: n)
        var dY = [T](repeating: 0, count: n * d)
        var loss = 0.0
        y.withUnsafeMutableBufferPointer { yp in
            norms.withUnsafeMutableBufferPointer { np in
                dY.withUnsafeMutableBufferPointer { dyp in
                    guard let y = yp.baseAddress, let norms = np.baseAddress, let dy = dyp.baseAddress else { return }
                    L2Normalize.forward(out: y, norms: norms, input: x, rows: n, channels: d, epsilon: T(1e-8))
                    var difference = [Double](repeating: 0, count: d)
                    for i in 0..<n {
                        var best = -Double.infinity, neighbour = 0
                        for j in 0..<n where j != i {
                            let similarity = Double(T.dot(y + i * d, y + j * d, d))
                            if similarity > best { (best, neighbour) = (similarity, j) }
                        }
                        var squared = 0.0
                        for c in 0..<d {
                            difference[c] = Double(y[i * d + c]) - Double(y[neighbour * d + c]) + 1e-8
                            squared += difference[c] * difference[c]
                        }
                        let distance = squared.squareRoot()
                        loss -= Foundation.log(distance + 1e-8) / Double(n)
                        // d loss / d distance = -1 / (n (distance + eps)); d distance / d y_i = difference / distance.
                        let coefficient = -weight / (Double(n) * (distance + 1e-8) * distance)
                        for c in 0..<d {
                            dy[i * d + c] += T(coefficient * difference[c])
                            dy[neighbour * d + c] -= T(coefficient * difference[c])
                        }
                    }
                    L2Normalize.backward(
                        dInput: dX, dOut: dy, out: y, norms: norms, rows: n, channels: d, epsilon: T(1e-8))
                }
            }
        }
        return weight * loss
    }

    /// The copy-detection loss (SSCD's InfoNCE, Pizzi et al. 2022) on the global CLS tokens x [2B, D]
    /// (view 1 of this rank's B images, then view 2). Every view of every rank is an anchor: its positive
    /// is the other view of its image, its negatives every other view of every rank. With z the
    /// L2-normalised rows gathered over the R ranks (N = 2 B R, rank-major) and s_ij = z_i . z_j / tau:
    ///   L = mean_i [log sum_{j != i} exp(s_ij) - s_i,p(i)].
    /// The gradient of every row needs every anchor's softmax, so each rank computes all of them (in
    /// float64, the same on every rank) and keeps its own rows. The ranks' gradients are averaged, so
    /// dX (=) is R weight dL/dx, and the rank returns R weight (its anchors' share of L): the mean over
    /// ranks is weight L, as one rank with the whole batch computes it.
    public static func copyContrastive<T: KernelScalar>(
        dX: UnsafeMutablePointer<T>, x: UnsafePointer<T>, images b: Int, channels d: Int, temperature: Double,
        weight: Double, reducer: any RowReducer, scratch: CopyLossScratch<T>
    ) throws -> Double {
        let local = 2 * b, ranks = reducer.ranks, n = local * ranks, first = reducer.rank * local
        let y = scratch.normalized.reserve(local * d + local), norms = y + local * d
        L2Normalize.forward(out: y, norms: norms, input: x, rows: local, channels: d, epsilon: T(1e-8))
        // Every rank's rows (zeros but its own, summed over ranks: x + 0 is exact).
        let z = scratch.gathered.reserve(n * d + n * n + local * n + local * d)
        let g = z + n * d, symmetric = g + n * n, dz = symmetric + local * n
        z.setToZero(count: n * d)
        for i in 0..<local * d { z[first * d + i] = Double(y[i]) }
        try reducer.sum(UnsafeMutableBufferPointer(start: z, count: n * d))
        Double.gemm(
            transposeA: false, transposeB: true, m: n, n: n, k: d, alpha: 1 / temperature, a: z, lda: d, b: z,
            ldb: d, beta: 0, c: g, ldc: n)
        // Row i of the similarities becomes G_i = dL/ds_i (G_ii = 0); the loss sums the rank's own anchors.
        var loss = 0.0
        for i in 0..<n {
            let row = g + i * n
            let positive = i % local < b ? i + b : i - b
            let similarityToPositive = row[positive]
            row[i] = -Double.infinity
            let largest = Double.rowMax(row, n)
            let sum = Double.expSubtractSum(row, n, largest)
            if i >= first && i < first + local { loss += largest + Foundation.log(sum) - similarityToPositive }
            Double.scale(row, n, 1 / (sum * Double(n)))
            row[positive] -= 1 / Double(n)
        }
        // dL/dz_k = (1 / tau) sum_j (G_kj + G_jk) z_j for this rank's rows k.
        for k in 0..<local {
            for j in 0..<n { symmetric[k * n + j] = g[(first + k) * n + j] + g[j * n + first + k] }
        }
        let scale = Double(ranks) * weight
        Double.gemm(
            transposeA: false, transposeB: false, m: local, n: d, k: n, alpha: scale / temperature,
            a: symmetric, lda: n, b: z, ldb: d, beta: 0, c: dz, ldc: d)
        let dY = scratch.dNormalized.reserve(local * d)
        for i in 0..<local * d { dY[i] = T(dz[i]) }
        L2Normalize.backward(dInput: dX, dOut: dY, out: y, norms: norms, rows: local, channels: d, epsilon: T(1e-8))
        return scale * loss / Double(n)
    }
}

/// The copy loss's buffers, grown to the largest step and reused.
public final class CopyLossScratch<T: KernelScalar> {
    let normalized = GrowableBuffer<T>(), dNormalized = GrowableBuffer<T>(), gathered = GrowableBuffer<Double>()
    public init() {}
    public var bytes: Int { normalized.bytes + dNormalized.bytes + gathered.bytes }
}
