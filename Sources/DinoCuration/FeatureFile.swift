// The feature files curation reads: what `dinov2-fsdp embed` writes (`cls` [N, D] float32, `paths` [N],
// `labels` [N], optional `unreadable` [U] indices of images that could not be decoded and hold zeros).
// A rank reads the rows it needs (its pool shard, a block of queries) and L2-normalises each row with
// one fixed-order loop, so the same row read by any rank is the same bits.

import DinoCheckpoint
import DinoCore
import Foundation

/// Errors of the curation inputs and stages, each one sentence naming the file and what to do.
public enum CurationError: Error, CustomStringConvertible, Equatable {
    case input(String)

    public var description: String {
        switch self {
        case .input(let text): return text
        }
    }
}

/// An open feature file.
public final class FeatureFile {
    public let path: String
    /// Images (rows of `cls`).
    public let count: Int
    /// Channels of a feature (D).
    public let dimension: Int
    /// The image files, in row order.
    public let paths: [String]
    /// Class indices (-1 without classes).
    public let labels: [Int]
    /// Rows of images that could not be read (zeros in the file): never searched, never retrieved.
    public let unreadable: Set<Int>
    private let file: HDF5File

    public init(path: String) throws {
        self.path = path
        do { file = try HDF5File.open(path) } catch {
            throw CurationError.input(
                "\(path) is missing or not HDF5; pass a file written by `dinov2-fsdp embed` or by the curate "
                    + "features stage")
        }
        let shape: [Int]
        do { shape = try file.shape(of: "cls") } catch {
            throw CurationError.input("\(path) has no `cls` dataset; pass a file written by `dinov2-fsdp embed`")
        }
        guard shape.count == 2 else {
            throw CurationError.input("\(path): `cls` has shape \(shape), expected [images, dimension]")
        }
        count = shape[0]
        dimension = shape[1]
        paths = (try? file.readStrings("paths")) ?? []
        guard paths.count == count else {
            throw CurationError.input(
                "\(path): `paths` names \(paths.count) images for \(count) feature rows; re-create the file with "
                    + "`dinov2-fsdp embed`")
        }
        let labelValues = (try? file.readDoubles("labels")) ?? []
        labels = labelValues.count == count ? labelValues.map { Int($0) } : [Int](repeating: -1, count: count)
        if (try? file.shape(of: "unreadable")) != nil {
            unreadable = Set(try file.readDoubles("unreadable").map { Int($0) })
        } else {
            unreadable = []
        }
    }

    /// Rows `rows` as unit vectors [rows.count, D] (an unreadable image's zero row stays zero).
    public func normalizedRows(_ rows: Range<Int>) throws -> [Float] {
        var values = [Float](repeating: 0, count: rows.count * dimension)
        guard !rows.isEmpty else { return values }
        try values.withUnsafeMutableBufferPointer {
            try file.read("cls", range: (rows.lowerBound * dimension)..<(rows.upperBound * dimension), into: $0)
        }
        UnitRows.normalize(&values, dimension: dimension)
        return values
    }

    /// Refuses files whose features cannot be compared with this one's.
    public func checkSameDimension(as other: FeatureFile) throws {
        guard other.dimension == dimension else {
            throw CurationError.input(
                "\(other.path) holds \(other.dimension)-dimensional features but \(path) holds \(dimension); embed "
                    + "every set with the same model")
        }
    }
}
