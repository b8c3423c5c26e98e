// The embedded dataset (version 4): a labelled ImageFolder of procedurally drawn images, written as
// real PNG (or JPEG) files, so that self-supervised features have something to learn and k-NN
// accuracy on `val` measures it. A class is a texture that covers the whole image: stripes, checker,
// dots, grid, zigzag, rings, blobs, bricks. Each image draws its texture at a random orientation,
// scale (0.8-1.25) and phase; every element of the texture (a stripe, a square, a dot's cell, a
// ring, a brick, a 32-px cell of blobs) takes its own random ink and paper colours, plus pixel noise.
// Why (measured while planning the learning recipe): when colours belong to the image -- version 3's
// four background corner colours, or a first version 4 with 2-4 colour regions -- the colours are
// what a local and a global crop of one image share most, self-distillation learns them, and k-NN
// over classes stalls near 20 % (8 classes). With colours per element, every image's colours are a
// fresh sample of one spread; what crops of one image share is the pattern (its kind, orientation
// and scale), which is what the objective then has to learn and what k-NN over classes rewards.
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
        let texture = Texture(
            label: label % classNames.count, scale: unit * (0.8 + 0.45 * uniform()),
            angle: 2 * Double.pi * uniform(), phase: (uniform(), uniform()),
            centre: (s * uniform(), s * uniform()),
            waves: (0..<6).map { _ in
                (0.04 + 0.04 * uniform(), 2 * Double.pi * uniform(), 2 * Double.pi * uniform())
            })
        // Colours: every texture element (a stripe, a square, a dot and its cell, a ring, a brick, a
        // blob) and the paper around it draw their own colour from the element's key, so an image's
        // colours are a fresh sample of the same spread everywhere: what crops of one image share is
        // the pattern, not a palette.
        let colours = RandomStream(seed: seed, purpose: .synthesis, UInt64(split), UInt64(label), UInt64(index), 2)
        func colour(_ element: Int64, _ ink: Bool) -> (Double, Double, Double) {
            let key = UInt64(bitPattern: element) &* 4 &+ (ink ? 1 : 0)
            return (
                colours.uniform(3 &* key) * 255, colours.uniform(3 &* key &+ 1) * 255,
                colours.uniform(3 &* key &+ 2) * 255
            )
        }
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        let noise = RandomStream(seed: seed, purpose: .synthesis, UInt64(split), UInt64(label), UInt64(index), 1)
        for y in 0..<size {
            for x in 0..<size {
                let (inked, element) = texture.element(x: Double(x) + 0.5, y: Double(y) + 0.5)
                let c = colour(element, inked)
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

        /// Whether pixel (x, y) takes an ink colour, and which texture element (cell) it belongs to.
        func element(x: Double, y: Double) -> (inked: Bool, element: Int64) {
            let cosA = cos(angle), sinA = sin(angle)
            // Texture coordinates: rotated, in units of `scale` pixels, shifted by the phase.
            let u = (cosA * x + sinA * y) / scale + phase.0 * 40, v = (-sinA * x + cosA * y) / scale + phase.1 * 40
            func fraction(_ t: Double) -> Double { t - floor(t) }
            func cell(_ a: Double, _ b: Double) -> Int64 { Int64(floor(a)) &* 1_000_003 &+ Int64(floor(b)) }
            switch label {
            case 0:  // stripes, period 10
                return (fraction(u / 10) < 0.5, Int64(floor(u / 10)))
            case 1:  // checker, squares of 8
                return ((Int(floor(u / 8)) + Int(floor(v / 8))) & 1 == 0, cell(u / 8, v / 8))
            case 2:  // dots of radius 3.6 on a 12 grid
                let du = fraction(u / 12) - 0.5, dv = fraction(v / 12) - 0.5
                return (du * du + dv * dv < 0.09, cell(u / 12, v / 12))
            case 3:  // grid lines every 12, 1.4 wide each side
                let line = abs(fraction(u / 12) - 0.5) > 0.38 || abs(fraction(v / 12) - 0.5) > 0.38
                return (line, cell(u / 12, v / 12))
            case 4:  // zigzag stripes: period 10 across, teeth of 14 along
                let t = (v + 2 * abs(fraction(u / 14) - 0.5) * 8) / 10
                return (fraction(t) < 0.5, Int64(floor(t)))
            case 5:  // concentric rings of period 10 around a point of the image
                let r = ((x - centre.0) * (x - centre.0) + (y - centre.1) * (y - centre.1)).squareRoot() / scale
                return (fraction(r / 10 + phase.0) < 0.5, Int64(floor(r / 10 + phase.0)))
            case 6:  // blobs: the sign of a sum of six slow plane waves; elements are 32-px cells
                var sum = 0.0
                for (frequency, direction, offset) in waves {
                    sum += sin(frequency / scale * (cos(direction) * x + sin(direction) * y) + offset)
                }
                return (sum > 0, cell(u / 32, v / 32))
            default:  // bricks of 20 x 10 with mortar, rows offset by half a brick
                let row = floor(v / 10)
                let shifted = u + (Int(row) & 1 == 0 ? 0 : 10)
                let brick = abs(fraction(shifted / 20) - 0.5) < 0.42 && abs(fraction(v / 10) - 0.5) < 0.38
                return (brick, cell(shifted / 20, row))
            }
        }
    }

    /// Writes `root/train/<class>/` and `root/val/<class>/` of PNG (or JPEG) files; returns the file count.
    /// With `part` (index, count), writes only every count-th file from the index-th (one rank's share);
    /// with `keepExisting`, files already there are kept (they hold the same pixels: drawing is deterministic).
    @discardableResult
    public static func write(
        root: String, classes: Int, trainPerClass: Int, valPerClass: Int, size: Int, seed: UInt64,
        jpeg: Bool = false, part: (index: Int, count: Int) = (0, 1), keepExisting: Bool = false
    )
        throws -> Int
    {
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
