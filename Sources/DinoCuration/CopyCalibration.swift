// The copy rule's threshold for one copy-detection model, measured rather than assumed: a cosine
// threshold belongs to a descriptor (SSCD's README gives 0.75 for 90 % precision with its model; the
// paper's 0.6 is for the SSCD it used), so `calibrate-copies` plants copies among images the model is
// to be used on (PlantedCopies) and picks the threshold at which the copy pairs are told from all other
// pairs best: the largest min(recall, precision) over the pairs of the planted pool, in the middle of
// the gap between the two similarities it falls between (the widest such gap on a tie). The result is a
// JSON file beside the checkpoint (`copy-calibration.json`) that `curate --copy-checkpoint` reads as its
// default threshold; it names the checkpoint folder it measured, so a model trained further is not
// judged by an old threshold.

import Foundation

/// A copy-detection model's measured threshold and how well it separates planted copies.
public struct CopyCalibration: Codable, Sendable, Equatable {
    /// The threshold curate's copy rule uses with this model (pairs above it are copies).
    public var threshold: Double
    /// Recall and precision of the planted copy pairs at `threshold`.
    public var recall: Double
    public var precision: Double
    /// The checkpoint folder whose features were measured (as `curate` resolves it; an absolute path).
    public var checkpoint: String
    public var iteration: Int
    /// The images the copies were planted among (an absolute path), how many of them were used and skipped as
    /// unreadable.
    public var images: String
    public var sourceImages: Int
    public var unreadableImages: Int
    /// Planted copy pairs and all other pairs of the planted pool.
    public var copyPairs: Int
    public var otherPairs: Int
    /// Lowest similarity of a copy to its source, per kind of copy (exact, jpeg, crop, colour).
    public var lowestCopySimilarity: [String: Double]
    /// Highest similarity between two images that are not copies.
    public var highestOtherSimilarity: Double
    /// Recall and precision at the paper's 0.6, for comparison.
    public var recallAtPaperThreshold: Double
    public var precisionAtPaperThreshold: Double
    /// The input scales the features were computed at (MultiScale); absent in calibrations written before
    /// there were scales, which were measured at 1 (`measuredScales`).
    public var scales: [Double]?

    /// The scales the threshold holds for.
    public var measuredScales: [Double] { scales ?? [1] }

    public init(
        threshold: Double, recall: Double, precision: Double, checkpoint: String, iteration: Int, images: String,
        sourceImages: Int, unreadableImages: Int, copyPairs: Int, otherPairs: Int,
        lowestCopySimilarity: [String: Double], highestOtherSimilarity: Double, recallAtPaperThreshold: Double,
        precisionAtPaperThreshold: Double, scales: [Double]
    ) {
        self.threshold = threshold
        self.recall = recall
        self.precision = precision
        self.checkpoint = checkpoint
        self.iteration = iteration
        self.images = images
        self.sourceImages = sourceImages
        self.unreadableImages = unreadableImages
        self.copyPairs = copyPairs
        self.otherPairs = otherPairs
        self.lowestCopySimilarity = lowestCopySimilarity
        self.highestOtherSimilarity = highestOtherSimilarity
        self.recallAtPaperThreshold = recallAtPaperThreshold
        self.precisionAtPaperThreshold = precisionAtPaperThreshold
        self.scales = scales
    }

    public static let fileName = "copy-calibration.json"
    public static let paperThreshold = 0.6

