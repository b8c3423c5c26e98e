// Image decoding (JPEG baseline / progressive / CMYK refused, PNG RGB / gray / palette / 16-bit /
// alpha), bad files, ImageFolder and list-file listing, the distributed sampler's partition and
// resumption, and the embedded dataset's determinism.

import DinoCore
import DinoData
import DinoTestSupport
import Foundation
import Testing

@Suite("data")
struct DataTests {
    /// A smooth test image: gradients and a square, so JPEG errors stay small.
    func sample(width: Int = 40, height: Int = 24) -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let o = (y * width + x) * 3
                let inSquare = (10..<20).contains(x) && (6..<14).contains(y)
                pixels[o] = UInt8(x * 255 / (width - 1))
                pixels[o + 1] = UInt8(y * 255 / (height - 1))
                pixels[o + 2] = inSquare ? 200 : 60
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    func meanAbsoluteError(_ a: RGBImage, _ b: RGBImage) -> Double {
        zip(a.pixels, b.pixels).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(a.pixels.count)
    }

    @Test("PNG RGB round-trips exactly; JPEG baseline and progressive decode close to the original")
    func roundTrips() throws {
        let image = sample()
        #expect(try ImageCodec.decode(ImageCodec.encodePNG(image)) == image)
        for progressive in [false, true] {
            let decoded = try ImageCodec.decode(ImageCodec.encodeJPEG(image, quality: 95, progressive: progressive))
            #expect(decoded.width == 40 && decoded.height == 24)
            // Quality 95 with 4:2:0 chroma on a smooth image: a few grey levels on average.
            #expect(meanAbsoluteError(decoded, image) < 6, "progressive \(progressive)")
        }
    }

    @Test("PNG gray, 16-bit gray, palette and alpha all become 8-bit RGB")
    func pngVariants() throws {
        let w = 4, h = 2
        // 8-bit gray: every channel equals the gray value.
        let gray: [UInt8] = [0, 50, 100, 150, 200, 250, 30, 70]
        let grayImage = try ImageCodec.decode(ImageCodecTesting.png(gray, width: w, height: h, layout: .gray))
        #expect(grayImage.pixels == gray.flatMap { [$0, $0, $0] })
        // 16-bit linear gray: stored as 16-bit, decoded to sRGB 8-bit; 0 and full scale are exact.
        let wide: [UInt16] = [0, 65535, 0, 65535, 65535, 0, 65535, 0]
        let wideBytes = wide.withUnsafeBytes { Array($0) }
        let wideImage = try ImageCodec.decode(ImageCodecTesting.png(wideBytes, width: w, height: h, layout: .gray16))
        #expect(wideImage.pixels == wide.flatMap { $0 == 0 ? [UInt8](repeating: 0, count: 3) : [255, 255, 255] })
        // Palette: two colours.
        let map: [UInt8] = [255, 0, 0, 0, 0, 255]
        let indices: [UInt8] = [0, 1, 1, 0, 1, 1, 0, 0]
        let paletteImage = try ImageCodec.decode(
            ImageCodecTesting.png(
                indices, width: w, height: h,
                layout: .palette, colormap: map, entries: 2))
        #expect(paletteImage.pixels == indices.flatMap { $0 == 0 ? [255, 0, 0] : [0, 0, 255] })
        // RGBA: opaque pixels keep their colour, transparent ones composite onto black.
        let rgba: [UInt8] = [
            10, 20, 30, 255, 40, 50, 60, 0, 70, 80, 90, 255, 1, 2, 3, 0,
            10, 20, 30, 255, 40, 50, 60, 0, 70, 80, 90, 255, 1, 2, 3, 0,
        ]
        let rgbaImage = try ImageCodec.decode(ImageCodecTesting.png(rgba, width: w, height: h, layout: .rgba))
        #expect(Array(rgbaImage.pixels[0..<3]) == [10, 20, 30] && Array(rgbaImage.pixels[3..<6]) == [0, 0, 0])
    }

