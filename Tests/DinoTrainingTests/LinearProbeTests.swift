// The linear probe: its first SGD step against a float64 gradient worked out independently, learning
// separable clusters, and reproducibility from the seed.

import DinoCore
import DinoEval
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("linear probe")
struct LinearProbeTests {
    /// `count` points per class around class means 3 units apart along separate axes, noise std 0.5.
    func clusters(classes: Int, perClass: Int, dimension f: Int, seed: UInt64) -> ([Float], [Int]) {
        var random = TestRandom(seed: seed)
        var features: [Float] = [], labels: [Int] = []
        for label in 0..<classes {
            for _ in 0..<perClass {
                var v = random.normals(f, scale: 0.5)
                v[label] += 3
                features += v.map(Float.init)
                labels.append(label)
            }
        }
        return (features, labels)
    }

    @Test("one full-batch step equals w0 - lr * (softmax(x w0^T + b) - onehot)^T x / n in float64 (rel. 1e-5)")
    func firstStep() {
        let (c, f) = (3, 5)
        let (features, labels) = clusters(classes: c, perClass: 4, dimension: f, seed: 7)
        let n = labels.count, lr = 0.3
        let (classifier, _) = LinearProbe.train(
            features: features, labels: labels, dimension: f, classes: c,
            learningRate: lr, epochs: 1, batch: n, seed: 11)
        // The documented initialisation: W ~ 0.01 N(0, 1) from the probe's stream, b = 0.
        let stream = RandomStream(seed: 11, purpose: .linearProbe, 0)
        let w0 = (0..<(c * f)).map { Double(Float(0.01 * stream.normal(UInt64($0)))) }
        var expectedW = w0, expectedB = [Double](repeating: 0, count: c)
        for i in 0..<n {
            let logits = (0..<c).map { k in (0..<f).reduce(0.0) { $0 + w0[k * f + $1] * Double(features[i * f + $1]) } }
            let top = logits.max() ?? 0
            let sum = logits.reduce(0) { $0 + exp($1 - top) }
            for k in 0..<c {
                let g = (exp(logits[k] - top) / sum - (k == labels[i] ? 1 : 0)) / Double(n)
                expectedB[k] -= lr * g
                for j in 0..<f { expectedW[k * f + j] -= lr * g * Double(features[i * f + j]) }
            }
        }
        // float32 logits and sums over 12 rows: errors of a few ulps of values of order 1.
        #expect(normwiseError(classifier.weight, expectedW) < 1e-5)
        #expect(normwiseError(classifier.bias, expectedB) < 1e-5)
    }

    @Test("separable clusters are learned (val top-1 >= 95 %) and the seed fixes the result")
    func separable() {
        let (train, trainLabels) = clusters(classes: 4, perClass: 32, dimension: 8, seed: 1)
        let (val, valLabels) = clusters(classes: 4, perClass: 16, dimension: 8, seed: 2)
        let (a, lossA) = LinearProbe.train(
            features: train, labels: trainLabels, dimension: 8, classes: 4,
            learningRate: 0.05, epochs: 20, batch: 16, seed: 3)
        let (b, lossB) = LinearProbe.train(
            features: train, labels: trainLabels, dimension: 8, classes: 4,
            learningRate: 0.05, epochs: 20, batch: 16, seed: 3)
        // Means 3 sqrt(2) apart with noise 0.5: the Bayes error is far below 1 %.
        #expect(LinearProbe.accuracy(a, features: val, labels: valLabels).top1 >= 95)
        #expect(lossA < 0.3)
        #expect(a.weight == b.weight && lossA == lossB)
        // An untrained (zero learning rate) classifier is near chance on the same data.
        let (untrained, _) = LinearProbe.train(
            features: train, labels: trainLabels, dimension: 8, classes: 4,
            learningRate: 0, epochs: 1, batch: 16, seed: 3)
        #expect(LinearProbe.accuracy(untrained, features: val, labels: valLabels).top1 < 60)
    }
}
