// L2 normalisation of float32 feature rows [N, D], the one loop behind every cosine similarity: the
// evaluations' features, curation's feature files and the multi-scale descriptor's sums.

/// Rows [N, D] of feature vectors scaled to unit length.
public enum UnitRows {
    /// Scales every row of `values` [*, d] to unit length (rows of zeros stay zero).
    public static func normalize(_ values: inout [Float], dimension d: Int) {
        for row in 0..<(values.count / max(1, d)) {
            let scale = inverseNorm(values, row: row, dimension: d)
            for c in (row * d)..<((row + 1) * d) { values[c] *= scale }
        }
    }

    /// Adds every row of `rows` [N, d] divided by its length to the same row of `sum` [N, d] (a zero row adds
    /// nothing).
    public static func accumulate(_ rows: [Float], into sum: inout [Float], dimension d: Int) {
        precondition(sum.count == rows.count && rows.count % max(1, d) == 0)
        for row in 0..<(rows.count / max(1, d)) {
            let scale = inverseNorm(rows, row: row, dimension: d)
            for c in (row * d)..<((row + 1) * d) { sum[c] += rows[c] * scale }
        }
    }

    /// 1 / |row| (0 for a zero row).
    private static func inverseNorm(_ values: [Float], row: Int, dimension d: Int) -> Float {
        var squares: Float = 0
        for c in (row * d)..<((row + 1) * d) { squares += values[c] * values[c] }
        return squares > 0 ? 1 / squares.squareRoot() : 0
    }
}
