// `dinov2-fsdp embed`: the frozen features of every image of a dataset written to one HDF5 file:
// `cls` [N, D] (x_norm_clstoken), `labels` [N] (class index, -1 without classes), `paths` [N], with
// patches `patch` [N, P, D] (x_norm_patchtokens), in dataset order; attributes name the source, the
// classes and the scales (with several, `cls` is the multi-scale descriptor, MultiScale). Ranks compute
// their slices (TeacherEmbedding.rounds); rank 0 writes through a temporary file that is renamed when
// complete, so a crash never leaves a partial file behind.

import DinoCheckpoint
import DinoCore
import DinoData
import Foundation

/// Writes embedding files.
public enum EmbeddingWriter {
    /// Embeds `dataset` with `model` into `output`; `attributes` (string and integer) go on the file.
    /// With `skipUnreadable` an image that cannot be read gets zero features and its index goes to the
    /// `unreadable` dataset (written only when there is one) instead of stopping the run. Returns the
    /// number of unreadable images. `scales` as in `TeacherEmbedding.rounds`. Collective: every rank calls it.
    @discardableResult
    public static func write(
        _ dataset: ImageDataset, model: some FrozenFeatures, to output: String, patches: Bool,
        scales: [Double] = [1], attributes: [String: String] = [:], integerAttributes: [String: Int64] = [:],
        skipUnreadable: Bool = false, communicator comm: any Communicator
    ) throws -> Int {
        let d = model.featureDimension, p = model.patchesPerImage(size: model.inputSize(scale: scales[0]))
        let temporary = output + ".tmp-\(getpid())"
        var file: HDF5File?
        if comm.rank == 0 {
            let created = try HDF5File.create(temporary, truncate: true)
            try created.createDataset("cls", shape: [dataset.count, d])
            if patches { try created.createDataset("patch", shape: [dataset.count, p, d]) }
            file = created
        }
        // A run that stops (an unreadable image, a failed collective) takes its temporary file with it.
        var finished = false
        defer {
            if !finished && comm.rank == 0 {
                file = nil
                try? FileManager.default.removeItem(atPath: temporary)
            }
        }
        var unreadable: [Int] = []
        try TeacherEmbedding.rounds(
            of: dataset, model: model, communicator: comm, patches: patches, scales: scales,
            skipUnreadable: skipUnreadable
        ) { round in
            unreadable += round.unreadable
            guard let file else { return }
            var offset = 0
            for range in round.ranges where !range.isEmpty {
                try write(round.cls, rows: offset..<(offset + range.count), to: "cls", at: range, width: d, in: file)
                if patches {
                    try write(
                        round.patches, rows: offset..<(offset + range.count), to: "patch", at: range, width: p * d,
                        in: file)
                }
                offset += range.count
            }
        }
        if let writer = file {
            try writer.write("labels", integers: dataset.samples.map { Int64($0.label) }, shape: [dataset.count])
            try writer.write("paths", strings: dataset.samples.map(\.path))
            if !unreadable.isEmpty {
                try writer.write("unreadable", integers: unreadable.map { Int64($0) }, shape: [unreadable.count])
            }
            try writer.setAttribute(Self.scalesAttribute, string: MultiScale.describe(scales))
            for (name, value) in attributes.sorted(by: { $0.key < $1.key }) {
                try writer.setAttribute(name, string: value)
            }
            for (name, value) in integerAttributes.sorted(by: { $0.key < $1.key }) {
                try writer.setAttribute(name, int: value)
            }
            try writer.setAttribute("classes", string: dataset.classes.joined(separator: "\n"))
            try writer.flush()
        }
        file = nil  // closes the file before it is renamed
        if comm.rank == 0 { try FileSafety.durableRename(temporary, to: output) }
        finished = true
        try comm.barrier()
        return unreadable.count
    }

    /// The attribute naming the scales the features were computed at ("1,1.5,2").
    public static let scalesAttribute = "scales"

    /// Rows `rows` of `values` ([*, width]) into rows `range` of dataset `name`.
    private static func write(
        _ values: [Float], rows: Range<Int>, to name: String, at range: Range<Int>, width: Int,
        in file: HDF5File
    ) throws {
        try values.withUnsafeBufferPointer { all in
            let slice = UnsafeBufferPointer(rebasing: all[(rows.lowerBound * width)..<(rows.upperBound * width)])
            try file.write(name, range: (range.lowerBound * width)..<(range.upperBound * width), values: slice)
        }
    }
}
