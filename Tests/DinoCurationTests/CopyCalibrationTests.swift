// The copy threshold's calibration (CopyCalibration): the chosen threshold against a scan of every
// threshold between distinct similarities (the largest min(recall, precision), and of those the widest
// gap, its midpoint), the pairs against direct dot products, the rates at a threshold by counting, the
// calibration file found beside a folder or an exported file and refused when it names another checkpoint,
// and PlantedCopies on images that are not square (their central square is planted).

import DinoCore
import DinoCuration
import DinoData
import DinoTestSupport
import Foundation
import Testing

@Suite("curation: copy threshold calibration")
struct CopyCalibrationTests {
    /// Random pairs: copies mostly high, others mostly low, overlapping, with repeated values (ties).
    static func pairs(seed: UInt64) -> [(similarity: Double, isCopy: Bool)] {
        var random = TestRandom(seed: seed)
        return (0..<600).map { i in
            let isCopy = i % 12 == 0
            let value =
                isCopy
                ? 0.55 + 0.45 * Double.random(in: 0..<1, using: &random)
                : -0.2 + 0.9 * Double.random(in: 0..<1, using: &random)
            // A grid of uneven steps (0.02 plus 0 to 0.01): many equal similarities, gaps of several widths.
            let step = (value * 50).rounded()
            return (step / 50 + Double(Int(step + 100) % 3) * 0.005, isCopy)
        }
    }

    @Test("the best threshold is the midpoint of the widest gap among the cuts with the largest min(recall, precision)")
    func bestThresholdScan() throws {
        for seed: UInt64 in 1...20 {
            let pairs = Self.pairs(seed: seed)
            let best = try #require(CopyCalibration.bestThreshold(pairs))
            // Scan: every threshold between two consecutive distinct similarities (and below the lowest).
            let values = Array(Set(pairs.map(\.similarity))).sorted(by: >)
            var bestScore = -1.0, bestGap = -1.0, expected = 0.0
            for (k, high) in values.enumerated() {
                let low = k + 1 < values.count ? values[k + 1] : -1
                let t = (high + low) / 2
                let rates = CopyCalibration.rates(pairs, above: t)
                let score = min(rates.recall, rates.precision)
                if score > bestScore || (score == bestScore && high - low > bestGap) {
                    (bestScore, bestGap, expected) = (score, high - low, t)
                }
            }
            #expect(abs(best.threshold - expected) < 1e-12, "seed \(seed)")
            let rates = CopyCalibration.rates(pairs, above: best.threshold)
            #expect(best.recall == rates.recall && best.precision == rates.precision, "seed \(seed)")
            #expect(min(best.recall, best.precision) == bestScore, "seed \(seed)")
        }
        // Two cuts reach 0.75 (after 0.7: recall 3/4, precision 1; after 0.66: 3/4 and 3/4): the wider gap's.
        let tied: [(similarity: Double, isCopy: Bool)] = [
            (0.9, true), (0.8, true), (0.7, true), (0.66, false), (0.3, false), (0.2, true), (0.1, false),
        ]
        let chosen = try #require(CopyCalibration.bestThreshold(tied))
        #expect(abs(chosen.threshold - 0.48) < 1e-12 && chosen.recall == 0.75 && chosen.precision == 0.75)
        #expect(CopyCalibration.bestThreshold([(0.9, false), (0.1, false)]) == nil)
    }

    @Test("rates count the pairs above a threshold")
    func ratesByCounting() {
        let pairs: [(similarity: Double, isCopy: Bool)] = [
            (0.9, true), (0.8, false), (0.7, true), (0.6, true), (0.5, false),
        ]
        let rates = CopyCalibration.rates(pairs, above: 0.65)
        #expect(rates.recall == 2.0 / 3 && rates.precision == 2.0 / 3)
        let strict = CopyCalibration.rates(pairs, above: 0.7)  // 0.7 itself is not above
        #expect(strict.recall == 1.0 / 3 && strict.precision == 1.0 / 2)
    }

    @Test("pairs are the upper triangle of the cosine similarities, copies marked either way round")
    func pairsAgainstDotProducts() {
        var random = TestRandom(seed: 7)
        let n = 9, d = 5
        var features = (0..<(n * d)).map { _ in Float(random.normal()) }
        for i in 0..<n {
            let norm = (0..<d).reduce(Float(0)) { $0 + features[i * d + $1] * features[i * d + $1] }.squareRoot()
            for c in 0..<d { features[i * d + c] /= norm }
        }
        let pairs = CopyCalibration.pairs(features: features, dimension: d, copies: [(2, 7), (8, 1)])
        var index = 0
        for i in 0..<n {
            for j in (i + 1)..<n {
                let dot = (0..<d).reduce(0.0) { $0 + Double(features[i * d + $1]) * Double(features[j * d + $1]) }
                #expect(abs(pairs[index].similarity - dot) < 1e-12)
                #expect(pairs[index].isCopy == ((i, j) == (2, 7) || (i, j) == (1, 8)))
                index += 1
            }
        }
        #expect(index == pairs.count)
    }

