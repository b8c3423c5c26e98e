// Patch-feature PCA: components recovered from data with known principal axes, their order, sign
// convention and orthonormality, and the RGB scaling of the pictures.

import DinoCore
import DinoEval
import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("patch PCA")
struct PatchPCATests {
    @Test("recovers planted axes of variance 25, 9, 4 over noise 0.01 (|cos| > 0.999), ordered, orthonormal")
    func plantedAxes() {
        let d = 12, rows = 4000
        var random = TestRandom(seed: 5)
        // An orthonormal basis from Gram-Schmidt of random vectors; the first three carry the variance.
        var axes: [[Double]] = []
        while axes.count < 3 {
            var v = random.normals(d)
            for a in axes {
                let dot = zip(v, a).reduce(0) { $0 + $1.0 * $1.1 }
                v = zip(v, a).map { $0 - dot * $1 }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            axes.append(v.map { $0 / norm })
        }
        let scales = [5.0, 3.0, 2.0]
        var tokens: [Float] = []
        for _ in 0..<rows {
            let z = random.normals(3), noise = random.normals(d, scale: 0.1)
            tokens += (0..<d).map { c in
                Float(1.5 + noise[c] + (0..<3).reduce(0.0) { $0 + scales[$1] * z[$1] * axes[$1][c] })
            }
        }
        let pca = PatchPCA(tokens: tokens, rows: rows, dimension: d, count: 3)
        for k in 0..<3 {
            let cosine = zip(pca.components[k], axes[k]).reduce(0) { $0 + $1.0 * $1.1 }
            #expect(abs(cosine) > 0.999, "component \(k): cos \(cosine)")
            // Sample variance of 4000 draws: within 10 % of the planted one (+ the noise's 0.01).
            #expect(abs(pca.variances[k] - scales[k] * scales[k]) < 0.1 * scales[k] * scales[k])
            for j in 0..<3 {
                let dot = zip(pca.components[k], pca.components[j]).reduce(0) { $0 + $1.0 * $1.1 }
                #expect(abs(dot - (j == k ? 1 : 0)) < 1e-9)
            }
            let largest = pca.components[k].max { abs($0) < abs($1) } ?? 0
            #expect(largest > 0)
        }
        #expect(pca.mean.allSatisfy { abs($0 - 1.5) < 0.5 })
    }

    @Test("pictures scale each component to 0...255 over all images and paint patches as blocks")
    func pictures() {
        // 2 images of a 2x2 grid; component values chosen so the extremes are known.
        let projections: [Double] = [
            0, 10, -1, 1, 20, -1, 2, 30, -1, 3, 40, -1,
            4, 50, -1, 5, 60, -1, 6, 70, -1, 8, 80, -1,
        ]
        let images = PatchPCA.pictures(projections: projections, images: 2, grid: 2, scale: 3)
        #expect(images.count == 2 && images[0].width == 6 && images[0].height == 6)
        #expect(Array(images[0].pixels[0..<3]) == [0, 0, 128])  // min of components 1, 2; constant 3rd -> mid
        let last = images[1].pixels.count - 3
        #expect(Array(images[1].pixels[last...]) == [255, 255, 128])  // bottom-right patch holds the maxima
        #expect(images[0].pixels[(2 * 6 + 2) * 3] == images[0].pixels[0])  // (2, 2) lies in patch (0, 0)
    }

    @Test("the thresholded first component finds the planted foreground (the minority side); background is black")
    func foreground() {
        // 2 images of a 4x4 grid, D = 6: foreground patches are offset by +4 along axis 0, the rest
        // vary with std 0.3 in every channel; 5 of 16 patches per image are foreground.
        let grid = 4, d = 6, images = 2, rows = images * grid * grid
        var random = TestRandom(seed: 9)
        let planted = (0..<rows).map { ($0 % 16) % 3 == 0 && ($0 % 16) < 15 }
        var tokens: [Float] = []
        for r in 0..<rows {
            var v = random.normals(d, scale: 0.3)
            if planted[r] {
                v[0] += 4
                v[1] += random.normal() * 2
            }
            tokens += v.map(Float.init)
        }
        let (pictures, mask) = PatchPCA.foregroundPictures(
            tokens: tokens, images: images, grid: grid, dimension: d, scale: 2)
        #expect(mask == planted)
        #expect(pictures.count == 2 && pictures[0].width == 8)
        // Patch (0, 1) of image 0 is background: black; patch (0, 0) is foreground: coloured.
        #expect(Array(pictures[0].pixels[(0 * 8 + 2) * 3..<(0 * 8 + 2) * 3 + 3]) == [0, 0, 0])
        #expect(pictures[0].pixels[0..<3].contains { $0 != 0 })
    }
}
