// Each augmentation against PIL / numpy outputs (Fixtures/generate_augment_reference.py), crop
// geometry statistics, and the determinism of the multi-crop pipeline.

import DinoCheckpoint
import DinoCore
import DinoData
import DinoTestSupport
import Foundation
import Testing

@Suite("augmentations")
struct AugmentationTests {
    static let fixture = TestPaths.packageRoot.appendingPathComponent(
        "Tests/DinoDataTests/Fixtures/augment_reference.h5"
    ).path

    func image(_ name: String, width: Int, height: Int) throws -> RGBImage {
        let values = try HDF5File.open(Self.fixture).readDoubles(name)
        return RGBImage(width: width, height: height, pixels: values.map { UInt8($0) })
    }

    /// Largest absolute difference of two images in gray levels.
    func worst(_ a: RGBImage, _ b: RGBImage) -> Int {
        zip(a.pixels, b.pixels).reduce(0) { max($0, abs(Int($1.0) - Int($1.1))) }
    }

    @Test("every operation matches PIL / numpy (exact, or within one gray level where rounding order differs)")
    func againstPIL() throws {
        let input = try image("input", width: 20, height: 14)
        let box = CropBox(top: 2, left: 3, height: 10, width: 15)
        // PIL resamples in fixed point (22 fractional bits); we use doubles: at most 1 level apart.
        #expect(
            worst(Augment.resizedCrop(input, box: box, size: 11), try image("resized_crop", width: 11, height: 11)) <= 1
        )
        #expect(worst(Augment.brightness(input, factor: 1.3), try image("brightness", width: 20, height: 14)) <= 1)
        #expect(worst(Augment.contrast(input, factor: 0.7), try image("contrast", width: 20, height: 14)) <= 1)
        #expect(worst(Augment.saturation(input, factor: 1.2), try image("saturation", width: 20, height: 14)) <= 1)
        #expect(worst(Augment.hue(input, factor: 0.07), try image("hue_plus", width: 20, height: 14)) <= 1)
        #expect(worst(Augment.hue(input, factor: -0.05), try image("hue_minus", width: 20, height: 14)) <= 1)
        #expect(Augment.grayscale(input) == (try image("grayscale", width: 20, height: 14)))
        #expect(Augment.solarize(input) == (try image("solarize", width: 20, height: 14)))
        #expect(worst(Augment.gaussianBlur(input, sigma: 1.3), try image("blur", width: 20, height: 14)) <= 1)
        let flipped = Augment.flip(input)
        #expect(Augment.flip(flipped) == input && Array(flipped.pixels[0..<3]) == Array(input.pixels[57..<60]))
    }

    @Test("RandomResizedCrop boxes: inside the image, area fraction and aspect ratio in range")
    func cropGeometry() {
        let stream = RandomStream(seed: 1, purpose: .test)
        var fractions: [Double] = []
        for i in 0..<2000 {
            var draw: UInt64 = 0
            let box = Augment.cropBox(width: 500, height: 375, scale: 0.32...1.0) {
                defer { draw += 1 }
                return stream.child(UInt64(i)).uniform(draw)
            }
            #expect(box.top >= 0 && box.left >= 0 && box.top + box.height <= 375 && box.left + box.width <= 500)
            let fraction = Double(box.width * box.height) / (500 * 375)
            let ratio = Double(box.width) / Double(box.height)
            #expect(fraction >= 0.3 && fraction <= 1.01 && ratio >= 0.74 && ratio <= 1.35, "\(box)")
            fractions.append(fraction)
        }
        // Area fractions are uniform over [0.32, 1] before the fit test: the mean sits near 0.66.
        let mean = fractions.reduce(0, +) / Double(fractions.count)
        #expect(mean > 0.55 && mean < 0.72, "mean area fraction \(mean)")
    }

    @Test("multi-crop: same key, same crops bitwise; sizes as configured; different crops differ")
    func multiCrop() {
        let source = SyntheticImages.draw(label: 3, index: 0, split: 0, size: 96, seed: 2)
        let pipeline = MultiCrop(
            globalSize: 56, localSize: 28, localCrops: 4, globalScale: 0.32...1.0, localScale: 0.05...0.32)
        for crop in 0..<6 {
            let key = RandomStream(seed: 7, purpose: .augmentation, 0, 123, UInt64(crop))
            let a = pipeline.crop(source, crop: crop, stream: key), b = pipeline.crop(source, crop: crop, stream: key)
            #expect(a == b)
            #expect(a.width == (crop < 2 ? 56 : 28) && a.height == a.width)
        }
        let first = pipeline.crop(source, crop: 0, stream: RandomStream(seed: 7, purpose: .augmentation, 0, 123, 0))
        let other = pipeline.crop(source, crop: 0, stream: RandomStream(seed: 7, purpose: .augmentation, 0, 124, 0))
        #expect(first != other)
        var tensor = [Float](repeating: 0, count: 3 * 56 * 56)
        tensor.withUnsafeMutableBufferPointer { Augment.normalize(first, into: $0.baseAddress!) }
        let red = (Float(first.pixels[0]) / 255 - 0.485) / 0.229
        #expect(tensor[0] == red)
    }

    @Test("colour off (augmentation.*: no jitter, grayscale or solarize): crops keep their pixels' colours")
    func colourOff() {
        let source = SyntheticImages.draw(label: 5, index: 1, split: 0, size: 96, seed: 3)
        let official = MultiCrop(
            globalSize: 56, localSize: 28, localCrops: 2, globalScale: 0.32...1.0, localScale: 0.05...0.32)
        var plain = official
        (plain.brightness, plain.contrast, plain.saturation, plain.hue) = (0, 0, 0, 0)
        (plain.grayscaleProbability, plain.solarizeProbability) = (0, 0)
        var changed = 0
        for image in 0..<20 {
            // Crop 0 is never blurred: without colour it is the resized crop, flipped or not, of the same draws.
            let key = RandomStream(seed: 9, purpose: .augmentation, 0, UInt64(image), 0)
            var draw: UInt64 = 0
            func uniform() -> Double {
                defer { draw += 1 }
                return key.uniform(draw)
            }
            let box = Augment.cropBox(width: 96, height: 96, scale: 0.32...1.0, uniform: uniform)
            var expected = Augment.resizedCrop(source, box: box, size: 56)
            if uniform() < 0.5 { expected = Augment.flip(expected) }
            #expect(plain.crop(source, crop: 0, stream: key) == expected)
            if official.crop(source, crop: 0, stream: key) != expected { changed += 1 }
        }
        // The official pipeline jitters 80 % of the crops (and grays 20 %): most of the 20 differ.
        #expect(changed >= 10, "\(changed) of 20 official crops changed colour")
    }
}
