// A pool of images with planted copies, to measure a copy rule on pixels rather than on features: the
// source images (the central square of each), then one copy of every `every`-th of them, the kinds in
// turn: an exact copy, a JPEG re-encoding (quality 70), a crop of 85 % of the area at a random place
// resized back, a colour shift (brightness x1.2, saturation x0.7). The images are PNG files in
// `directory`, listed (sources in order, copies after) in a list file `train --data`, `embed` and
// `curate` read. `write(to:perClass:)` plants them among validation images of the embedded dataset
// (images a model trained on its training split has not seen); `calibrate-copies` among a user's
// images. Every pixel is a function of the sources and the seed: the same pool on every machine.

import DinoCore
import DinoData
import Foundation

/// Writes a planted pool of images and tells which rows are copies of which.
public enum PlantedCopies {
    public enum Kind: Int, CaseIterable, Sendable {
        case exact, jpeg, crop, colour
    }

    public struct Truth: Sendable {
        /// The list file of every image (pool rows, then the copies).
        public let listFile: String
        /// (source row, copy row, kind), copy rows ascending.
        public let copies: [(source: Int, copy: Int, kind: Kind)]
    }

    /// The area of a crop copy, as a fraction of the image.
    public static let cropArea = 0.85

    /// Plants copies among `perClass` validation images of every class of the embedded dataset.
    @discardableResult
    public static func write(
        to directory: String, perClass: Int = 50, every: Int = 10, size: Int = 112, seed: UInt64 = 0
    ) throws -> Truth {
        var names: [String] = [], sources: [RGBImage] = []
        for label in SyntheticImages.classNames.indices {
            for index in 0..<perClass {
                sources.append(SyntheticImages.draw(label: label, index: index, split: 1, size: size, seed: seed))
                names.append("\(SyntheticImages.classNames[label])-\(index)")
            }
        }
        return try write(sources, names: names, to: directory, every: every, seed: seed)
    }

    /// Writes `sources` (the central square of each, as `names[i].png`) and a copy of every `every`-th, and
    /// their list file `pool.txt` (file names, which a list file resolves against its own folder: the folder
    /// can be given by a relative path, or moved).
    @discardableResult
    public static func write(
        _ sources: [RGBImage], names: [String], to directory: String, every: Int, seed: UInt64
    ) throws -> Truth {
        precondition(sources.count == names.count && every > 0)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var files: [String] = []
        let squares = sources.map(centralSquare)
        for (image, name) in zip(squares, names) {
            try ImageCodec.encodePNG(image).write(to: URL(fileURLWithPath: "\(directory)/\(name).png"))
            files.append("\(name).png")
        }
        let stream = RandomStream(seed: seed, purpose: .curation, 0xC0B1)
        var copies: [(source: Int, copy: Int, kind: Kind)] = []
        for (j, source) in stride(from: 0, to: squares.count, by: every).enumerated() {
            let kind = Kind.allCases[j % Kind.allCases.count]
            let copy = try Self.copy(
                squares[source], kind: kind, uniform: (stream.uniform(2 * UInt64(j)), stream.uniform(2 * UInt64(j) + 1))
            )
            let file = String(format: "copy-%03d.png", j)
            try ImageCodec.encodePNG(copy).write(to: URL(fileURLWithPath: "\(directory)/\(file)"))
            copies.append((source, squares.count + j, kind))
            files.append(file)
        }
        let listFile = directory + "/pool.txt"
        try (files.joined(separator: "\n") + "\n").write(toFile: listFile, atomically: true, encoding: .utf8)
        return Truth(listFile: listFile, copies: copies)
    }

    /// The central square of `image` (itself when square): the part the evaluation view sees.
    static func centralSquare(_ image: RGBImage) -> RGBImage {
        guard image.width != image.height else { return image }
        let side = min(image.width, image.height)
        var pixels = [UInt8](repeating: 0, count: side * side * 3)
        let top = (image.height - side) / 2, left = (image.width - side) / 2
        for y in 0..<side {
            let from = ((top + y) * image.width + left) * 3
            pixels[(y * side * 3)..<((y + 1) * side * 3)] = image.pixels[from..<(from + side * 3)]
        }
        return RGBImage(width: side, height: side, pixels: pixels)
    }

    /// One copy of `image`; `uniform` places a crop.
    public static func copy(_ image: RGBImage, kind: Kind, uniform: (Double, Double)) throws -> RGBImage {
        switch kind {
        case .exact:
            return image
        case .jpeg:
            return try ImageCodec.decode(ImageCodec.encodeJPEG(image, quality: 70))
        case .crop:
            let side = Int((Double(image.width * image.height) * cropArea).squareRoot())
            let box = CropBox(
                top: Int(uniform.0 * Double(image.height - side + 1)),
                left: Int(uniform.1 * Double(image.width - side + 1)),
                height: side, width: side)
            return Augment.resizedCrop(image, box: box, size: image.width)
        case .colour:
            return Augment.saturation(Augment.brightness(image, factor: 1.2), factor: 0.7)
        }
    }
}
