// `dinov2-fsdp report`: the self-contained HTML page of a training output folder.

import ArgumentParser
import DinoCheckpoint
import DinoCore
import DinoData
import DinoTraining
import Foundation

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a training run's report: one HTML file to open anywhere, nothing fetched.",
        discussion: """
            Sections: summary, configuration (config.yaml and each launch), the curves, every k-NN \
            evaluation, throughput and each rank's peak memory, the checkpoints, and the newest \
            checkpoint's teacher on a few validation images (the PCA picture of its patch features). \
            `train` writes RUN/report.html when it ends or is stopped; this command redraws it, for example \
            while the run goes on. Runs on one process or under mpirun (the picture's forward is shared).
            """)
    @Argument(help: "A training output folder (holding metrics.jsonl).") var folder: String
    @Option(help: "The HTML file to write (default: RUN/report.html).") var output: String?
    @Option(help: "A labelled image folder for the picture (default: the run's --val, from RUN/run.json).")
    var val: String?
    @Option(help: "Validation images in the picture (one per class first).") var images = 4
    @Flag(help: "Leave the picture out (no checkpoint is loaded).") var noPicture = false

    func validate() throws {
        if let output { try validateOutputFiles([("--output", output)]) }
        guard images >= 1 else { throw ValidationError("--images must be at least 1") }
        guard FileManager.default.fileExists(atPath: folder + "/metrics.jsonl") else {
            throw ValidationError("\(folder) holds no metrics.jsonl; name a folder `dinov2-fsdp train --output` wrote")
        }
    }

    func run() throws {
        try RankedRun.execute { comm, log in
            var section: RunReport.PictureSection? = .missing("Left out (--no-picture).")
            if !noPicture {
                let validation = val ?? RunLaunch.all(in: folder).last?.validation
                if Trainer.checkpoints(in: folder).isEmpty {
                    section = .missing("No checkpoint in \(folder)/checkpoints yet: the picture needs the teacher.")
                } else if let validation {
                    let (model, _, iteration) = try SelfDistillation.restored(from: folder, communicator: comm)
                    section = try RunReport.pictureSection(
                        model: model, validation: try ImageDataset(path: validation), source: validation,
                        images: images,
                        iteration: iteration)
                } else {
                    section = .noValidation
                }
            }
            guard comm.rank == 0, let section else { return }
            let path = try RunReport.write(output: folder, picture: section, to: output)
            log.main("wrote \(path)")
        }
    }
}
