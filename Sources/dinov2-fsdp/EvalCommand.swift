// `dinov2-fsdp eval knn|linear`: k-NN and linear-probe accuracy of a checkpoint teacher's features.

import ArgumentParser
import DinoCheckpoint
import DinoCore
import DinoData
import DinoEval
import DinoTraining
import Foundation

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a checkpoint on frozen features: weighted k-NN or a linear probe.",
        subcommands: [Knn.self, Linear.self])

    struct Knn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Weighted k-NN on normalised teacher CLS features of a checkpoint.",
            discussion: """
                As dinov2/eval/knn.py: every image's central 224/256 crop resized to the global crop size, \
                the teacher's normalised CLS token, L2-normalised; each validation image votes with its k most \
                similar training images, weighted by exp(similarity / 0.07). --train and --val must hold the \
                same class folders. Runs on any number of ranks (features are computed across them).
                """)
        @Option(help: "Checkpoint folder, or a training output folder (its newest complete checkpoint).")
        var checkpoint: String
        @Option(help: "Labelled training images (ImageFolder or list file).") var train: String
        @Option(help: "Labelled validation images (ImageFolder or list file).") var val: String
        @Option(help: "Comma-separated k values.") var k = "10,20,100,200"
        @Option(help: "Also write the results as JSON to this file.") var output: String?

        func validate() throws {
            try validateOutputFiles([("--output", output)])
            let ks = k.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !ks.isEmpty, ks.allSatisfy({ ($0 ?? 0) >= 1 }) else {
                throw ValidationError("--k must be comma-separated positive integers, e.g. 10,20,100,200 (got \(k))")
            }
        }

        func run() throws {
            let ks = k.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            try RankedRun.execute { comm, log in
                let trainSet = try ImageDataset(path: train), valSet = try ImageDataset(path: val)
                let (model, folder, iteration) = try SelfDistillation.restored(from: checkpoint, communicator: comm)
                log.main(
                    "k-NN of the teacher of \(folder) (iteration \(iteration)): \(trainSet.count) training, "
                        + "\(valSet.count) validation images, \(trainSet.classes.count) classes, \(comm.worldSize) "
                        + "rank(s)"
                )
                let results = try KNN.evaluate(model: model, train: trainSet, val: valSet, ks: ks, communicator: comm)
                guard comm.rank == 0 else { return }
                for result in results {
                    Console.out(String(format: "k %d: top-1 %.2f%%, top-5 %.2f%%", result.k, result.top1, result.top5))
                }
                if let output {
                    let record: [String: Any] = [
                        "checkpoint": folder, "iteration": iteration, "train": train, "val": val,
                        "results": results.map { ["k": $0.k, "top1": $0.top1, "top5": $0.top5] },
                    ]
                    try writeJSONObject(record, to: output)
                }
            }
        }
    }

    struct Linear: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Linear probe on a checkpoint teacher's frozen features, over a grid of learning rates.",
            discussion: """
                As dinov2/eval/linear.py with n_last_blocks 1: features are the final-norm CLS token, with \
                --avgpool followed by the mean patch token; one linear classifier per learning rate (the official grid \
                scaled by batch / 256), SGD momentum 0.9, no weight decay, cosine schedule; the best on --val is \
                reported. Unlike the official probe, features are computed once on the evaluation view \
                (no random crops per epoch). Ranks share the grid.
                """)
        @Option(help: "Checkpoint folder, or a training output folder (its newest complete checkpoint).")
        var checkpoint: String
        @Option(help: "Labelled training images (ImageFolder or list file).") var train: String
        @Option(help: "Labelled validation images (ImageFolder or list file).") var val: String
        @Option(help: "Epochs over the training features.") var epochs = 10
        @Option(help: "Batch size of the probe's SGD.") var batch = 128
        @Option(help: "Comma-separated base learning rates (default: the official grid).") var lrs: String?
        @Option(help: "Seed of the classifier initialisation and the sample order.") var seed = 0
        @Flag(help: "Append the average-pooled patch tokens to the CLS token.") var avgpool = false
        @Option(help: "Also write the results as JSON to this file.") var output: String?

        func grid() -> [Double]? {
            guard let lrs else { return LinearProbe.officialGrid }
            let values = lrs.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.allSatisfy({ ($0 ?? -1) >= 0 }) else { return nil }
            return values.compactMap { $0 }
        }

        func validate() throws {
            try validateOutputFiles([("--output", output)])
            guard grid() != nil else {
                throw ValidationError("--lrs must be comma-separated non-negative numbers (got \(lrs ?? ""))")
            }
            guard epochs >= 1, batch >= 1 else { throw ValidationError("--epochs and --batch must be at least 1") }
        }

        func run() throws {
            let grid = grid() ?? LinearProbe.officialGrid
            try RankedRun.execute { comm, log in
                let trainSet = try ImageDataset(path: train), valSet = try ImageDataset(path: val)
                let labelled = (trainSet.samples + valSet.samples).allSatisfy { $0.label >= 0 }
                guard trainSet.classes == valSet.classes, labelled else {
                    throw TrainingError.data(
                        "--train and --val need labels and the same classes (ImageFolders with "
                            + "the same class folders, or labelled list files)")
                }
                let (model, folder, iteration) = try SelfDistillation.restored(from: checkpoint, communicator: comm)
                log.main(
                    "linear probe of the teacher of \(folder) (iteration \(iteration)): \(trainSet.count) training, "
                        + "\(valSet.count) validation images, \(grid.count) learning rates over \(comm.worldSize) "
                        + "rank(s)"
                )
                let trainFeatures = try LinearProbe.features(
                    of: trainSet, model: model, avgpool: avgpool, communicator: comm)
                let valFeatures = try LinearProbe.features(
                    of: valSet, model: model, avgpool: avgpool, communicator: comm)
                let trainLabels = trainSet.samples.map(\.label), valLabels = valSet.samples.map(\.label)
                let classes = max(trainLabels.max() ?? 0, valLabels.max() ?? 0) + 1
                let outcomes = try LinearProbe.evaluate(
                    trainFeatures: trainFeatures, trainLabels: trainLabels, valFeatures: valFeatures,
                    valLabels: valLabels,
                    dimension: (avgpool ? 2 : 1) * model.architecture.embedDim, classes: classes, grid: grid,
                    epochs: epochs,
                    batch: batch, seed: UInt64(seed), communicator: comm)
                guard comm.rank == 0, let best = outcomes.max(by: { $0.top1 < $1.top1 }) else { return }
                for outcome in outcomes {
                    Console.out(
                        String(
                            format: "lr %.2e: top-1 %.2f%%, top-5 %.2f%%, final train loss %.4f",
                            outcome.learningRate, outcome.top1, outcome.top5, outcome.finalLoss))
                }
                Console.out(String(format: "best: lr %.2e, top-1 %.2f%%", best.learningRate, best.top1))
                if let output {
                    let record: [String: Any] = [
                        "checkpoint": folder, "iteration": iteration, "train": train, "val": val, "epochs": epochs,
                        "avgpool": avgpool,
                        "batch": batch, "best_top1": best.top1, "best_lr": best.learningRate,
                        "results": outcomes.map {
                            [
                                "lr": $0.learningRate, "top1": $0.top1, "top5": $0.top5,
                                "final_loss": $0.finalLoss,
                            ]
                        },
                    ]
                    try writeJSONObject(record, to: output)
                }
            }
        }
    }
}
