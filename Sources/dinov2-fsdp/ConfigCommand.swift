// `dinov2-fsdp config`: prints the resolved configuration as YAML.

import ArgumentParser
import DinoConfig
import DinoCore

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the resolved configuration (defaults < --config file < key=value overrides) as YAML.",
        discussion: """
            Every key uses the official DINOv2 name (student.arch, optim.base_lr, \
            train.batch_size_per_gpu, ...). An unknown key or a value of the wrong type is an \
            error naming the key. With --world-size, optim.lr is filled in by the scaling rule \
            base_lr * sqrt(batch_size_per_gpu * world_size / 1024), as a run on that many ranks does.
            """)

    @OptionGroup var options: ConfigOptions

    @Option(help: "Derive optim.lr for this many ranks, as the run itself does.")
    var worldSize: Int?

    @Flag(help: "Print every accepted key, one per line, instead of the YAML.")
    var keys = false

    func validate() throws {
        if let worldSize, worldSize < 1 { throw ValidationError("--world-size must be at least 1") }
    }

    func run() throws {
        if keys {
            Console.out(ConfigLoader.allKeys.joined(separator: "\n"))
            return
        }
        var config = try options.load()
        if let worldSize { config = config.resolved(worldSize: worldSize) }
        Console.write(ConfigLoader.yaml(config), to: 1)
    }
}
