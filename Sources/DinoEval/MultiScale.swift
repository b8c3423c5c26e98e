// The multi-scale descriptor of an image: its CLS token at several input sizes (the evaluation view
// resized to scale x the model's input size), each L2-normalised, summed, and the sum L2-normalised;
// rows [N, D]. Why: a copy-detection model trained on 112-px crops tells crop copies of fine textures
// from other images far better when it also sees them enlarged (Benchmarks/RESULTS.md, "Multi-scale
// copy features"): at 1x the cells of a fine texture fall a few to a patch, at 1.5x and 2x fewer, and
// the sum keeps what agrees across scales. Image retrieval sums scales the same way (DINO's
// multi-scale retrieval features).

import Foundation

/// Sums of L2-normalised feature rows.
public enum MultiScale {
    /// The copy rule's scales: 1, 1.5 and 2 times the model's input size.
    public static let copyScales: [Double] = [1, 1.5, 2]

    /// `sum` (empty: zeros) plus every row of `rows` ([N, channels]) divided by its L2 norm (a zero row
    /// adds nothing).
    public static func accumulate(_ rows: [Float], into sum: [Float], channels: Int) -> [Float] {
        var result = sum.isEmpty ? [Float](repeating: 0, count: rows.count) : sum
        precondition(result.count == rows.count && rows.count % channels == 0)
        for start in stride(from: 0, to: rows.count, by: channels) {
            var squares: Float = 0
            for c in start..<(start + channels) { squares += rows[c] * rows[c] }
            guard squares > 0 else { continue }
            let scale = 1 / squares.squareRoot()
            for c in start..<(start + channels) { result[c] += rows[c] * scale }
        }
        return result
    }

    /// Divides every row of `rows` ([N, channels]) by its L2 norm (zero rows stay zero).
    public static func normalizeRows(_ rows: inout [Float], channels: Int) {
        rows = accumulate(rows, into: [], channels: channels)
    }

    /// Scales as the command line gives them ("1,1.5,2"): positive numbers, each at most once; nil when not.
    public static func parse(_ text: String) -> [Double]? {
        let values = text.split(separator: ",", omittingEmptySubsequences: false).map {
            Double($0.trimmingCharacters(in: .whitespaces))
        }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 && ($0 ?? 0).isFinite }) else { return nil }
        let scales = values.compactMap { $0 }
        return Set(scales).count == scales.count ? scales : nil
    }

    /// "1,1.5,2": how a scale list is written (in files' attributes and messages).
    public static func describe(_ scales: [Double]) -> String {
        scales.map { $0 == $0.rounded() ? String(Int($0)) : String($0) }.joined(separator: ",")
    }
}
