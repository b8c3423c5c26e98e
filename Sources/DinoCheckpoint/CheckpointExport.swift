// `checkpoint export`: a checkpoint's student or teacher backbone as one HDF5 file in the official
// layout (hub names, PyTorch shapes), read from the rank files whatever rank count wrote them. With an
// image size, the position embedding [1, 1 + G * G, D] is written for that size's grid G (resampled as
// the official interpolate_pos_encoding does), so the file loads strictly into the official
// `vit_*(patch_size=14, img_size=SIZE)`, as the released 518-px hub weights do. With `heads`, the file
// holds the DINO head and (when separate) iBOT head instead, as `dino_head.<name>` / `ibot_head.<name>`
// under DINOHead's state-dict names and shapes (a last layer saved in pieces written whole): the head
// file a distillation run takes beside an exported backbone (`distillation.heads_path`).

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
    /// `imageSize` (nil: the training crop size) sets the position embedding's grid. With `heads`, the
    /// heads instead of the backbone.
    @discardableResult
    public static func export(
        checkpoint folder: String, to output: String, which: String, imageSize: Int? = nil, heads: Bool = false
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
        let chosen = manifest.parts.filter { heads ? $0.name != "backbone" : $0.name == "backbone" }
        guard !chosen.isEmpty else {
            throw CheckpointError.corrupt(
                file: folder + "/manifest.json", reason: heads ? "no heads" : "no backbone part")
        }
        var files: [Int: HDF5File] = [:]
        for rankFile in manifest.ranks where files[rankFile.shardIndex] == nil {
            files[rankFile.shardIndex] = try HDF5File.open(folder + "/" + rankFile.file)
        }
        let temporary = output + ".tmp"
        var count = 0
        try? FileManager.default.removeItem(atPath: temporary)
        do {
            let out = try HDF5File.create(temporary, truncate: true)
            try out.setAttribute(
                "source",
                string: "dinov2-fsdp checkpoint \(folder), \(which) \(heads ? "heads" : "backbone"), "
                    + "iteration \(manifest.iteration)")
            try out.setAttribute("config", string: ConfigLoader.yaml(config))  // `--checkpoint FILE.h5` rebuilds it
            for part in chosen {
                // Whole tensors by name: a piece (a last layer cut into units) lands at its offset.
                var whole: [String: (shape: [Int], values: [Float])] = [:]
                var order: [String] = []
                for tensor in part.tensors {
                    let count = tensor.shape.reduce(1, *)
                    let unitCount = part.unitCounts[tensor.unit]
                    let shard = CollectiveShape.padded(unitCount, toMultipleOf: manifest.shards) / manifest.shards
                    let (name, shape, offset) = tensor.whole
                    if whole[name] == nil {
                        whole[name] = (shape, [Float](repeating: 0, count: shape.reduce(1, *)))
                        order.append(name)
                    }
                    try whole[name]!.values.withUnsafeMutableBufferPointer { buffer in
                        guard let base = buffer.baseAddress else { return }
                        try ShardedCheckpoint.readUnitRange(
                            "\(part.name)/\(which)/unit-\(tensor.unit)", range: tensor.offset..<(tensor.offset + count),
                            shardSize: shard, files: files, folder: folder, into: base + offset)
                    }
                }
                for name in order {
                    guard var (shape, values) = whole[name] else { continue }
                    if let imageSize, name == "pos_embed", shape.count == 3 {
                        let grid = imageSize / patch
                        values = resampling.resample(values, channels: shape[2], toGrid: grid)
                        shape[1] = 1 + grid * grid
                    }
                    let label = heads ? "\(part.name).\(name)" : officialName(name)
                    try values.withUnsafeBufferPointer { try out.write(label, values: $0, shape: shape) }
                }
                count += order.count
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
        return count
    }
}
