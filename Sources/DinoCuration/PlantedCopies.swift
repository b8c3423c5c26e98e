// A pool of images with planted copies, to measure a copy rule on pixels rather than on features:
// `perClass` images of every class of the embedded dataset, drawn from its validation split (images a
// model trained on the embedded training split has not seen), then one copy of every `every`-th of
// them, the kinds in turn: an exact copy, a JPEG re-encoding (quality 70), a crop of 85 % of the area
// at a random place resized back, a colour shift (brightness x1.2, saturation x0.7). The images are
// PNG files in `directory`, listed (pool in order, copies after) in a list file `train --data`,
// `embed` and `curate` read. Every pixel is a function of the seed: the same pool on every machine.

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

    @discardableResult
    public static func write(
        to directory: String, perClass: Int = 50, every: Int = 10, size: Int = 112, seed: UInt64 = 0
    ) throws -> Truth {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var paths: [String] = [], sources: [RGBImage] = []
        for label in SyntheticImages.classNames.indices {
            for index in 0..<perClass {
                let image = SyntheticImages.draw(label: label, index: index, split: 1, size: size, seed: seed)
                let path = "\(directory)/\(SyntheticImages.classNames[label])-\(index).png"
                try ImageCodec.encodePNG(image).write(to: URL(fileURLWithPath: path))
                paths.append(path)
                sources.append(image)
            }
        }
        let stream = RandomStream(seed: seed, purpose: .curation, 0xC0B1)
        var copies: [(source: Int, copy: Int, kind: Kind)] = []
        for (j, source) in stride(from: 0, to: sources.count, by: every).enumerated() {
            let kind = Kind.allCases[j % Kind.allCases.count]
            let copy = try Self.copy(
                sources[source], kind: kind, uniform: (stream.uniform(2 * UInt64(j)), stream.uniform(2 * UInt64(j) + 1))
            )
            let path = String(format: "%@/copy-%03d.png", directory, j)
            try ImageCodec.encodePNG(copy).write(to: URL(fileURLWithPath: path))
            copies.append((source, sources.count + j, kind))
            paths.append(path)
        }
        let listFile = directory + "/pool.txt"
        try (paths.joined(separator: "\n") + "\n").write(toFile: listFile, atomically: true, encoding: .utf8)
        return Truth(listFile: listFile, copies: copies)
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
