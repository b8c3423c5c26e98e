// `dinov2-fsdp train`: the DINOv2 recipe end to end with the sharded runtime. With no arguments it
// trains Configs/quickstart.yaml on the embedded dataset into runs/quickstart.

import ArgumentParser
import DinoConfig
import DinoCore
import DinoTraining
import Foundation

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a DINOv2 ViT with the sharded runtime.",
        discussion: """
            `dinov2-fsdp train [--config FILE] [--output DIR] [--data PATH] [key=value ...]`, on one rank \
            or under mpirun (Launch/mpirun.sh -n 8 dinov2-fsdp train). With no --config it trains \
            Configs/quickstart.yaml; with no --data, train.dataset_path "embedded" means the built-in \
            dataset (generated once into $DINO_CACHE or ~/.cache/dinov2-fsdp). It resumes by itself from \
            the newest complete checkpoint in OUTPUT/checkpoints, logs OUTPUT/metrics.jsonl, and saves \
            and exits on SIGUSR1 / SIGTERM.
            """)

    @Option(help: "YAML file layered on the official defaults (default: Configs/quickstart.yaml).") var config: String?
    @Argument(help: "Overrides as dotted section.key=value, applied last.") var overrides: [String] = []
    @Option(help: "Output folder for checkpoints, metrics and the resolved config (default: runs/quickstart).")
    var output: String?
    @Option(help: "Training images (ImageFolder root or list file).") var data: String?
    @Option(help: "Labelled validation images: k-NN top-1 of the teacher at the end (default: the embedded val split).")
    var val: String?
    @OptionGroup var memory: MemoryCheckOptions

    func run() throws {
        Trainer.catchStopSignals()
        let file = config ?? Self.defaultConfig
        let loaded = try RankedRun.loadConfig(file: file, overrides: overrides)
        try RankedRun.execute { comm, log in
            let outcome = try Trainer.run(
                config: loaded, output: output ?? "runs/quickstart", data: data, val: val,
                communicator: comm, log: log
            ) { config, threads in
                try MemoryCheck.run(config: config, comm: comm, threads: threads, options: memory, log: log)
            }
            if case .finished(let iteration) = outcome { log.main("finished at iteration \(iteration)") }
        }
    }

    /// Configs/quickstart.yaml next to the executable's checkout, or in the working directory.
    static var defaultConfig: String {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var folder = executable.deletingLastPathComponent()
        for _ in 0..<5 {
            let candidate = folder.appendingPathComponent("Configs/quickstart.yaml").path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            folder = folder.deletingLastPathComponent()
        }
        return "Configs/quickstart.yaml"
    }
}