    @Test("CMYK JPEGs, truncated files and non-images are refused with a reason")
    func badInput() throws {
        let cmyk = try ImageCodecTesting.cmykJPEG(width: 16, height: 8)
        #expect(throws: ImageError.self) { try ImageCodec.decode(cmyk) }
        do { _ = try ImageCodec.decode(cmyk) } catch { #expect("\(error)".contains("CMYK")) }
        let jpeg = try ImageCodec.encodeJPEG(sample(), quality: 90)
        #expect(throws: ImageError.self) { try ImageCodec.decode(jpeg.prefix(jpeg.count / 2)) }
        let png = try ImageCodec.encodePNG(sample())
        #expect(throws: ImageError.self) { try ImageCodec.decode(png.prefix(png.count / 2)) }
        #expect(throws: ImageError.notAnImage) { try ImageCodec.decode(Data("hello, not an image".utf8)) }
    }

    @Test("ImageFolder: sorted classes and files, labels, list files, clear errors")
    func folders() throws {
        let root = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        try SyntheticImages.write(root: root.path, classes: 3, trainPerClass: 2, valPerClass: 1, size: 32, seed: 1)
        let train = try ImageDataset(path: root.path + "/train")
        #expect(train.classes == ["checker", "dots", "stripes"])
        #expect(train.samples.map(\.label) == [0, 0, 1, 1, 2, 2])
        #expect(train.samples[2].path.hasSuffix("train/dots/00000.png"))
        let list = root.appendingPathComponent("list.txt").path
        try "train/checker/00000.png 4\n# comment\n\ntrain/ring.png\n".write(
            toFile: list, atomically: true, encoding: .utf8)
        let listed = try ImageDataset(path: list)
        #expect(
            listed.samples.map(\.label) == [4, -1] && listed.samples[0].path == root.path + "/train/checker/00000.png")
        #expect(throws: DatasetError.missing(root.path + "/nope")) { try ImageDataset(path: root.path + "/nope") }
        try FileManager.default.createDirectory(atPath: root.path + "/empty/a", withIntermediateDirectories: true)
        #expect(throws: DatasetError.empty(root.path + "/empty")) { try ImageDataset(path: root.path + "/empty") }
        try "a.png x\n".write(toFile: list, atomically: true, encoding: .utf8)
        #expect(throws: DatasetError.self) { try ImageDataset(path: list) }
    }

    @Test(
        "sampler: each epoch a permutation, the same global batch for any rank count, exact resumption",
        arguments: [1, 2, 3, 4])
    func sampler(ranks: Int) {
        let size = 60, global = 12
        let sampler = DistributedSampler(datasetSize: size, globalBatch: global, seed: 9)
        let reference = DistributedSampler(datasetSize: size, globalBatch: global, seed: 9)
        var epoch0: [Int] = []
        for step in 0..<(size / global) {
            let perRank = (0..<ranks).map { sampler.batch(step: step, rank: $0, worldSize: ranks).map(\.index) }
            let union = perRank.flatMap { $0 }
            #expect(union == reference.batch(step: step, rank: 0, worldSize: 1).map(\.index))
            epoch0 += union
        }
        #expect(epoch0.sorted() == Array(0..<size))  // every image once, no duplicates
        let epoch1 = (5..<10).flatMap { sampler.batch(step: $0, rank: 0, worldSize: 1).map(\.index) }
        #expect(epoch1.sorted() == Array(0..<size) && epoch1 != epoch0)  // reshuffled
        // A fresh sampler (a resumed run) continues with exactly the same batch.
        let resumed = DistributedSampler(datasetSize: size, globalBatch: global, seed: 9)
        #expect(
            resumed.batch(step: 7, rank: ranks - 1, worldSize: ranks).map(\.index)
                == sampler.batch(step: 7, rank: ranks - 1, worldSize: ranks).map(\.index))
    }

    @Test("the embedded dataset is deterministic, decodable and labelled")
    func embedded() throws {
        let a = try TestPaths.temporaryDirectory(), b = try TestPaths.temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(at: a)
            try? FileManager.default.removeItem(at: b)
        }
        #expect(
            try SyntheticImages.write(root: a.path, classes: 8, trainPerClass: 2, valPerClass: 1, size: 48, seed: 3)
                == 24)
        // b is written in three parts (as three ranks share the work), the last over files already there.
        let parts = try (0..<3).map { i in
            try SyntheticImages.write(
                root: b.path, classes: 8, trainPerClass: 2, valPerClass: 1, size: 48, seed: 3,
                part: (i, 3))
        }
        #expect(parts == [8, 8, 8])
        #expect(
            try SyntheticImages.write(
                root: b.path, classes: 8, trainPerClass: 2, valPerClass: 1, size: 48, seed: 3,
                keepExisting: true) == 0)
        let train = try ImageDataset(path: a.path + "/train")
        #expect(train.count == 16 && train.classes.count == 8)
        for sample in train.samples {
            let mine = try Data(contentsOf: URL(fileURLWithPath: sample.path))
            let theirs = try Data(
                contentsOf: URL(fileURLWithPath: sample.path.replacingOccurrences(of: a.path, with: b.path)))
            #expect(mine == theirs)
            let image = try ImageCodec.decode(mine)
            #expect(image.width == 48 && image.height == 48)
        }
        let other = SyntheticImages.draw(label: 0, index: 0, split: 0, size: 48, seed: 4)
        #expect(other != SyntheticImages.draw(label: 0, index: 0, split: 0, size: 48, seed: 3))
    }
}
