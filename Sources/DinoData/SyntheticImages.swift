// The embedded dataset (version 4): a labelled ImageFolder of procedurally drawn images, written as
// real PNG (or JPEG) files, so that self-supervised features have something to learn and k-NN
// accuracy on `val` measures it. A class is a texture that covers the whole image: stripes, checker,
// dots, grid, zigzag, rings, blobs, bricks. Each image draws its texture at a random orientation,
// scale (0.8-1.25) and phase, and splits the canvas into 2-4 regions (Voronoi cells of random
// points), each in its own two random colours, plus pixel noise.
// Why this design (measured while planning the learning recipe): in version 3 (shapes over a
// background of four random corner colours) the background colours were what two crops of one
// image shared most, so self-distillation learned those and k-NN stayed near chance. Here every
// crop, global or local, carries the class's texture, and colour changes from region to region, so
// what crops of one image share is the texture: what the objective has to learn, and what k-NN
// over classes rewards. Random ViT features (colour, mostly) sit near chance on it.
// Every pixel is a function of (seed, split, class, image index): the dataset is the same on every
// machine and every run.

import DinoCore
import Foundation

/// Writes the embedded dataset.
public enum SyntheticImages {
    public static let classNames = ["stripes", "checker", "dots", "grid", "zigzag", "rings", "blobs", "bricks"]
    /// Part of the cache folder's name: a new version is generated next to the old.
    public static let version = 4

    /// Draws image `index` of `label` for `split` (0 train, 1 val) at `size` x `size` pixels.
    public static func draw(label: Int, index: Int, split: Int, size: Int, seed: UInt64) -> RGBImage {
        let stream = RandomStream(seed: seed, purpose: .synthesis, UInt64(split), UInt64(label), UInt64(index))
        var draw: UInt64 = 0
        func uniform() -> Double {
            defer { draw += 1 }
            return stream.uniform(draw)
        }
        // Lengths are in pixels of a 128-px image, so that the texture looks the same at any size.
        let s = Double(size), unit = s / 128
        let texture = Texture(label: label % classNames.count, scale: unit * (0.8 + 0.45 * uniform()),
                              angle: 2 * Double.pi * uniform(), phase: (uniform(), uniform()),
                              centre: (s * uniform(), s * uniform()),
                              waves: (0..<6).map { _ in (0.04 + 0.04 * uniform(), 2 * Double.pi * uniform(), 2 * Double.pi * uniform()) })
        let regions = 2 + Int(uniform() * 3)
        let seeds = (0..<regions).map { _ in (x: s * uniform(), y: s * uniform()) }
        let colours = (0..<regions).map { _ in
            (ink: (uniform() * 255, uniform() * 255, uniform() * 255), paper: (uniform() * 255, uniform() * 255, uniform() * 255))
        }
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        let noise = RandomStream(seed: seed, purpose: .synthesis, UInt64(split), UInt64(label), UInt64(index), 1)
        for y in 0..<size {
            for x in 0..<size {
                let px = Double(x) + 0.5, py = Double(y) + 0.5
                var region = 0, nearest = Double.infinity
                for (r, point) in seeds.enumerated() {
                    let d = (px - point.x) * (px - point.x) + (py - point.y) * (py - point.y)
                    if d < nearest { nearest = d; region = r }
                }
                let c = texture.inked(x: px, y: py) ? colours[region].ink : colours[region].paper
                let n = (noise.uniform(UInt64(y * size + x)) - 0.5) * 32
                let o = (y * size + x) * 3
                pixels[o] = UInt8(clamping: Int((c.0 + n).rounded()))
                pixels[o + 1] = UInt8(clamping: Int((c.1 + n).rounded()))
                pixels[o + 2] = UInt8(clamping: Int((c.2 + n).rounded()))
            }
        }
        return RGBImage(width: size, height: size, pixels: pixels)
    }