    /// Where the calibration of `checkpoint` (a run or checkpoint folder, or an exported backbone file) lives.
    public static func file(for checkpoint: String) -> String {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: checkpoint, isDirectory: &isDirectory), !isDirectory.boolValue {
            return checkpoint + "." + fileName
        }
        return checkpoint + "/" + fileName
    }

    /// The calibration of `checkpoint` when there is one; refuses one measured on another checkpoint folder
    /// than `resolvedFolder` (the one the model was restored from).
    public static func read(for checkpoint: String, resolvedFolder: String) throws -> CopyCalibration? {
        let path = file(for: checkpoint)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let calibration: CopyCalibration
        do {
            calibration = try JSONDecoder().decode(
                CopyCalibration.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw CurationError.input(
                "\(path) is not a copy calibration written by `dinov2-fsdp calibrate-copies`; rerun it or "
                    + "remove the file"
            )
        }
        guard absolutePath(calibration.checkpoint) == absolutePath(resolvedFolder) else {
            throw CurationError.input(
                "\(path) was measured on \(calibration.checkpoint), but \(checkpoint) now means \(resolvedFolder): "
                    + "rerun `dinov2-fsdp calibrate-copies` or pass --copy-threshold")
        }
        return calibration
    }

    /// `path` from the root (a relative path is taken from the working directory), without `.` or `..`: the
    /// calibration names its checkpoint so that curate run from any folder recognises it.
    public static func absolutePath(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }

    /// The best threshold over `pairs` (similarity, whether the pair is a planted copy), and recall and
    /// precision there. Pairs above the threshold count as found. Nil without copy pairs.
    public static func bestThreshold(
        _ pairs: [(similarity: Double, isCopy: Bool)]
    ) -> (
        threshold: Double, recall: Double, precision: Double
    )? {
        let copies = pairs.count { $0.isCopy }
        guard copies > 0 else { return nil }
        let ranked = pairs.sorted { $0.similarity > $1.similarity }
        var best: (score: Double, gap: Double, threshold: Double, recall: Double, precision: Double)?
        var found = 0
        for k in ranked.indices {
            if ranked[k].isCopy { found += 1 }
            // Cut after k: the first k + 1 pairs are above the threshold; only where the next one is lower.
            let next = k + 1 < ranked.count ? ranked[k + 1].similarity : -1
            guard next < ranked[k].similarity else { continue }
            let recall = Double(found) / Double(copies), precision = Double(found) / Double(k + 1)
            let score = min(recall, precision), gap = ranked[k].similarity - next
            if best.map({ score > $0.score || (score == $0.score && gap > $0.gap) }) ?? true {
                best = (score, gap, (ranked[k].similarity + next) / 2, recall, precision)
            }
        }
        return best.map { ($0.threshold, $0.recall, $0.precision) }
    }

    /// Recall and precision of `pairs` above `threshold`.
    public static func rates(
        _ pairs: [(similarity: Double, isCopy: Bool)], above threshold: Double
    ) -> (
        recall: Double, precision: Double
    ) {
        let copies = pairs.count { $0.isCopy }
        let found = pairs.filter { $0.similarity > threshold }
        let hits = found.count { $0.isCopy }
        return (Double(hits) / Double(max(1, copies)), Double(hits) / Double(max(1, found.count)))
    }

    /// Every pair (i < j) of the rows of `features` ([n, d], L2-normalised), as cosine similarities in
    /// float64, with whether it is one of `copies`.
    public static func pairs(
        features: [Float], dimension d: Int, copies: [(source: Int, copy: Int)]
    ) -> [(
        similarity: Double, isCopy: Bool
    )] {
        let n = features.count / d
        let planted = Set(copies.map { Swift.min($0.source, $0.copy) * n + Swift.max($0.source, $0.copy) })
        var result: [(similarity: Double, isCopy: Bool)] = []
        result.reserveCapacity(n * (n - 1) / 2)
        for i in 0..<n {
            for j in (i + 1)..<n {
                result.append((similarity(features, dimension: d, i, j), planted.contains(i * n + j)))
            }
        }
        return result
    }

    /// The cosine similarity of rows `i` and `j` of `features` ([n, d], L2-normalised), in float64.
    public static func similarity(_ features: [Float], dimension d: Int, _ i: Int, _ j: Int) -> Double {
        var dot = 0.0
        for c in 0..<d { dot += Double(features[i * d + c]) * Double(features[j * d + c]) }
        return dot
    }
}
