// The weighted k-NN vote: separable features classify perfectly, and a small case worked by hand.

import DinoEval
import DinoTraining
import Foundation
import Testing

@Suite("k-NN")
struct KNNTests {
    @Test("separable clusters give 100 % top-1")
    func separable() {
        // Three classes along three axes, with small offsets; unit-normalised.
        var train: [Float] = [], trainLabels: [Int] = [], val: [Float] = [], valLabels: [Int] = []
        for label in 0..<3 {
            for j in 0..<5 {
                var v: [Float] = [0.05 * Float(j), 0.03, 0.02]
                v[label] = 1
                let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
                (j < 4
                    ? {
                        train += v.map { $0 / norm }
                        trainLabels.append(label)
                    }
                    : {
                        val += v.map { $0 / norm }
                        valLabels.append(label)
                    })()
            }
        }
        let result = KNN.accuracy(
            train: train, trainLabels: trainLabels, val: val, valLabels: valLabels, dimension: 3, k: 3)
        #expect(result.top1 == 100 && result.top5 == 100)
    }

    @Test("the vote weights exp(similarity / T), worked by hand")
    func handWorked() {
        // Query [1, 0]; neighbours: label 0 at similarity 0.9 and 0.1, label 1 at similarity 0.8 and 0.7.
        // k = 4, T = 0.07: votes(0) = e^(0.9/0.07) + e^(0.1/0.07) = 389,232 ..., votes(1) = e^(0.8/0.07) + e^(0.7/0.07)
        // = 115,389 ... : class 0 wins. With k = 3 the 0.1 neighbour drops out: still class 0.
        let train: [Float] = [
            0.9, (1 - 0.81).squareRoot(), 0.1, (1 - 0.01).squareRoot(),
            0.8, (1 - 0.64).squareRoot(), 0.7, (1 - 0.49).squareRoot(),
        ]
        let labels = [0, 0, 1, 1]
        #expect(
            KNN.accuracy(train: train, trainLabels: labels, val: [1, 0], valLabels: [0], dimension: 2, k: 4).top1 == 100
        )
        // At T = 1 the two class-1 neighbours (e^0.8 + e^0.7 = 4.23) outvote class 0 (e^0.9 + e^0.1 = 3.57).
        #expect(
            KNN.accuracy(
                train: train, trainLabels: labels, val: [1, 0], valLabels: [0], dimension: 2, k: 4,
                temperature: 1
            ).top1 == 0)
    }
}