    /// One image's texture: the class's pattern at a scale (pixels per 128-px unit), orientation and phase.
    struct Texture {
        let label: Int
        let scale: Double
        let angle: Double
        let phase: (Double, Double)
        let centre: (Double, Double)
        /// Plane waves (frequency per 128-px unit, direction, phase) whose sum's sign draws the blobs.
        let waves: [(Double, Double, Double)]

        /// Whether pixel (x, y) takes the ink colour.
        func inked(x: Double, y: Double) -> Bool {
            let cosA = cos(angle), sinA = sin(angle)
            // Texture coordinates: rotated, in units of `scale` pixels, shifted by the phase.
            let u = (cosA * x + sinA * y) / scale + phase.0 * 40, v = (-sinA * x + cosA * y) / scale + phase.1 * 40
            func fraction(_ t: Double) -> Double { t - floor(t) }
            switch label {
            case 0:  // stripes, period 10
                return fraction(u / 10) < 0.5
            case 1:  // checker, squares of 8
                return (Int(floor(u / 8)) + Int(floor(v / 8))) & 1 == 0
            case 2:  // dots of radius 3.6 on a 12 grid
                let du = fraction(u / 12) - 0.5, dv = fraction(v / 12) - 0.5
                return du * du + dv * dv < 0.09
            case 3:  // grid lines every 12, 1.4 wide each side
                return abs(fraction(u / 12) - 0.5) > 0.38 || abs(fraction(v / 12) - 0.5) > 0.38
            case 4:  // zigzag stripes: period 10 across, teeth of 14 along
                let tooth = 2 * abs(fraction(u / 14) - 0.5) * 8
                return fraction((v + tooth) / 10) < 0.5
            case 5:  // concentric rings of period 10 around a point of the image
                let r = ((x - centre.0) * (x - centre.0) + (y - centre.1) * (y - centre.1)).squareRoot() / scale
                return fraction(r / 10 + phase.0) < 0.5
            case 6:  // blobs: the sign of a sum of six slow plane waves
                var sum = 0.0
                for (frequency, direction, offset) in waves {
                    sum += sin(frequency / scale * (cos(direction) * x + sin(direction) * y) + offset)
                }
                return sum > 0
            default:  // bricks of 20 x 10 with mortar, rows offset by half a brick
                let row = floor(v / 10)
                let shifted = u + (Int(row) & 1 == 0 ? 0 : 10)
                return abs(fraction(shifted / 20) - 0.5) < 0.42 && abs(fraction(v / 10) - 0.5) < 0.38
            }
        }
    }

    /// Writes `root/train/<class>/` and `root/val/<class>/` of PNG (or JPEG) files; returns the file count.
    /// With `part` (index, count), writes only every count-th file from the index-th (one rank's share);
    /// with `keepExisting`, files already there are kept (they hold the same pixels: drawing is deterministic).
    @discardableResult
    public static func write(root: String, classes: Int, trainPerClass: Int, valPerClass: Int, size: Int, seed: UInt64,
                             jpeg: Bool = false, part: (index: Int, count: Int) = (0, 1), keepExisting: Bool = false)
        throws -> Int {
        precondition((1...classNames.count).contains(classes), "1 to \(classNames.count) classes")
        var written = 0, position = 0
        for (split, (name, count)) in [("train", trainPerClass), ("val", valPerClass)].enumerated() {
            for label in 0..<classes {
                let folder = "\(root)/\(name)/\(classNames[label])"
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                for index in 0..<count {
                    defer { position += 1 }
                    guard position % part.count == part.index else { continue }
                    let path = String(format: "%@/%05d.%@", folder, index, jpeg ? "jpg" : "png")
                    if keepExisting && FileManager.default.fileExists(atPath: path) { continue }
                    let image = draw(label: label, index: index, split: split, size: size, seed: seed)
                    let data = jpeg ? try ImageCodec.encodeJPEG(image, quality: 92) : try ImageCodec.encodePNG(image)
                    try data.write(to: URL(fileURLWithPath: path + ".tmp"))
                    guard rename(path + ".tmp", path) == 0 else { throw ImageError.encode("cannot write \(path)") }
                    written += 1
                }
            }
        }
        return written
    }
}
