// The DINOv2 multi-crop augmentations (dinov2/data/augmentations.py) on 8-bit RGB images, with the
// semantics of torchvision's PIL path, every random draw from a counter-based stream:
//   RandomResizedCrop(scale range, ratio 3/4..4/3, bicubic) -> horizontal flip (p 0.5)
//   -> ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8, the four adjustments in random order
//   -> RandomGrayscale(p 0.2) -> Gaussian blur (kernel 9, sigma U(0.1, 2)) with the official
//   effective probabilities (global 1: 0, global 2: 0.9, local: 0.5) -> solarize (>= 128, global 2,
//   p 0.2) -> ToTensor + Normalize(ImageNet mean / std) into float32 CHW.
// Resampling is PIL's antialiased bicubic (a = -0.5, support widened by the scale when shrinking),
// separable, rounding to 8 bits after each pass as PIL does for 8-bit images.

import DinoCore
import Foundation

/// Parameters of one RandomResizedCrop draw: the source rectangle.
public struct CropBox: Sendable, Equatable {
    public var top: Int, left: Int, height: Int, width: Int

    public init(top: Int, left: Int, height: Int, width: Int) {
        self.top = top
        self.left = left
        self.height = height
        self.width = width
    }
}

/// The augmentation operations, each a pure function of its inputs.
public enum Augment {
    /// torchvision RandomResizedCrop.get_params: up to 10 draws of an area fraction in `scale` and
    /// a log-uniform aspect ratio in [3/4, 4/3]; otherwise the whole image clamped to the ratio range.
    public static func cropBox(width: Int, height: Int, scale: ClosedRange<Double>, uniform: () -> Double) -> CropBox {
        let area = Double(width * height)
        let logRatio = log(3.0 / 4.0)...log(4.0 / 3.0)
        for _ in 0..<10 {
            let target = area * (scale.lowerBound + (scale.upperBound - scale.lowerBound) * uniform())
            let ratio = exp(logRatio.lowerBound + (logRatio.upperBound - logRatio.lowerBound) * uniform())
            let w = Int((target * ratio).squareRoot().rounded(.toNearestOrEven))
            let h = Int((target / ratio).squareRoot().rounded(.toNearestOrEven))
            if w > 0 && h > 0 && w <= width && h <= height {
                let top = Swift.min(Int(uniform() * Double(height - h + 1)), height - h)
                let left = Swift.min(Int(uniform() * Double(width - w + 1)), width - w)
                return CropBox(top: top, left: left, height: h, width: w)
            }
        }
        let inRatio = Double(width) / Double(height)
        var w = width, h = height
        if inRatio < 3.0 / 4.0 {
            h = Int((Double(w) / (3.0 / 4.0)).rounded(.toNearestOrEven))
        } else if inRatio > 4.0 / 3.0 {
            w = Int((Double(h) * (4.0 / 3.0)).rounded(.toNearestOrEven))
        }
        return CropBox(top: (height - h) / 2, left: (width - w) / 2, height: h, width: w)
    }

    /// PIL's antialiased bicubic weights for resampling `source` samples to `target`: [target][taps] with the first
    /// tap index.
    static func resampleWeights(source: Int, target: Int) -> [(first: Int, weights: [Double])] {
        let scale = Double(source) / Double(target)
        let filterScale = Swift.max(scale, 1)
        let support = 2 * filterScale
        func cubic(_ value: Double) -> Double {
            let a = -0.5, x = abs(value)
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        }
        return (0..<target).map { d in
            let center = (Double(d) + 0.5) * scale
            let first = Swift.max(0, Int(center - support + 0.5))
            let last = Swift.min(source, Int(center + support + 0.5))
            var weights = (first..<last).map { cubic((Double($0) - center + 0.5) / filterScale) }
            let total = weights.reduce(0, +)
            if total != 0 { weights = weights.map { $0 / total } }
            return (first, weights)
        }
    }

