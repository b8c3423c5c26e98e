// Linear probe on frozen features, after dinov2/eval/linear.py: a linear classifier
// logits[N, C] = features[N, F] . W[C, F]^T + b[C] (W ~ N(0, 0.01^2), b = 0) trained with softmax
// cross-entropy, SGD (momentum 0.9, no weight decay) and a cosine learning rate from lr to 0, one
// classifier per learning rate of a grid, the best reported on the validation set.
// Features are the final-norm CLS token, optionally followed by the mean final-norm patch token (the
// official n_last_blocks=1 input with avgpool False / True), computed once on the evaluation view: the official
// probe instead re-crops
// and flips the training images every epoch, so numbers are not interchangeable with it.
// Ranks share the work by learning rate (rank r trains grid[r], grid[r + N], ...).

import DinoCore
import DinoData
import DinoKernels
import Foundation

/// Linear classification on frozen features.
public enum LinearProbe {
    /// The official learning-rate grid of linear.py (before scaling by batch / 256).
    public static let officialGrid: [Double] = [
        1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1,
    ]

    /// One trained classifier's outcome.
    public struct Outcome: Sendable {
        public let learningRate: Double
        public let top1: Double
        public let top5: Double
        public let finalLoss: Double
    }

    /// A trained linear classifier: weight [classes, features], bias [classes].
    public struct Classifier {
        public var weight: [Float]
        public var bias: [Float]
        public let features: Int
        public let classes: Int

        /// Logits [rows, classes] of `input` [rows, features].
        public func logits(_ input: UnsafePointer<Float>, rows: Int) -> [Float] {
            var out = [Float](repeating: 0, count: max(1, rows * classes))
            withBase(weight) { w in
                withBase(bias) { b in
                    out.withUnsafeMutableBufferPointer { o in
                        guard let ob = o.baseAddress else { return }
                        Linear.forward(
                            out: ob, input: input, weight: w, bias: b, rows: rows, inFeatures: features,
                            outFeatures: classes)
                    }
                }
            }
            return Array(out.prefix(rows * classes))
        }
    }

    /// Trains one classifier with SGD on `features` [n, f] and `labels` (0..<classes); sample order per
    /// epoch comes from the counter-based stream keyed by (seed, epoch), so the result is reproducible.
    /// Returns the classifier and the mean loss of the last epoch.
    public static func train(
        features: [Float], labels: [Int], dimension f: Int, classes: Int, learningRate: Double,
        epochs: Int, batch: Int, seed: UInt64
    ) -> (Classifier, Double) {
        let n = labels.count, b = max(1, min(batch, n))
        let initial = RandomStream(seed: seed, purpose: .linearProbe, 0)
        // One allocation for parameters, momenta, gradients and the batch's scratch, freed on return.
        let sizes = [
            classes * f, classes, classes * f, classes, classes * f, classes, b * f,
            b * classes, b * classes, b * classes, b * classes,
        ]
        let storage = UnsafeMutablePointer<Float>.allocate(capacity: sizes.reduce(0, +))
        defer { storage.deallocate() }
        var regions: [UnsafeMutablePointer<Float>] = []
        var offset = 0
        for size in sizes {
            regions.append(storage + offset)
            offset += size
        }
        let (w, bb, vW, vB, gW, gB, x) = (
            regions[0], regions[1], regions[2], regions[3], regions[4], regions[5], regions[6]
        )
        let (t, z, pr, dz) = (regions[7], regions[8], regions[9], regions[10])
        for i in 0..<(classes * f) { w[i] = Float(0.01 * initial.normal(UInt64(i))) }
        bb.setToZero(count: classes)
        vW.setToZero(count: classes * f)
        vB.setToZero(count: classes)

        let stepsPerEpoch = (n + b - 1) / b, totalSteps = max(1, epochs * stepsPerEpoch)
        var step = 0, lastEpochLoss = 0.0
        for epoch in 0..<epochs {
            let order = RandomStream(seed: seed, purpose: .linearProbe, 1, UInt64(epoch))
            let permutation = (0..<n).sorted { order.bits(UInt64($0)) < order.bits(UInt64($1)) }
            var epochLoss = 0.0
            for start in stride(from: 0, to: n, by: b) {
                let rows = min(b, n - start)
                t.setToZero(count: rows * classes)
                for (j, index) in permutation[start..<(start + rows)].enumerated() {
                    for c in 0..<f { x[j * f + c] = features[index * f + c] }
                    t[j * classes + labels[index]] = 1
                }
                Linear.forward(out: z, input: x, weight: w, bias: bb, rows: rows, inFeatures: f, outFeatures: classes)
                let loss = Softmax.crossEntropy(
                    dLogits: dz, probabilities: pr, logits: z, targets: t, rows: rows,
                    columns: classes, temperature: 1, weight: 1 / Float(rows))
                epochLoss += Double(loss) * Double(rows)
                gW.setToZero(count: classes * f)
                gB.setToZero(count: classes)
                Linear.backward(
                    dInput: nil, dWeight: gW, dBias: gB, dOut: dz, input: x, weight: w, rows: rows,
                    inFeatures: f, outFeatures: classes)
                // Cosine annealing to 0 over all steps; PyTorch SGD with momentum: v = 0.9 v + g, p -= lr v.
                let lr = Float(learningRate * 0.5 * (1 + cos(Double.pi * Double(step) / Double(totalSteps))))
                for i in 0..<(classes * f) {
                    vW[i] = 0.9 * vW[i] + gW[i]
                    w[i] -= lr * vW[i]
                }
                for i in 0..<classes {
                    vB[i] = 0.9 * vB[i] + gB[i]
                    bb[i] -= lr * vB[i]
                }
                step += 1
            }
            lastEpochLoss = epochLoss / Double(max(1, n))
        }
        let classifier = Classifier(
            weight: Array(UnsafeBufferPointer(start: w, count: classes * f)),
            bias: Array(UnsafeBufferPointer(start: bb, count: classes)), features: f, classes: classes)
        return (classifier, lastEpochLoss)
    }