    @Test("the calibration file lives beside its checkpoint and is refused for another checkpoint folder")
    func calibrationFile() throws {
        let root = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/run", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: root + "/backbone.h5", contents: Data())
        #expect(CopyCalibration.file(for: root + "/run") == root + "/run/copy-calibration.json")
        #expect(CopyCalibration.file(for: root + "/backbone.h5") == root + "/backbone.h5.copy-calibration.json")
        #expect(try CopyCalibration.read(for: root + "/run", resolvedFolder: root + "/run/checkpoints/a") == nil)
        let calibration = CopyCalibration(
            threshold: 0.71, recall: 0.95, precision: 0.97, checkpoint: root + "/run/checkpoints/a", iteration: 10,
            images: "held-out", sourceImages: 400, unreadableImages: 0, copyPairs: 40, otherPairs: 96_540,
            lowestCopySimilarity: ["crop": 0.6], highestOtherSimilarity: 0.7, recallAtPaperThreshold: 1,
            precisionAtPaperThreshold: 0.4, scales: [1, 1.5, 2])
        try JSONEncoder().encode(calibration).write(to: URL(fileURLWithPath: root + "/run/copy-calibration.json"))
        #expect(
            try CopyCalibration.read(for: root + "/run", resolvedFolder: root + "/run/checkpoints/a") == calibration)
        // The same folder named another way (as a relative path resolves) is the same checkpoint.
        #expect(
            try CopyCalibration.read(for: root + "/run", resolvedFolder: root + "/run/./checkpoints/../checkpoints/a")
                == calibration)
        // A calibration written before scales were recorded holds for scale 1.
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(calibration)) as? [String: Any] ?? [:]
        json["scales"] = nil
        try JSONSerialization.data(withJSONObject: json).write(
            to: URL(fileURLWithPath: root + "/run/copy-calibration.json"))
        let older = try CopyCalibration.read(for: root + "/run", resolvedFolder: root + "/run/checkpoints/a")
        #expect(older?.measuredScales == [1] && older?.threshold == 0.71)
        let stale = #expect(throws: CurationError.self) {
            try CopyCalibration.read(for: root + "/run", resolvedFolder: root + "/run/checkpoints/b")
        }
        #expect("\(stale.map { "\($0)" } ?? "")".contains("calibrate-copies"))
        try Data("{}".utf8).write(to: URL(fileURLWithPath: root + "/run/copy-calibration.json"))
        #expect(throws: CurationError.self) {
            try CopyCalibration.read(for: root + "/run", resolvedFolder: root + "/run/checkpoints/a")
        }
    }

    @Test("planted copies of images that are not square are made from their central square")
    func plantedCentralSquare() throws {
        let root = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let wide = SyntheticImages.draw(label: 3, index: 0, split: 1, size: 40, seed: 1)
        var pixels = [UInt8](repeating: 9, count: 60 * 40 * 3)  // 60 x 40: the drawing in columns 10..<50
        for y in 0..<40 {
            pixels[((y * 60 + 10) * 3)..<((y * 60 + 50) * 3)] = wide.pixels[(y * 40 * 3)..<((y + 1) * 40 * 3)]
        }
        let image = RGBImage(width: 60, height: 40, pixels: pixels)
        let truth = try PlantedCopies.write([image, image], names: ["a", "b"], to: root, every: 1, seed: 0)
        #expect(truth.copies.map(\.source) == [0, 1] && truth.copies.map(\.kind) == [.exact, .jpeg])
        // The list names files beside it (a folder given by a relative path reads the same).
        let listed = try String(contentsOfFile: truth.listFile, encoding: .utf8).split(separator: "\n")
        #expect(listed == ["a.png", "b.png", "copy-000.png", "copy-001.png"])
        let dataset = try ImageDataset(path: truth.listFile)
        #expect(dataset.samples.map(\.path) == listed.map { root + "/" + $0 })
        for sample in dataset.samples.prefix(1) + dataset.samples.suffix(2).prefix(1) {
            let written = try ImageCodec.decode(Data(contentsOf: URL(fileURLWithPath: sample.path)))
            #expect(written == wide)
        }
    }
}