    /// Resizes the `box` of `image` to `size` x `size` (crop, then antialiased bicubic).
    public static func resizedCrop(_ image: RGBImage, box: CropBox, size: Int) -> RGBImage {
        let horizontal = resampleWeights(source: box.width, target: size)
        let vertical = resampleWeights(source: box.height, target: size)
        // Pass 1: rows of the box to width `size`, rounded to 8 bits.
        var middle = [UInt8](repeating: 0, count: box.height * size * 3)
        for y in 0..<box.height {
            let row = (box.top + y) * image.width
            for x in 0..<size {
                let (first, weights) = horizontal[x]
                var sum = (0.0, 0.0, 0.0)
                for (k, w) in weights.enumerated() {
                    let o = (row + box.left + first + k) * 3
                    sum.0 += w * Double(image.pixels[o])
                    sum.1 += w * Double(image.pixels[o + 1])
                    sum.2 += w * Double(image.pixels[o + 2])
                }
                let o = (y * size + x) * 3
                middle[o] = clamp8(sum.0)
                middle[o + 1] = clamp8(sum.1)
                middle[o + 2] = clamp8(sum.2)
            }
        }
        // Pass 2: columns to height `size`.
        var out = [UInt8](repeating: 0, count: size * size * 3)
        for y in 0..<size {
            let (first, weights) = vertical[y]
            for x in 0..<size {
                var sum = (0.0, 0.0, 0.0)
                for (k, w) in weights.enumerated() {
                    let o = ((first + k) * size + x) * 3
                    sum.0 += w * Double(middle[o])
                    sum.1 += w * Double(middle[o + 1])
                    sum.2 += w * Double(middle[o + 2])
                }
                let o = (y * size + x) * 3
                out[o] = clamp8(sum.0)
                out[o + 1] = clamp8(sum.1)
                out[o + 2] = clamp8(sum.2)
            }
        }
        return RGBImage(width: size, height: size, pixels: out)
    }

    @inline(__always)
    static func clamp8(_ value: Double) -> UInt8 {
        UInt8(Swift.max(0, Swift.min(255, value.rounded(.toNearestOrAwayFromZero))))
    }

    /// Mirrors left and right.
    public static func flip(_ image: RGBImage) -> RGBImage {
        var out = image.pixels
        for y in 0..<image.height {
            for x in 0..<image.width {
                let from = (y * image.width + image.width - 1 - x) * 3, to = (y * image.width + x) * 3
                out[to] = image.pixels[from]
                out[to + 1] = image.pixels[from + 1]
                out[to + 2] = image.pixels[from + 2]
            }
        }
        return RGBImage(width: image.width, height: image.height, pixels: out)
    }

    /// PIL's L conversion: (R 19595 + G 38470 + B 7471 + 32768) >> 16.
    @inline(__always)
    static func luma(_ r: UInt8, _ g: UInt8, _ b: UInt8) -> UInt8 {
        let red: Int = Int(r) * 19595, green: Int = Int(g) * 38470, blue: Int = Int(b) * 7471
        return UInt8((red + green + blue + 0x8000) >> 16)
    }

    /// Three-channel grayscale.
    public static func grayscale(_ image: RGBImage) -> RGBImage {
        var out = image.pixels
        for i in stride(from: 0, to: out.count, by: 3) {
            let l = luma(out[i], out[i + 1], out[i + 2])
            out[i] = l
            out[i + 1] = l
            out[i + 2] = l
        }
        return RGBImage(width: image.width, height: image.height, pixels: out)
    }

    /// PIL ImageEnhance blend: out = degenerate + factor (image - degenerate), rounded and clamped.
    static func blend(_ image: RGBImage, factor: Double, degenerate: (Int) -> Double) -> RGBImage {
        var out = image.pixels
        for i in 0..<out.count {
            let d = degenerate(i)
            out[i] = clamp8(d + factor * (Double(out[i]) - d))
        }
        return RGBImage(width: image.width, height: image.height, pixels: out)
    }

    public static func brightness(_ image: RGBImage, factor: Double) -> RGBImage {
        blend(image, factor: factor) { _ in 0 }
    }

    public static func contrast(_ image: RGBImage, factor: Double) -> RGBImage {
        var sum = 0
        for i in stride(from: 0, to: image.pixels.count, by: 3) {
            sum += Int(luma(image.pixels[i], image.pixels[i + 1], image.pixels[i + 2]))
        }
        let mean = (Double(sum) / Double(image.width * image.height) + 0.5).rounded(.down)
        return blend(image, factor: factor) { _ in mean }
    }

    public static func saturation(_ image: RGBImage, factor: Double) -> RGBImage {
        let gray = grayscale(image)
        return blend(image, factor: factor) { Double(gray.pixels[$0]) }
    }

