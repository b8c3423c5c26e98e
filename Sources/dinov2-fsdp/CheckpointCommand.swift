// `dinov2-fsdp checkpoint info|verify|export`: inspect, check and export sharded checkpoints.

import ArgumentParser
import DinoCheckpoint
import DinoCore
import DinoData
import DinoEval
import DinoTraining
import Foundation

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Inspect, verify and export sharded HDF5 checkpoints.",
        subcommands: [Info.self, Verify.self, Export.self])

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Iteration, ranks, parameter counts, bytes.")
        @Argument(help: "Checkpoint folder (holding manifest.json).") var path: String
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            try reportingErrors {
                let manifest = try ShardedCheckpoint.readManifest(path)
                let counts = manifest.parts.map { part in
                    (part.name, part.tensors.reduce(0) { $0 + $1.shape.reduce(1, *) })
                }
                let bytes = manifest.ranks.reduce(0) { $0 + $1.bytes }
                if json {
                    let summary: [String: Any] = [
                        "iteration": manifest.iteration, "world_size": manifest.worldSize,
                        "strategy": manifest.strategy,
                        "optimizer_steps": manifest.optimizerSteps, "bytes": bytes,
                        "parameters": Dictionary(uniqueKeysWithValues: counts),
                    ]
                    let data = try JSONSerialization.data(
                        withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
                    Console.out(String(decoding: data, as: UTF8.self))
                } else {
                    Console.out(
                        """
                        checkpoint \(path)
                          iteration \(manifest.iteration), optimizer steps \(manifest.optimizerSteps)
                          \(manifest.worldSize) rank file(s), \(manifest.strategy) over \(manifest.shards) \
                        shard(s), \(bytes) bytes
                        \(counts.map { "  \($0.0): \($0.1) parameters" }.joined(separator: "\n"))
                        """)
                }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check completeness and checksums, naming any bad file.")
        @Argument(help: "Checkpoint folder (holding manifest.json).") var path: String

        func run() throws {
            try reportingErrors {
                let manifest = try ShardedCheckpoint.verify(path)
                Console.out(
                    "ok: \(path), iteration \(manifest.iteration), \(manifest.ranks.count) rank file(s) verified")
            }
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export the backbone under the official state-dict names and PyTorch shapes to one HDF5 file.",
            discussion: """
                Every tensor of the teacher (default) or student backbone becomes one dataset named as in \
                the official hub checkpoints (cls_token, pos_embed, register_tokens, mask_token, \
                patch_embed.proj.*, blocks.i.*, norm.*); see the README for loading it into PyTorch. \
                --img-size writes pos_embed for that image size (resampled as the official model does at \
                run time), so the file loads strictly into vit_*(patch_size=14, img_size=SIZE), like the \
                released 518-px hub weights.
                """)
        @Argument(help: "Checkpoint folder (holding manifest.json).") var path: String
        @Option(help: "Output HDF5 file (written through a temporary file).") var output: String
        @Option(help: "teacher or student.") var which = "teacher"
        @Option(
            name: .customLong("img-size"), help: "Image size of the position embedding (default: the training crop).")
        var imageSize: Int?
        @Flag(
            help: ArgumentHelp(
                "Write the DINO and iBOT heads (dino_head.*, ibot_head.*) instead of the backbone: the head file "
                    + "of a distillation teacher given as an exported backbone (distillation.heads_path)."))
        var heads = false

        func validate() throws {
            try validateOutputFiles([("--output", output)])
            if let imageSize, imageSize < 1 { throw ValidationError("--img-size must be positive") }
            guard which == "teacher" || which == "student" else {
                throw ValidationError("--which must be teacher or student, not \(which)")
            }
        }

        func run() throws {
            try reportingErrors {
                let count = try CheckpointExport.export(
                    checkpoint: path, to: output, which: which, imageSize: imageSize, heads: heads)
                let size = imageSize.map { " for \($0)-px images" } ?? ""
                Console.out("wrote \(output): \(count) tensors of the \(which) \(heads ? "heads" : "backbone")\(size)")
            }
        }
    }
}
