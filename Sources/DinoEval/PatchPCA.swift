// Principal components of patch features, for the pictures of the DINOv2 paper (fig. 1): tokens
// [rows, D] of many images are centred, their covariance [D, D] is accumulated in float64, and the
// leading components come from orthogonal (subspace) iteration, deterministic from a fixed start.
// Projections onto 3 components, min-max scaled per component over all images, become RGB.

import DinoCore
import DinoData
import Foundation

/// PCA of token features and their rendering as RGB pictures.
public struct PatchPCA: Sendable {
    /// Mean token [D].
    public let mean: [Double]
    /// Unit, mutually orthogonal components [count][D], by decreasing variance.
    public let components: [[Double]]
    /// Variance along each component.
    public let variances: [Double]

    /// Fits `count` components to `tokens` [rows, dimension] with `iterations` of subspace iteration.
    public init(tokens: [Float], rows: Int, dimension d: Int, count: Int = 3, iterations: Int = 200) {
        precondition(rows > 0 && tokens.count == rows * d && count <= d)
        var mean = [Double](repeating: 0, count: d)
        for r in 0..<rows { for c in 0..<d { mean[c] += Double(tokens[r * d + c]) } }
        for c in 0..<d { mean[c] /= Double(rows) }
        var covariance = [Double](repeating: 0, count: d * d)
        var centred = [Double](repeating: 0, count: d)
        for r in 0..<rows {
            for c in 0..<d { centred[c] = Double(tokens[r * d + c]) - mean[c] }
            for i in 0..<d where centred[i] != 0 {
                let x = centred[i]
                for j in i..<d { covariance[i * d + j] += x * centred[j] }
            }
        }
        for i in 0..<d {
            for j in i..<d {
                covariance[i * d + j] /= Double(rows)
                covariance[j * d + i] = covariance[i * d + j]
            }
        }
        // Subspace iteration: V <- orthonormalise(C V); converges to the leading eigenvectors.
        let start = RandomStream(seed: 0, purpose: .analysis, UInt64(d))
        var basis = (0..<count).map { k in (0..<d).map { start.normal(UInt64(k * d + $0)) } }
        Self.orthonormalise(&basis)
        for _ in 0..<iterations {
            basis = basis.map { v in (0..<d).map { i in (0..<d).reduce(0.0) { $0 + covariance[i * d + $1] * v[$1] } } }
            Self.orthonormalise(&basis)
        }
        var variances = basis.map { v in
            (0..<d).reduce(0.0) { sum, i in sum + v[i] * (0..<d).reduce(0.0) { $0 + covariance[i * d + $1] * v[$1] } }
        }
        // Order by variance and fix each sign (largest entry positive) so pictures are reproducible.
        let order = variances.indices.sorted { variances[$0] > variances[$1] }
        basis = order.map { k in
            let v = basis[k]
            let largest = v.indices.max { abs(v[$0]) < abs(v[$1]) } ?? 0
            return v[largest] < 0 ? v.map { -$0 } : v
        }
        variances = order.map { variances[$0] }
        self.mean = mean
        self.components = basis
        self.variances = variances
    }

    /// Gram-Schmidt, twice for stability; a vector that vanishes is replaced by a unit axis.
    private static func orthonormalise(_ vectors: inout [[Double]]) {
        for k in vectors.indices {
            for _ in 0..<2 {
                for j in 0..<k {
                    let dot = zip(vectors[k], vectors[j]).reduce(0) { $0 + $1.0 * $1.1 }
                    for i in vectors[k].indices { vectors[k][i] -= dot * vectors[j][i] }
                }
            }
            let norm = vectors[k].reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm > 1e-300 {
                vectors[k] = vectors[k].map { $0 / norm }
            } else {
                vectors[k] = vectors[k].indices.map { $0 == k ? 1 : 0 }
            }
        }
    }

    /// Projections [rows, components] of `tokens` [rows, D].
    public func project(_ tokens: [Float], rows: Int) -> [Double] {
        let d = mean.count
        var out = [Double](repeating: 0, count: rows * components.count)
        for r in 0..<rows {
            for (k, v) in components.enumerated() {
                var sum = 0.0
                for c in 0..<d { sum += (Double(tokens[r * d + c]) - mean[c]) * v[c] }
                out[r * components.count + k] = sum
            }
        }
        return out
    }