    /// torchvision adjust_hue on PIL: to HSV (8-bit), H += trunc(factor 255) modulo 256 (numpy's
    /// uint8 cast truncates toward zero), back to RGB.
    public static func hue(_ image: RGBImage, factor: Double) -> RGBImage {
        let shift = Int(factor * 255)
        var out = image.pixels
        for i in stride(from: 0, to: out.count, by: 3) {
            var (h, s, v) = rgbToHSV(out[i], out[i + 1], out[i + 2])
            h = UInt8(truncatingIfNeeded: Int(h) + shift)
            let (r, g, b) = hsvToRGB(h, s, v)
            out[i] = r
            out[i + 1] = g
            out[i + 2] = b
        }
        return RGBImage(width: image.width, height: image.height, pixels: out)
    }

    /// PIL's RGB to HSV for 8-bit pixels (libImaging/Convert.c rgb2hsv_row), with its mix of
    /// float and double arithmetic so that the 8-bit results agree.
    static func rgbToHSV(_ r8: UInt8, _ g8: UInt8, _ b8: UInt8) -> (UInt8, UInt8, UInt8) {
        let maxc = Swift.max(r8, g8, b8), minc = Swift.min(r8, g8, b8)
        if minc == maxc { return (0, 0, maxc) }
        let cr = Float(maxc - minc)
        let s: Float = cr / Float(maxc)
        let rc: Float = Float(maxc - r8) / cr, gc: Float = Float(maxc - g8) / cr, bc: Float = Float(maxc - b8) / cr
        var h: Float
        if r8 == maxc { h = bc - gc } else if g8 == maxc { h = 2 + rc - bc } else { h = 4 + gc - rc }
        h = Float(fmod(Double(h) / 6.0 + 1.0, 1.0))
        return (UInt8(clamping: Int(Double(h) * 255.0)), UInt8(clamping: Int(Double(s) * 255.0)), maxc)
    }

    /// PIL's HSV to RGB for 8-bit pixels (libImaging/Convert.c hsv2rgb).
    static func hsvToRGB(_ h8: UInt8, _ s8: UInt8, _ v8: UInt8) -> (UInt8, UInt8, UInt8) {
        if s8 == 0 { return (v8, v8, v8) }
        let i = Int((Double(Float(h8)) * 6.0 / 255.0).rounded(.down))
        let f = Float(Double(Float(h8)) * 6.0 / 255.0 - Double(i))
        let fs = Float(Double(Float(s8)) / 255.0)
        let v = Double(Float(v8))
        let p = UInt8(clamping: Int((v * (1.0 - Double(fs))).rounded()))
        let q = UInt8(clamping: Int((v * (1.0 - Double(fs) * Double(f))).rounded()))
        let t = UInt8(clamping: Int((v * (1.0 - Double(fs) * (1.0 - Double(f)))).rounded()))
        switch i % 6 {
        case 0: return (v8, t, p)
        case 1: return (q, v8, p)
        case 2: return (p, v8, t)
        case 3: return (p, q, v8)
        case 4: return (t, p, v8)
        default: return (v8, p, q)
        }
    }

    /// torchvision GaussianBlur(kernel 9, sigma) on a PIL image: separable, reflect padding,
    /// float arithmetic, rounded back to 8 bits.
    public static func gaussianBlur(_ image: RGBImage, sigma: Double, kernel: Int = 9) -> RGBImage {
        let half = kernel / 2
        var weights = (0..<kernel).map { exp(-pow(Double($0 - half) / sigma, 2) / 2) }
        let total = weights.reduce(0, +)
        weights = weights.map { $0 / total }
        func reflect(_ i: Int, _ n: Int) -> Int {
            var i = i
            while i < 0 || i >= n { i = i < 0 ? -i : 2 * (n - 1) - i }
            return i
        }
        let w = image.width, h = image.height
        var middle = [Double](repeating: 0, count: image.pixels.count)
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 {
                    var sum = 0.0
                    for k in 0..<kernel {
                        sum += weights[k] * Double(image.pixels[(y * w + reflect(x + k - half, w)) * 3 + c])
                    }
                    middle[(y * w + x) * 3 + c] = sum
                }
            }
        }
        var out = image.pixels
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 {
                    var sum = 0.0
                    for k in 0..<kernel { sum += weights[k] * middle[(reflect(y + k - half, h) * w + x) * 3 + c] }
                    out[(y * w + x) * 3 + c] = clamp8(sum)
                }
            }
        }
        return RGBImage(width: w, height: h, pixels: out)
    }

    /// Inverts every value >= threshold.
    public static func solarize(_ image: RGBImage, threshold: UInt8 = 128) -> RGBImage {
        RGBImage(width: image.width, height: image.height, pixels: image.pixels.map { $0 >= threshold ? 255 - $0 : $0 })
    }

    public static let mean: [Float] = [0.485, 0.456, 0.406]
    public static let std: [Float] = [0.229, 0.224, 0.225]

    /// ToTensor + Normalize into `out` [3, H, W].
    public static func normalize(_ image: RGBImage, into out: UnsafeMutablePointer<Float>) {
        let plane = image.width * image.height
        for i in 0..<plane {
            for c in 0..<3 { out[c * plane + i] = (Float(image.pixels[i * 3 + c]) / 255 - mean[c]) / std[c] }
        }
    }
}