    /// Top-1 and top-5 accuracy (percent) of `classifier` on `features` [n, f] with `labels`.
    public static func accuracy(
        _ classifier: Classifier, features: [Float], labels: [Int]
    ) -> (top1: Double, top5: Double) {
        let n = labels.count, c = classifier.classes
        guard n > 0 else { return (0, 0) }
        let logits = withBase(features) { classifier.logits($0, rows: n) }
        var top1 = 0, top5 = 0
        for i in 0..<n {
            let row = logits[(i * c)..<((i + 1) * c)]
            let target = row[row.startIndex + labels[i]]
            // Rank of the true class: how many classes score higher (ties go to the lower index).
            let better = (0..<c).filter { k in
                let v = row[row.startIndex + k]
                return v > target || (v == target && k < labels[i])
            }.count
            if better == 0 { top1 += 1 }
            if better < 5 { top5 += 1 }
        }
        return (100 * Double(top1) / Double(n), 100 * Double(top5) / Double(n))
    }

    /// Probe features of every image: the final-norm CLS token, followed when `avgpool` by the mean of
    /// the final-norm patch tokens: [n, D] or [n, 2D].
    public static func features(
        of dataset: ImageDataset, model: some FrozenFeatures, avgpool: Bool,
        communicator comm: any Communicator
    ) throws -> [Float] {
        let d = model.featureDimension, width = avgpool ? 2 * d : d
        let p = model.patchesPerImage
        var all = [Float](repeating: 0, count: dataset.count * width)
        try TeacherEmbedding.rounds(of: dataset, model: model, communicator: comm, patches: avgpool) { round in
            round.forEachImage { index, row in
                for c in 0..<d { all[index * width + c] = round.cls[row * d + c] }
                guard avgpool else { return }
                for t in 0..<p {
                    for c in 0..<d { all[index * width + d + c] += round.patches[(row * p + t) * d + c] }
                }
                for c in 0..<d { all[index * width + d + c] /= Float(p) }
            }
        }
        return all
    }

    /// Trains one classifier per learning rate of `grid` (scaled by batch / 256 as the official code
    /// does), spread over the ranks, and returns every outcome in grid order on every rank.
    public static func evaluate(
        trainFeatures: [Float], trainLabels: [Int], valFeatures: [Float], valLabels: [Int],
        dimension f: Int, classes: Int, grid: [Double] = officialGrid, epochs: Int, batch: Int,
        seed: UInt64, communicator comm: any Communicator
    ) throws -> [Outcome] {
        let scale = Double(batch) / 256
        var results = [Double](repeating: 0, count: grid.count * 3)
        for (g, base) in grid.enumerated() where g % comm.worldSize == comm.rank {
            let (classifier, loss) = train(
                features: trainFeatures, labels: trainLabels, dimension: f, classes: classes,
                learningRate: base * scale, epochs: epochs, batch: batch, seed: seed)
            let (top1, top5) = accuracy(classifier, features: valFeatures, labels: valLabels)
            results[3 * g] = top1
            results[3 * g + 1] = top5
            results[3 * g + 2] = loss
        }
        let summed = try comm.allReduce(results, op: .sum)  // each slot was filled by exactly one rank
        return grid.enumerated().map { g, base in
            Outcome(
                learningRate: base * scale, top1: summed[3 * g], top5: summed[3 * g + 1], finalLoss: summed[3 * g + 2])
        }
    }
}
