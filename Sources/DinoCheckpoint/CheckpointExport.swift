// `checkpoint export`: a checkpoint's student or teacher backbone as one HDF5 file in the official
// layout (hub names, PyTorch shapes), read from the rank files whatever rank count wrote them. With an
// image size, the position embedding [1, 1 + G * G, D] is written for that size's grid G (resampled as
// the official interpolate_pos_encoding does), so the file loads strictly into the official
// `vit_*(patch_size=14, img_size=SIZE)`, as the released 518-px hub weights do.

import DinoConfig
import DinoCore
import DinoModel
import Foundation

/// Export of a checkpoint's backbone to one HDF5 file in the official layout.
public enum CheckpointExport {
    /// The official (hub) name of a backbone tensor: chunked names `blocks.<chunk>.<i>.x` become `blocks.<i>.x`.
    public static func officialName(_ name: String) -> String {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count > 3, parts[0] == "blocks", Int(parts[1]) != nil, Int(parts[2]) != nil {
            return (["blocks"] + parts[2...].map(String.init)).joined(separator: ".")
        }
        return name
    }

    /// Writes the `which` ("teacher" or "student") backbone of the checkpoint in `folder` to `output`:
    /// one dataset per tensor under its official name and PyTorch shape. Returns the tensor count.
    /// `imageSize` (nil: the training crop size) sets the position embedding's grid.
    @discardableResult
    public static func export(
        checkpoint folder: String, to output: String, which: String, imageSize: Int? = nil
    ) throws -> Int {
        guard which == "teacher" || which == "student" else {
            throw CheckpointError.mismatch("--which must be teacher or student, not \(which)")
        }
        let manifest = try ShardedCheckpoint.verify(folder)
        var config = try ConfigLoader.load(yaml: manifest.config, source: folder + "/manifest.json")
        let patch = config.student.patchSize
        if let imageSize {
            guard imageSize >= patch, imageSize % patch == 0 else {
                throw CheckpointError.mismatch(
                    "--img-size \(imageSize) is not a multiple of the patch size \(patch); use for example "
                        + "\(Swift.max(1, imageSize / patch) * patch)")
            }
            // The file's config describes the exported model: `--checkpoint FILE.h5` rebuilds it at that size.
            config.crops.globalCropsSize = imageSize
        }
        let resampling = PositionResampling(
            offset: config.student.interpolateOffset, antialias: config.student.interpolateAntialias)
        guard let backbone = manifest.parts.first(where: { $0.name == "backbone" }) else {
            throw CheckpointError.corrupt(file: folder + "/manifest.json", reason: "no backbone part")
        }
        var files: [Int: HDF5File] = [:]
        for rankFile in manifest.ranks where files[rankFile.shardIndex] == nil {
            files[rankFile.shardIndex] = try HDF5File.open(folder + "/" + rankFile.file)
        }
        let temporary = output + ".tmp"
        try? FileManager.default.removeItem(atPath: temporary)
        do {
            let out = try HDF5File.create(temporary, truncate: true)
            try out.setAttribute(
                "source", string: "dinov2-fsdp checkpoint \(folder), \(which), iteration \(manifest.iteration)")
            try out.setAttribute("config", string: ConfigLoader.yaml(config))  // `--checkpoint FILE.h5` rebuilds it
            for tensor in backbone.tensors {
                let count = tensor.shape.reduce(1, *)
                let unitCount = backbone.unitCounts[tensor.unit]
                let shard = CollectiveShape.padded(unitCount, toMultipleOf: manifest.shards) / manifest.shards
                var values = [Float](repeating: 0, count: count)
                try values.withUnsafeMutableBufferPointer { buffer in
                    guard let base = buffer.baseAddress else { return }
                    try ShardedCheckpoint.readUnitRange(
                        "backbone/\(which)/unit-\(tensor.unit)", range: tensor.offset..<(tensor.offset + count),
                        shardSize: shard, files: files, folder: folder, into: base)
                }
                var shape = tensor.shape
                if let imageSize, tensor.name == "pos_embed", shape.count == 3 {
                    let grid = imageSize / patch
                    values = resampling.resample(values, channels: shape[2], toGrid: grid)
                    shape[1] = 1 + grid * grid
                }
                try values.withUnsafeBufferPointer {
                    try out.write(officialName(tensor.name), values: $0, shape: shape)
                }
            }
            try out.flush()
        } catch let error as CheckpointError {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw CheckpointError.io("\(temporary): \(error)")
        }
        try FileSafety.durableRename(temporary, to: output)
        return backbone.tensors.count
    }
}
