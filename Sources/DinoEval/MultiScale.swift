// The multi-scale descriptor of an image: its CLS token at several input sizes (the evaluation view
// resized to scale x the model's input size), each L2-normalised, summed, and the sum L2-normalised;
// rows [N, D]. Why: a copy-detection model trained on 112-px crops tells crop copies of fine textures
// from other images far better when it also sees them enlarged (Benchmarks/RESULTS.md, "Multi-scale
// copy features"): at 1x the cells of a fine texture fall a few to a patch, at 1.5x and 2x fewer, and
// the sum keeps what agrees across scales. Image retrieval sums scales the same way (DINO's
// multi-scale retrieval features).

import Foundation

/// The scales of multi-scale features (the sums themselves: UnitRows, in TeacherEmbedding.rounds).
public enum MultiScale {
    /// The copy rule's scales: 1, 1.5 and 2 times the model's input size.
    public static let copyScales: [Double] = [1, 1.5, 2]

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