/// The official multi-crop pipeline of one image.
public struct MultiCrop: Sendable {
    public var globalSize: Int, localSize: Int, localCrops: Int
    public var globalScale: ClosedRange<Double>, localScale: ClosedRange<Double>
    /// The colour jitter's ranges (torchvision ColorJitter's arguments; the official 0.4, 0.4, 0.2, 0.1).
    /// The draws stay the same whatever they are, so crops and flips do not change with them.
    public var brightness = 0.4, contrast = 0.4, saturation = 0.2, hue = 0.1
    public var grayscaleProbability = 0.2
    /// Of the second global crop (the official pipeline solarizes no other).
    public var solarizeProbability = 0.2

    public init(
        globalSize: Int, localSize: Int, localCrops: Int, globalScale: ClosedRange<Double>,
        localScale: ClosedRange<Double>
    ) {
        self.globalSize = globalSize
        self.localSize = localSize
        self.localCrops = localCrops
        self.globalScale = globalScale
        self.localScale = localScale
    }

    /// Every crop of `image` (0, 1 global, then the local ones), each drawn from the stream keyed
    /// (seed, epoch, dataset index, crop) -- so an image's crops never depend on rank or thread --
    /// and normalised into `target(crop)` ([3, S, S] float32, S the crop's size).
    public func normalizedCrops(
        of image: RGBImage, seed: UInt64, epoch: UInt64, index: Int,
        into target: (Int) -> UnsafeMutablePointer<Float>
    ) {
        for crop in 0..<(2 + localCrops) {
            let stream = RandomStream(seed: seed, purpose: .augmentation, epoch, UInt64(index), UInt64(crop))
            Augment.normalize(self.crop(image, crop: crop, stream: stream), into: target(crop))
        }
    }

    /// Crop `crop` (0, 1: global; 2...: local) of `image`, drawn from `stream` (keyed by seed, epoch,
    /// global image index and crop), as 8-bit RGB.
    public func crop(_ image: RGBImage, crop: Int, stream: RandomStream) -> RGBImage {
        var draw: UInt64 = 0
        func uniform() -> Double {
            defer { draw += 1 }
            return stream.uniform(draw)
        }
        let global = crop < 2
        let box = Augment.cropBox(
            width: image.width, height: image.height, scale: global ? globalScale : localScale,
            uniform: uniform)
        var out = Augment.resizedCrop(image, box: box, size: global ? globalSize : localSize)
        if uniform() < 0.5 { out = Augment.flip(out) }
        if uniform() < 0.8 {
            // The four factors are drawn first, then applied in a random order (torchvision ColorJitter:
            // factors in [1 - x, 1 + x], hue in [-x, x]; with the official x these are its bounds bit for bit).
            let b = (1 - brightness) + 2 * brightness * uniform(), c = (1 - contrast) + 2 * contrast * uniform()
            let s = (1 - saturation) + 2 * saturation * uniform(), h = -hue + 2 * hue * uniform()
            let order = (0..<4).sorted { stream.child(1).bits(UInt64($0)) < stream.child(1).bits(UInt64($1)) }
            for op in order {
                switch op {
                case 0: if brightness > 0 { out = Augment.brightness(out, factor: b) }
                case 1: if contrast > 0 { out = Augment.contrast(out, factor: c) }
                case 2: if saturation > 0 { out = Augment.saturation(out, factor: s) }
                default: if hue > 0 { out = Augment.hue(out, factor: h) }
                }
            }
        }
        if uniform() < grayscaleProbability { out = Augment.grayscale(out) }
        let blurProbability = crop == 0 ? 0.0 : (crop == 1 ? 0.9 : 0.5)  // the official effective values
        let blurDraw = uniform(), sigma = 0.1 + 1.9 * uniform()
        if blurDraw < blurProbability { out = Augment.gaussianBlur(out, sigma: sigma) }
        if crop == 1 && uniform() < solarizeProbability { out = Augment.solarize(out) }
        return out
    }
}
