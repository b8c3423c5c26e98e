// `dinov2-fsdp config`: prints the resolved configuration as YAML.

import ArgumentParser
import DinoConfig
import DinoCore
import DinoTraining

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the resolved configuration (defaults < --config file < key=value overrides) as YAML.",
        discussion: """
            Every key uses the official DINOv2 name (student.arch, optim.base_lr, \
            train.batch_size_per_gpu, ...). An unknown key or a value of the wrong type is an \
            error naming the key. With --world-size, optim.lr is filled in by the scaling rule \
            base_lr * sqrt(batch_size_per_gpu * world_size / 1024), as a run on that many ranks does. \
            With --memory it prints instead the predicted peak memory of one rank by category (the memory \
            model `train` and `bench step` check before they allocate), for --world-size ranks (default 1), \
            --ranks-per-node of them per node (default all) and --threads workers each.
            """)

    @OptionGroup var options: ConfigOptions

    @Option(help: "Derive optim.lr for this many ranks, as the run itself does.")
    var worldSize: Int?

    @Flag(help: "Print every accepted key, one per line, instead of the YAML.")
    var keys = false

    @Flag(help: "Print the predicted peak memory per rank by category instead of the YAML.")
    var memory = false

    @Option(help: "With --memory: ranks sharing one node (default: all of --world-size).")
    var ranksPerNode: Int?

    @Option(help: "With --memory: worker threads per rank.")
    var threads = 1

    @Option(
        help: ArgumentHelp(
            "With --memory: size the heads for the masks of this many `bench step` steps (warm-up and timed, "
                + "synthetic crops) instead of the most a training run can draw."))
    var benchSteps: Int?

    func validate() throws {
        if let worldSize, worldSize < 1 { throw ValidationError("--world-size must be at least 1") }
        if let ranksPerNode, ranksPerNode < 1 || ranksPerNode > (worldSize ?? 1) {
            throw ValidationError("--ranks-per-node must be between 1 and --world-size")
        }
        if threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let benchSteps, benchSteps < 1 { throw ValidationError("--bench-steps must be at least 1") }
    }

    func run() throws {
        if keys {
            Console.out(ConfigLoader.allKeys.joined(separator: "\n"))
            return
        }
        var config = try options.load()
        if memory {
            let world = worldSize ?? 1, perNode = ranksPerNode ?? world
            let resolved = config.resolved(worldSize: world)
            let masked = benchSteps.map {
                syntheticMaskedTokens(resolved, seed: 0, iterations: 0..<$0, worldSize: world)
            }
            let prediction = try MemoryModel.predict(
                config: resolved, worldSize: world, ranksPerNode: perNode, threads: threads, maskedTokens: masked)
            Console.out(Self.memoryReport(prediction, config: resolved, worldSize: world, ranksPerNode: perNode))
            return
        }
        if let worldSize { config = config.resolved(worldSize: worldSize) }
        Console.write(ConfigLoader.yaml(config), to: 1)
    }
}

extension ConfigCommand {
    /// The prediction as a table: MiB per category, the rank's and the node's totals.
    static func memoryReport(
        _ prediction: MemoryPrediction, config: TrainingConfig, worldSize: Int, ranksPerNode: Int
    ) -> String {
        func mib(_ bytes: Int) -> String { String(format: "%10.0f", Double(bytes) / Double(1 << 20)) }
        func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }
        let checkpointing = prediction.checkpointsActivations ? "on" : "off"
        var lines = [
            "\(config.student.arch), \(config.fsdp.shardingStrategy) on \(worldSize) rank(s) "
                + "(\(ranksPerNode) per node), \(config.train.batchSizePerRank) image(s) per rank, activation "
                + "checkpointing \(checkpointing), masked tokens per rank up to \(prediction.maskedTokens)",
            "       MiB  category (per rank)",
        ]
        for category in prediction.categories { lines.append(mib(category.bytes) + "  " + category.name) }
        lines.append(mib(prediction.total) + "  total per rank (\(gib(prediction.total)))")
        lines.append(
            mib(prediction.total * ranksPerNode) + "  per node (\(gib(prediction.total * ranksPerNode)) for "
                + "\(ranksPerNode) rank(s))")
        return lines.joined(separator: "\n")
    }
}
