// `dinov2-fsdp plot`: the training curves of a run's metrics.jsonl as SVG.

import ArgumentParser
import DinoCheckpoint
import DinoCore
import DinoData
import DinoEval
import DinoTraining
import Foundation

struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw a training run's curves (losses, teacher entropy, lr, throughput, k-NN) as SVG.",
        discussion: "Reads OUTPUT/metrics.jsonl; `train` also writes OUTPUT/metrics.svg when it ends.")
    @Argument(help: "A training output folder (holding metrics.jsonl).") var folder: String
    @Option(help: "The picture to write (default: FOLDER/metrics.svg).") var output: String?

    func run() throws {
        try reportingErrors {
            let file = output ?? folder + "/metrics.svg"
            try TrainingCurves.write(output: folder, to: file)
            Console.out("wrote \(file)")
        }
    }
}
