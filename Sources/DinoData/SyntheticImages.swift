// The embedded dataset: a labelled ImageFolder of procedurally drawn images, written as real PNG
// (or JPEG) files, so that self-supervised features have something to learn and k-NN accuracy on
// `val` measures it. Each image: a background blended from four random corner colours, with noise
// and thin random line segments as clutter, and two to four instances of its class, each in its own
// two random colours, position, scale and rotation. A class is a shape filled with a texture:
// circle (solid), square (diagonal stripes), triangle (fine checker), cross (solid), ring (spokes),
// star (dots), "stripes" square (stripes), "checker" square (checker). Colours are per object, so
// what two crops of one image share is mostly shape and texture: what self-supervised features have
// to pick up for k-NN to work.
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
        typealias Colour = (Double, Double, Double)
        func colour() -> Colour { (uniform() * 255, uniform() * 255, uniform() * 255) }
        let s = Double(size)
        // Background: four random corner colours blended bilinearly, so that two crops of one image
        // see different colours and the class shape is what they share.
        let corners = [colour(), colour(), colour(), colour()]
        // Clutter: thin line segments (no class is a line) in random colours.
        var lines: [(x0: Double, y0: Double, dx: Double, dy: Double, length: Double, width: Double, c: Colour)] = []
        for _ in 0..<5 {
            let angle = Double.pi * uniform(), length = s * (0.1 + 0.2 * uniform())
            lines.append((uniform() * s, uniform() * s, cos(angle), sin(angle), length, 0.6 + 0.8 * uniform(), colour()))
        }
        // Objects: several instances of the class, each in its own colours, scale, rotation and place.
        let count = 2 + Int(uniform() * 3)
        var objects: [(x: Double, y: Double, radius: Double, cosA: Double, sinA: Double, ink: Colour, second: Colour)] = []
        for _ in 0..<count {
            let radius = s * (0.13 + 0.11 * uniform())
            let x = radius + (s - 2 * radius) * uniform(), y = radius + (s - 2 * radius) * uniform()
            let angle = 2 * Double.pi * uniform()
            objects.append((x, y, radius, cos(angle), sin(angle), colour(), colour()))
        }
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        let noise = RandomStream(seed: seed, purpose: .synthesis, UInt64(split), UInt64(label), UInt64(index), 1)
        for y in 0..<size {
            for x in 0..<size {
                let ty = Double(y) / max(1, s - 1), tx = Double(x) / max(1, s - 1)
                func blend(_ i: KeyPath<Colour, Double>) -> Double {
                    (corners[0][keyPath: i] * (1 - tx) + corners[1][keyPath: i] * tx) * (1 - ty)
                        + (corners[2][keyPath: i] * (1 - tx) + corners[3][keyPath: i] * tx) * ty
                }
                var c: Colour = (blend(\.0), blend(\.1), blend(\.2))
                let px = Double(x) + 0.5, py = Double(y) + 0.5
                for line in lines {
                    let along = (px - line.x0) * line.dx + (py - line.y0) * line.dy
                    let across = -(px - line.x0) * line.dy + (py - line.y0) * line.dx
                    if along >= 0 && along <= line.length && abs(across) <= line.width { c = line.c }
                }
                for object in objects {
                    // Object coordinates: rotate back and scale to the unit square.
                    let dx = (px - object.x) / object.radius, dy = (py - object.y) / object.radius
                    let u = object.cosA * dx + object.sinA * dy, v = -object.sinA * dx + object.cosA * dy
                    switch inside(label: label, u: u, v: v) {
                    case 1: c = object.ink
                    case 2: c = object.second
                    default: break
                    }
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

    /// 0 outside the object, 1 in its main colour, 2 in its second colour: the class's shape filled
    /// with the class's texture, in object coordinates (the unit square, rotated with the object).
    static func inside(label: Int, u: Double, v: Double) -> Int {
        let r = (u * u + v * v).squareRoot()
        let shape: Bool
        switch label % classNames.count {
        case 0: shape = r <= 1
        case 1: shape = abs(u) <= 0.8 && abs(v) <= 0.8
        case 2: shape = v >= -0.8 && v <= 0.8 && abs(u) <= 0.5 * (v + 0.8)
        case 3: shape = (abs(u) <= 0.3 && abs(v) <= 0.95) || (abs(v) <= 0.3 && abs(u) <= 0.95)
        case 4: shape = r >= 0.5 && r <= 1
        case 5: shape = r <= 0.45 + 0.5 * abs(cos(2.5 * atan2(v, u)))
        default: shape = abs(u) <= 0.9 && abs(v) <= 0.9
        }
        guard shape else { return 0 }
        let second: Bool
        switch label % classNames.count {
        case 0: second = false  // solid
        case 1: second = sin(9 * (u + v)) > 0  // diagonal stripes
        case 2: second = (Int(floor(5 * u + 10)) + Int(floor(5 * v + 10))) & 1 == 0  // fine checker
        case 3: second = false  // solid
        case 4: second = sin(40 * atan2(v, u)) > 0  // spokes around the ring
        case 5: second = (u * 4 - (u * 4).rounded()).magnitude < 0.2 && (v * 4 - (v * 4).rounded()).magnitude < 0.2  // dots
        case 6: second = sin(6 * u) > 0  // stripes
        default: second = (Int(floor(3 * u + 10)) + Int(floor(3 * v + 10))) & 1 == 0  // checker
        }
        return second ? 2 : 1
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