    /// RGB pictures of 3-component projections [images * grid * grid, 3]: each component min-max
    /// scaled to 0...255 over the patches of `foreground` (all when nil), other patches black, each
    /// patch an `scale` x `scale` block.
    public static func pictures(
        projections: [Double], images: Int, grid: Int, scale: Int,
        foreground: [Bool]? = nil
    ) -> [RGBImage] {
        var low = [Double](repeating: .infinity, count: 3), high = [Double](repeating: -.infinity, count: 3)
        for (i, value) in projections.enumerated() where foreground?[i / 3] ?? true {
            low[i % 3] = min(low[i % 3], value)
            high[i % 3] = max(high[i % 3], value)
        }
        let side = grid * scale
        return (0..<images).map { image in
            var pixels = [UInt8](repeating: 0, count: side * side * 3)
            for y in 0..<side {
                for x in 0..<side {
                    let token = image * grid * grid + (y / scale) * grid + x / scale
                    guard foreground?[token] ?? true else { continue }
                    for k in 0..<3 {
                        let span = high[k] - low[k]
                        let unit = span > 0 ? (projections[token * 3 + k] - low[k]) / span : 0.5
                        pixels[(y * side + x) * 3 + k] = UInt8((unit * 255).rounded())
                    }
                }
            }
            return RGBImage(width: side, height: side, pixels: pixels)
        }
    }

    /// The picture of the DINOv2 paper: the first component, thresholded at the mean, splits the
    /// patches of `tokens` [images * grid * grid, D]; the smaller side is the foreground (objects
    /// cover less of an image than background does); three components fitted on the foreground alone
    /// colour it, the background is black. Returns the pictures and the foreground mask.
    public static func foregroundPictures(
        tokens: [Float], images: Int, grid: Int, dimension d: Int, scale: Int
    )
        -> (pictures: [RGBImage], foreground: [Bool])
    {
        let rows = images * grid * grid
        let first = PatchPCA(tokens: tokens, rows: rows, dimension: d, count: 1).project(tokens, rows: rows)
        let positive = first.filter { $0 > 0 }.count
        var foreground = first.map { positive <= rows - positive ? $0 > 0 : $0 <= 0 }
        if foreground.filter({ $0 }).count < 3 { foreground = [Bool](repeating: true, count: rows) }
        var selected: [Float] = []
        selected.reserveCapacity(foreground.filter { $0 }.count * d)
        for r in 0..<rows where foreground[r] { selected += tokens[(r * d)..<((r + 1) * d)] }
        let pca = PatchPCA(tokens: selected, rows: selected.count / d, dimension: d, count: Swift.min(3, d))
        var projections = pca.project(tokens, rows: rows)
        if pca.components.count < 3 {  // fewer than 3 feature channels: pad with zeros
            projections = (0..<rows).flatMap { r in
                (0..<3).map { k in k < pca.components.count ? projections[r * pca.components.count + k] : 0 }
            }
        }
        return (
            pictures(projections: projections, images: images, grid: grid, scale: scale, foreground: foreground),
            foreground
        )
    }
}

extension RGBImage {
    /// `left` and `right` next to each other on black, top-aligned.
    public static func sideBySide(_ left: RGBImage, _ right: RGBImage) -> RGBImage {
        let width = left.width + right.width, height = Swift.max(left.height, right.height)
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for (image, x0) in [(left, 0), (right, left.width)] {
            for y in 0..<image.height {
                for x in 0..<image.width {
                    for c in 0..<3 {
                        pixels[(y * width + x0 + x) * 3 + c] = image.pixels[(y * image.width + x) * 3 + c]
                    }
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// `images` one below the other on black, left-aligned.
    public static func stacked(_ images: [RGBImage]) -> RGBImage {
        let width = images.map(\.width).max() ?? 1, height = Swift.max(1, images.reduce(0) { $0 + $1.height })
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        var top = 0
        for image in images {
            for y in 0..<image.height {
                let source = y * image.width * 3, target = (top + y) * width * 3
                for i in 0..<(image.width * 3) { pixels[target + i] = image.pixels[source + i] }
            }
            top += image.height
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}
