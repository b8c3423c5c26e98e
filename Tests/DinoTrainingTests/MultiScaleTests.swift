// The multi-scale descriptor's arithmetic (UnitRows: sums of L2-normalised rows, against float64), the
// scale lists the commands take, and the input side of a scale (whole patches of a real model).

import DinoConfig
import DinoCore
import DinoEval
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("multi-scale features")
struct MultiScaleTests {
    @Test("accumulate adds every row divided by its norm; normalize leaves unit rows; zero rows add nothing")
    func accumulate() {
        let channels = 5, rows = 4
        var generator = TestRandom(seed: 3)
        func randomRows() -> [Float] {
            (0..<(rows * channels)).map { _ in Float.random(in: -1..<1, using: &generator) }
        }
        var first = randomRows()
        for c in 0..<channels { first[2 * channels + c] = 0 }  // row 2 unreadable: zeros
        let second = randomRows()
        var sum = [Float](repeating: 0, count: rows * channels)
        UnitRows.accumulate(first, into: &sum, dimension: channels)
        UnitRows.accumulate(second, into: &sum, dimension: channels)
        UnitRows.normalize(&sum, dimension: channels)
        for r in 0..<rows {
            func unit(_ x: [Float]) -> [Double] {
                let row = (0..<channels).map { Double(x[r * channels + $0]) }
                let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
                return norm > 0 ? row.map { $0 / norm } : row
            }
            let total = zip(unit(first), unit(second)).map { $0 + $1 }
            let norm = total.reduce(0) { $0 + $1 * $1 }.squareRoot()
            // float32 sums of 5 products and one division per element: within 1e-6 of float64.
            for c in 0..<channels {
                #expect(abs(Double(sum[r * channels + c]) - total[c] / norm) < 1e-6, "row \(r)")
            }
        }
        var zeros = [Float](repeating: 0, count: 2 * channels)
        UnitRows.normalize(&zeros, dimension: channels)
        #expect(zeros.allSatisfy { $0 == 0 })
    }

    @Test("scale lists: distinct positive numbers, written back the same")
    func parse() {
        #expect(MultiScale.parse("1,1.5,2") == [1, 1.5, 2])
        #expect(MultiScale.parse(" 2 , 1 ") == [2, 1])
        for bad in ["", "1,,2", "0", "-1", "a", "1,1", "inf", "nan", "1,"] {
            #expect(MultiScale.parse(bad) == nil, "\(bad)")
        }
        #expect(MultiScale.describe([1, 1.5, 2]) == "1,1.5,2")
        #expect(MultiScale.describe(MultiScale.copyScales) == "1,1.5,2")
        #expect(MultiScale.parse(MultiScale.describe([0.75, 3])) == [0.75, 3])
    }

    @Test("a scale's input side is the nearest whole number of patches, at least one")
    func inputSizes() throws {
        let config = try ConfigLoader.load(
            file: TestPaths.packageRoot.appendingPathComponent("Configs/tests/tiny.yaml").path, overrides: []
        )
        .resolved(worldSize: 1)
        let model = try SelfDistillation(config: config, communicator: SingleProcessCommunicator(), seed: 1, threads: 1)
        #expect(model.inputSize == 28 && model.patchSize == 14)
        #expect([1, 1.5, 2, 0.1, 1.26, 1.24].map { model.inputSize(scale: $0) } == [28, 42, 56, 14, 42, 28])
        #expect(model.patchesPerImage(size: 56) == 16 && model.patchesPerImage(size: 28) == model.patchesPerImage)
    }
}
