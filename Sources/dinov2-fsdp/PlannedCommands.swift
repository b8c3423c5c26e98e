// Subcommands whose issues have not landed: each documents what it will do and, when run, says it
// is not implemented and exits with status 2 without doing anything.

import ArgumentParser

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a checkpoint: k-NN or linear probe on frozen features (not implemented yet).",
        subcommands: [Knn.self, Linear.self])

    struct Knn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Weighted k-NN on normalised teacher CLS features (not implemented yet).")
        @Option(help: "Checkpoint folder.") var checkpoint: String?
        @Option(help: "Labelled training images.") var train: String?
        @Option(help: "Labelled validation images.") var val: String?
        @Option(help: "Comma-separated k values.") var k = "10,20,100,200"
        func run() throws { try NotImplemented.fail("eval knn", "evaluation issue") }
    }

    struct Linear: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Linear probe on frozen features (not implemented yet).")
        @Option(help: "Checkpoint folder.") var checkpoint: String?
        @Option(help: "Labelled training images.") var train: String?
        @Option(help: "Labelled validation images.") var val: String?
        func run() throws { try NotImplemented.fail("eval linear", "evaluation issue") }
    }
}

struct EmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Write CLS (and patch) features of a folder of images to HDF5 (not implemented yet).")
    @Option(help: "Checkpoint folder.") var checkpoint: String?
    @Option(help: "Images to embed.") var data: String?
    @Option(help: "Output HDF5 file.") var output: String?
    @Flag(help: "Also write patch features.") var patch = false
    func run() throws { try NotImplemented.fail("embed", "evaluation issue") }
}

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Inspect, verify and export sharded HDF5 checkpoints (not implemented yet).",
        subcommands: [Info.self, Verify.self, Export.self])

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Iteration, ranks, parameter counts, bytes.")
        @Argument(help: "Checkpoint folder.") var path: String
        @Flag(help: "Print JSON.") var json = false
        func run() throws { try NotImplemented.fail("checkpoint info", "checkpoint issue") }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check completeness and checksums.")
        @Argument(help: "Checkpoint folder.") var path: String
        func run() throws { try NotImplemented.fail("checkpoint verify", "checkpoint issue") }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export the backbone under the official state-dict names to one HDF5 file.")
        @Argument(help: "Checkpoint folder.") var path: String
        @Option(help: "Output HDF5 file.") var output: String
        @Option(help: "teacher or student.") var which = "teacher"
        func run() throws { try NotImplemented.fail("checkpoint export", "checkpoint issue") }
    }
}

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Generate the embedded dataset and inspect image folders (not implemented yet).")
    @Argument(help: "Action: generate or inspect.") var action: String?
    func run() throws { try NotImplemented.fail("data", "data pipeline issue") }
}
