// The embedded dataset: a labelled ImageFolder of procedurally drawn images, written as real PNG
// (or JPEG) files, so that self-supervised features have something to learn and k-NN accuracy on
// `val` measures it. Each image: a two-colour gradient background with noise and small distractor
// rectangles, and one foreground object of its class (circle, square, triangle, cross, ring, star,
// striped square, checkered square) in a random colour, position, scale and rotation.
// Every pixel is a function of (seed, split, class, image index): the dataset is the same on every
// machine and every run.

import DinoCore
import Foundation

/// Writes the embedded dataset.
public enum SyntheticImages {
    public static let classNames = ["circle", "square", "triangle", "cross", "ring", "star", "stripes", "checker"]

    /// Draws image `index` of `label` for `split` (0 train, 1 val) at `size` x `size` pixels.
    public static func draw(label: Int, index: Int, split: Int, size: Int, seed: UInt64) -> RGBImage {
        let stream = RandomStream(seed: seed, purpose: .synthesis, UInt64(split), UInt64(label), UInt64(index))
        var draw: UInt64 = 0
        func uniform() -> Double {
            defer { draw += 1 }
            return stream.uniform(draw)
        }
        func colour() -> (Double, Double, Double) { (uniform() * 255, uniform() * 255, uniform() * 255) }
        let top = colour(), bottom = colour(), ink = colour(), second = colour()
        let s = Double(size)
        let centerX = s * (0.3 + 0.4 * uniform()), centerY = s * (0.3 + 0.4 * uniform())
        let radius = s * (0.14 + 0.16 * uniform())
        let angle = 2 * Double.pi * uniform()
        let (cosA, sinA) = (cos(angle), sin(angle))
        var distractors: [(x0: Double, y0: Double, x1: Double, y1: Double, c: (Double, Double, Double))] = []
        for _ in 0..<4 {
            let x = uniform() * s, y = uniform() * s, w = s * (0.03 + 0.07 * uniform()), h = s * (0.03 + 0.07 * uniform())
            distractors.append((x, y, x + w, y + h, colour()))
        }
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        let noise = RandomStream(seed: seed, purpose: .synthesis, UInt64(split), UInt64(label), UInt64(index), 1)
        for y in 0..<size {
            for x in 0..<size {
                let t = Double(y) / max(1, s - 1)
                var c = (top.0 * (1 - t) + bottom.0 * t, top.1 * (1 - t) + bottom.1 * t, top.2 * (1 - t) + bottom.2 * t)
                for d in distractors where Double(x) >= d.x0 && Double(x) < d.x1 && Double(y) >= d.y0 && Double(y) < d.y1 {
                    c = d.c
                }
                // Object coordinates: rotate back and scale to the unit square.
                let dx = (Double(x) + 0.5 - centerX) / radius, dy = (Double(y) + 0.5 - centerY) / radius
                let u = cosA * dx + sinA * dy, v = -sinA * dx + cosA * dy
                switch inside(label: label, u: u, v: v) {
                case 1: c = ink
                case 2: c = second
                default: break
                }
                let n = (noise.uniform(UInt64(y * size + x)) - 0.5) * 24
                let o = (y * size + x) * 3
                pixels[o] = UInt8(clamping: Int((c.0 + n).rounded()))
                pixels[o + 1] = UInt8(clamping: Int((c.1 + n).rounded()))
                pixels[o + 2] = UInt8(clamping: Int((c.2 + n).rounded()))
            }
        }
        return RGBImage(width: size, height: size, pixels: pixels)
    }

    /// 0 outside the object, 1 in its main colour, 2 in its second colour (textures).
    static func inside(label: Int, u: Double, v: Double) -> Int {
        let r = (u * u + v * v).squareRoot()
        switch label % classNames.count {
        case 0: return r <= 1 ? 1 : 0
        case 1: return abs(u) <= 0.8 && abs(v) <= 0.8 ? 1 : 0
        case 2: return v >= -0.8 && v <= 0.8 && abs(u) <= 0.5 * (v + 0.8) ? 1 : 0
        case 3: return (abs(u) <= 0.25 && abs(v) <= 0.9) || (abs(v) <= 0.25 && abs(u) <= 0.9) ? 1 : 0
        case 4: return r >= 0.55 && r <= 1 ? 1 : 0
        case 5: return r <= 0.45 + 0.45 * abs(cos(2.5 * atan2(v, u))) ? 1 : 0
        case 6: return abs(u) <= 0.9 && abs(v) <= 0.9 ? (sin(6 * u) > 0 ? 1 : 2) : 0
        default:
            guard abs(u) <= 0.9 && abs(v) <= 0.9 else { return 0 }
            return (Int(floor(3 * u)) + Int(floor(3 * v))) & 1 == 0 ? 1 : 2
        }
    }

    /// Writes `root/train/<class>/` and `root/val/<class>/` of PNG (or JPEG) files; returns the file count.
    @discardableResult
    public static func write(root: String, classes: Int, trainPerClass: Int, valPerClass: Int, size: Int, seed: UInt64,
                             jpeg: Bool = false) throws -> Int {
        precondition((1...classNames.count).contains(classes), "1 to \(classNames.count) classes")
        var written = 0
        for (split, (name, count)) in [("train", trainPerClass), ("val", valPerClass)].enumerated() {
            for label in 0..<classes {
                let folder = "\(root)/\(name)/\(classNames[label])"
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                for index in 0..<count {
                    let image = draw(label: label, index: index, split: split, size: size, seed: seed)
                    let data = jpeg ? try ImageCodec.encodeJPEG(image, quality: 92) : try ImageCodec.encodePNG(image)
                    let path = String(format: "%@/%05d.%@", folder, index, jpeg ? "jpg" : "png")
                    try data.write(to: URL(fileURLWithPath: path + ".tmp"))
                    guard rename(path + ".tmp", path) == 0 else { throw ImageError.encode("cannot write \(path)") }
                    written += 1
                }
            }
        }
        return written
    }
}
