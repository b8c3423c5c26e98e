// `dinov2-fsdp bench`: benchmarks that print ratios against references measured in the same run.

import ArgumentParser
import DinoBench
import DinoCore
import DinoCuration
import DinoData
import DinoTraining
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract:
            "Benchmarks: collectives, attention, kernels, training steps, the data pipeline, checkpoints, curation.",
        subcommands: [
            Comm.self, Attention.self, Kernels.self, Step.self, Data.self, Checkpoint.self, Curation.self,
            ScalingReportCommand.self, LearningReportCommand.self,
        ])

    struct Checkpoint: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save and load throughput of the sharded training-state checkpoint against raw file I/O.",
            discussion: """
                Builds the training state of the configured model, saves and loads it as a sharded \
                checkpoint in --dir (fsynced), and writes and reads the same bytes sequentially in the \
                same folder, e.g. `Launch/mpirun.sh -n 2 dinov2-fsdp bench checkpoint --config Configs/vitb14.yaml`.
                """)
        @OptionGroup var options: ConfigOptions
        @Option(help: "Folder for the checkpoint and the raw files (removed afterwards).") var dir = "."
        @Option(help: "Write the report as JSON to this file (rank 0).") var json: String?

        func validate() throws { try validateOutputFiles([("--json", json)]) }

        func run() throws {
            let loaded = try options.load()
            try RankedRun.execute { comm, log in
                let config = loaded.resolved(worldSize: comm.worldSize)
                let r = try CheckpointBenchmark.run(config: config, communicator: comm, folder: dir)
                func f(_ v: Double) -> String { String(format: "%.1f", v) }
                log.main(
                    """
                    checkpoint of \(r.bytesTotal / 1_000_000) MB on \(r.worldSize) rank(s):
                      save \(f(r.saveMBPerSecond)) MB/s (\(f(r.saveMBPerSecondPerRank)) per rank), raw write \
                    \(f(r.rawWriteMBPerSecond)) MB/s, ratio \(String(format: "%.2f", r.saveRatio))
                      load \(f(r.loadMBPerSecond)) MB/s, raw read \(f(r.rawReadMBPerSecond)) MB/s, ratio \
                    \(String(format: "%.2f", r.loadRatio))
                    """)
                if let json, comm.rank == 0 { try writeJSON(r, to: json) }
            }
        }
    }

    struct Attention: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Packed attention on DINOv2 shapes: time, GFLOP/s, ratio to the sgemm peak and to a materialising "
                + "baseline.",
            discussion: """
                Cases: batch 8 of 2 x 224 px + 8 x 98 px crops (257 and 50 tokens) with ViT-S (6 heads) \
                and ViT-L (16 heads), and batch 8 of 518 px crops (1370 tokens) with 6 heads; head dim \
                64. FLOPs: forward 4 L^2 D per head and sequence, forward+backward 3.5x. The sgemm peak \
                (best of 1024^3 and 2048^3) is measured in the same run at the same thread count. extra_bytes \
                counts the \
                kernel's scratch and log-sum-exp; naive_extra_bytes the baseline's stored probabilities \
                and scratch. Run it on one rank (not under mpirun).
                """)

        @Option(help: "Worker threads for the kernels (and OpenBLAS threads for the sgemm peak).") var threads = 1
        @Option(help: "Timed repetitions per measurement (median reported).") var repeats = 5
        @Option(help: "Write the records as JSON to this file.") var json: String?

        func validate() throws {
            try validateOutputFiles([("--json", json)])
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
            guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        }

        func run() throws {
            var benchmark = AttentionBenchmark()
            benchmark.threads = threads
            benchmark.repeats = repeats
            let records = benchmark.run { Console.out($0) }
            Console.out(AttentionBenchmark.table(records))
            if let json { try writeJSON(records, to: json) }
        }
    }

    struct Comm: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bus bandwidth of allgather, reduce-scatter and allreduce over message sizes.",
            discussion: """
                Run under mpirun, e.g. `Launch/mpirun.sh -n 4 dinov2-fsdp bench comm --json comm.json`. \
                Sizes are bytes of the full buffer; time is the slowest rank's, median over iterations; \
                busbw = algbw*(n-1)/n for allgather and reduce-scatter, algbw*2(n-1)/n for allreduce.
                """)

        @Option(help: "Smallest full-buffer size in bytes.") var minBytes = 4 << 10
        @Option(help: "Largest full-buffer size in bytes (sizes grow 4x).") var maxBytes = 64 << 20
        @Option(help: "Most timed iterations per size.") var maxIterations = 50
        @Option(help: "Write the results as JSON to this file (rank 0).") var json: String?

        func validate() throws {
            try validateOutputFiles([("--json", json)])
            guard minBytes >= 4, maxBytes >= minBytes else {
                throw ValidationError("need 4 <= --min-bytes <= --max-bytes")
            }
            guard maxIterations >= 1 else { throw ValidationError("--max-iterations must be at least 1") }
        }

        func run() throws {
            try RankedRun.execute { comm, log in
                var benchmark = CollectiveBenchmark()
                benchmark.minBytes = minBytes
                benchmark.maxBytes = maxBytes
                benchmark.maxIterations = maxIterations
                benchmark.minIterations = min(benchmark.minIterations, maxIterations)
                log.main("collective bandwidth on \(comm.worldSize) rank(s), host \(comm.hostName)")
                let records = try benchmark.run(on: comm)
                log.main(CollectiveBenchmark.table(records))
                if let json, comm.rank == 0 {
                    try writeJSON(
                        CommReport(worldSize: comm.worldSize, host: comm.hostName, records: records), to: json)
                }
            }
        }
    }

    struct CommReport: Codable {
        var worldSize: Int
        var host: String
        var records: [CollectiveBandwidth]
        enum CodingKeys: String, CodingKey {
            case worldSize = "world_size"
            case host, records
        }
    }

    struct Kernels: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "ViT kernels and the ViT-S/14 backbone forward+backward against sgemm, single thread.",
            discussion: """
                Linear layers on ViT-S/14 token shapes against plain OpenBLAS sgemm on the same shapes \
                (sgemm_ratio); LayerNorm and GELU throughput; the whole backbone forward+backward on \
                2 x 224 px + 8 x 98 px crops per image, with model FLOP/s against the sgemm (best of 1024^3, 2048^3) \
                peak measured in the same run (peak_ratio). Run it on one rank (not under mpirun).
                """)
        @Option(help: "Images (each 2 global + 8 local crops) in the backbone measurement.") var images = 2
        @Option(help: "Timed repetitions per measurement (median reported).") var repeats = 5
        @Option(help: "Write the records as JSON to this file.") var json: String?

        func validate() throws {
            try validateOutputFiles([("--json", json)])
            guard images >= 1, repeats >= 1 else { throw ValidationError("--images and --repeats must be at least 1") }
        }

        func run() throws {
            var benchmark = KernelBenchmark()
            benchmark.images = images
            benchmark.repeats = repeats
            let records = try benchmark.run { Console.out($0) }
            Console.out(KernelBenchmark.table(records))
            if let json { try writeJSON(records, to: json) }
        }
    }

    struct Step: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Full training steps (synthetic crops, or real images with --data): images/s per rank, MFU, time "
                + "split, peak RSS.",
            discussion: """
                Runs --warmup untimed and --steps timed steps of the configured model with the sharded \
                runtime on synthetic crops (no data loading: data wait is 0), or on the images of --data \
                through the training loader (the wait for each batch is part of the step), e.g. \
                `Launch/mpirun.sh -n 2 dinov2-fsdp bench step --config Configs/vits14.yaml --steps 3`. \
                FLOPs per step are counted from the architecture (linear layers, attention, patch \
                embedding, heads; student forward+backward, teacher forward); MFU is against the peak \
                of the cores the run uses, measured per node before the steps with the node's other \
                ranks idle: sgemm (best of 1024^3, 2048^3), or the bf16 GEMM peak when a module \
                computes in bf16.
                """)
        @OptionGroup var options: ConfigOptions
        @Option(help: "Timed steps.") var steps = 5
        @Option(help: "Untimed warm-up steps.") var warmup = 1
        @Option(help: "Worker threads per rank for attention (OpenBLAS stays single-threaded inside).") var threads = 1
        @Option(help: "Write the report as JSON to this file (rank 0).") var json: String?
        @Option(help: "Train on these images (ImageFolder or list file) instead of synthetic crops.") var data: String?
        @OptionGroup var memory: MemoryCheckOptions

        func validate() throws {
            try validateOutputFiles([("--json", json)])
            guard steps >= 1, warmup >= 0, threads >= 1 else {
                throw ValidationError("need --steps >= 1, --warmup >= 0, --threads >= 1")
            }
        }

        func run() throws {
            let loaded = try options.load()
            try RankedRun.execute { comm, log in
                let config = try loaded.resolved(worldSize: comm.worldSize).resolvingDistillation()
                let dataset = try data.map { try ImageDataset(path: $0) }
                // Synthetic steps: their masks, hence the heads' rows, are known before the steps run.
                let masked =
                    dataset == nil
                    ? syntheticMaskedTokens(
                        config, seed: 0, iterations: 0..<(warmup + steps), worldSize: comm.worldSize)
                    : nil
                let prediction = try MemoryCheck.run(
                    config: config, comm: comm, threads: threads, options: memory, log: log, maskedTokens: masked)
                let r = try StepBenchmark.run(
                    config: config, communicator: comm, steps: steps, warmup: warmup, seed: 0,
                    threads: threads, data: dataset, prediction: prediction)
                func f(_ v: Double, _ d: Int = 3) -> String { String(format: "%.\(d)f", v) }
                log.main(
                    """
                    \(r.computePrecision ?? "fp32")
                    \(config.student.arch) on \(r.worldSize) rank(s), \(r.imagesPerRank) images per rank, median of \
                    \(r.steps) steps:
                      images/s \(f(r.imagesPerSecond, 2)) (per rank \(f(r.imagesPerSecondPerRank, 2))), tokens/s \
                    \(f(r.tokensPerSecond, 0))
                      model GFLOP/s \(f(r.modelGFLOPsPerSecond, 1)), MFU \(f(r.mfu)) of \
                    \(r.bf16PeakGFLOPs.map { f($0, 1) + " bf16" } ?? f(r.sgemmPeakGFLOPs, 1) + " sgemm") GFLOP/s \
                    (the peak of the run's cores, measured uncontended)
                      step \(f(r.timeStep)) s: compute \(f(r.timeCompute)), comm exposed \
                    \(f(r.timeCommunicationExposed)) of \(f(r.timeCommunicationTotal)) (gathers \
                    \(f(r.timeCommunicationExposedGathers)), reductions \
                    \(f(r.timeCommunicationExposedReductions)), objective \
                    \(f(r.timeCommunicationExposedObjective))), optimizer \(f(r.timeOptimizer)), EMA \
                    \(f(r.timeEMA)), data wait \(f(r.timeDataWait)) (\(f(100 * r.timeDataWait / r.timeStep, 1)) %)
                      phases: teacher forward \(f(r.timeTeacherForward ?? 0)), student forward + loss \
                    \(f(r.timeStudentForward ?? 0)), backward \(f(r.timeBackward ?? 0)), optimizer \
                    \(f(r.timeOptimizer)), EMA \(f(r.timeEMA)) (each with the communication it waited for)
                      peak RSS per rank (MiB): \(r.rssBytesPerRank.map { String($0 >> 20) }.joined(separator: " ")) \
                    (activation checkpointing \(r.activationCheckpointing == true ? "on" : "off"))
                    """)
                if let measured = r.memory, let predicted = r.memoryPredicted {
                    log.main(
                        memoryTable(predicted: predicted, measured: measured, peakRSS: r.rssBytesPerRank.max() ?? 0))
                }
                if let json, comm.rank == 0 { try writeJSON(r, to: json) }
            }
        }
    }
}

extension BenchCommand.Step {
    /// The prediction next to rank 0's buffers, by category, and the total against peak RSS.
    func memoryTable(predicted: [MemoryCategory], measured: [MemoryCategory], peakRSS: Int) -> String {
        var lines = ["  memory per rank (MiB): predicted / rank 0's buffers"]
        for category in predicted {
            let seen = measured.first { $0.name == category.name }.map { String($0.bytes >> 20) } ?? "-"
            lines.append("    \(category.name): \(category.bytes >> 20) / \(seen)")
        }
        let total: Int = predicted.reduce(0) { $0 + $1.bytes }
        let buffers: Int = measured.reduce(0) { $0 + $1.bytes }
        let error: Double = 100 * (Double(total) / Double(Swift.max(1, peakRSS)) - 1)
        let signed = String(format: "%+.1f", error)
        lines.append(
            "    total: \(total >> 20) predicted, \(buffers >> 20) in buffers; peak RSS \(peakRSS >> 20) "
                + "(largest rank): \(signed) %")
        return lines.joined(separator: "\n")
    }
}

extension BenchCommand {
    struct Curation: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "curation",
            abstract: "Exact and inverted-index nearest-neighbour search of the curation stages on generated features.",
            discussion: """
                Generates --pool unit vectors of --dimension around --classes directions (and --queries more of \
                the same classes), sharded over the job's ranks, then times the exact search, the inverted \
                index's training and filling, and its search at every --probes count with recall@--k against \
                the exact answers, e.g. `Launch/mpirun.sh -n 2 dinov2-fsdp bench curation --pool 1000000`.
                """)
        @Option(help: "Pool vectors.") var pool = 100_000
        @Option(help: "Dimension of the vectors.") var dimension = 384
        @Option(help: "Query vectors.") var queries = 1000
        @Option(help: "Directions the vectors gather around (default pool / 1000).") var classes: Int?
        @Option(help: "Neighbours per query (recall@k).") var k = 10
        @Option(help: "Inverted lists (default 4 sqrt(pool)).") var lists: Int?
        @Option(help: "Lists visited per query, comma-separated.") var probes = "4,16,64"
        @Option(help: "Seed of the generated vectors and of the k-means.") var seed: UInt64 = 0
        @Option(help: "Timed repetitions of each search (the median counts).") var repeats = 3
        @Option(help: "Folder for pool.f32 and queries.f32 (raw float32, 1 rank), to time another library.")
        var dump: String?
        @Option(help: "Write the report as JSON to this file.") var json: String?

        func validate() throws {
            try validateOutputFiles([("--json", json)])
            guard pool >= 1, dimension >= 1, queries >= 1, k >= 1, (lists ?? 1) >= 1, repeats >= 1 else {
                throw ValidationError("--pool, --dimension, --queries, --k, --lists and --repeats must be positive")
            }
            guard probeCounts.count == probes.split(separator: ",").count, probeCounts.allSatisfy({ $0 > 0 }) else {
                throw ValidationError("--probes must be positive integers separated by commas (got \(probes))")
            }
        }

        var probeCounts: [Int] { probes.split(separator: ",").compactMap { Int($0) } }

        func run() throws {
            try RankedRun.execute { comm, log in
                let report = try CurationBenchmark.run(
                    pool: pool, dimension: dimension, queries: queries, classes: classes ?? Swift.max(1, pool / 1000),
                    k: k, lists: lists ?? IVFIndex.defaultLists(poolSize: pool), probes: probeCounts, seed: seed,
                    repeats: repeats, dump: dump, communicator: comm, log: { log.main($0) })
                if comm.rank == 0, let json { try writeJSON(report, to: json) }
            }
        }
    }

    struct Data: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "data",
            abstract: "Decode + multi-crop images/s per core, and the share of a training step it costs.",
            discussion: """
                Without --data, writes --images 500x375 JPEGs (quality 90) to a temporary folder. Times \
                --passes passes of read + decode, and of read + decode + the config's multi-crop pipeline \
                (every augmentation, normalisation) on one thread; then --steps training steps of the config \
                on synthetic crops on one thread, e.g. `dinov2-fsdp bench data --config Configs/vits14.yaml \
                train.batch_size_per_gpu=2`. The share is pipeline seconds per image over step seconds per image.
                """)
        @OptionGroup var options: ConfigOptions
        @Option(help: "Images to time (ImageFolder or list file); default: generated 500x375 JPEGs.") var data: String?
        @Option(help: "Generated images when --data is not given.") var images = 64
        @Option(help: "Passes over the images (the median counts).") var passes = 3
        @Option(help: "Timed training steps for the share (0: skip).") var steps = 2
        @Option(help: "Write the report as JSON to this file.") var json: String?

        func validate() throws {
            try validateOutputFiles([("--json", json)])
            guard images >= 1, passes >= 1, steps >= 0 else {
                throw ValidationError("need --images >= 1, --passes >= 1, --steps >= 0")
            }
        }

        func run() throws {
            let config = try options.load().resolved(worldSize: 1)
            do {
                var files: [String]
                var generated: String?
                if let data {
                    files = try ImageDataset(path: data).samples.map(\.path)
                } else {
                    let folder = NSTemporaryDirectory() + "dinov2-bench-data-\(getpid())"
                    generated = folder
                    Console.out("writing \(images) 500x375 JPEGs to \(folder)")
                    files = try DataBenchmark.writeJPEGs(count: images, width: 500, height: 375, folder: folder)
                }
                defer { if let generated { try? FileManager.default.removeItem(atPath: generated) } }
                let r = try DataBenchmark.run(files: files, config: config, passes: passes, stepSteps: steps) {
                    Console.out($0)
                }
                Console.out(
                    String(
                        format: "%d images, mean %.0f x %.0f: decode %.1f images/s per core, decode + multi-crop "
                            + "(2 x %d + %d x %d) %.1f images/s per core", r.images, r.meanWidth, r.meanHeight,
                        r.decodeImagesPerSecond,
                        config.crops.globalCropsSize, config.crops.localCropsNumber, config.crops.localCropsSize,
                        r.pipelineImagesPerSecond))
                if r.stepSecondsPerImage > 0 {
                    Console.out(
                        String(
                            format: "share of a %@ training step (per image, one core): %.2f %%",
                            config.student.arch.rawValue,
                            100 * r.shareOfStep))
                }
                if let json { try writeJSON(r, to: json) }
            } catch {
                Console.write("error: \(error)\n", to: 2)
                throw ExitCode.failure
            }
        }
    }
}

extension BenchCommand {
    struct ScalingReportCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "scaling-report",
            abstract: "Summarise a scaling sweep folder (Benchmarks/scaling-sweep.sh) as scaling.csv and scaling.svg.")
        @Argument(help: "Folder of {weak,strong}-STRATEGY-N.json reports from bench step.") var folder: String
        @Option(help: "Title of the picture.") var title = "Scaling"
        @Option(help: "Cores the sweep ran on (default: this machine's); draws the efficiency they allow.") var cores:
            Int?

        func run() throws {
            do {
                let cores = self.cores ?? ProcessInfo.processInfo.activeProcessorCount
                Console.write(try ScalingReport.write(folder: folder, title: title, cores: cores), to: 1)
                Console.out("wrote \(folder)/scaling.csv and \(folder)/scaling.svg")
            } catch {
                Console.write("error: \(error.localizedDescription)\n", to: 2)
                throw ExitCode.failure
            }
        }
    }
}

extension BenchCommand {
    struct LearningReportCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "learning-report",
            abstract: "Learning curves of runs side by side (Benchmarks/learning.sh): learning.csv and learning.svg.",
            discussion: """
                Each --run is NAME=PATH, PATH a training output folder or a metrics.jsonl file (the \
                official-modules reference script writes the same fields), e.g. `dinov2-fsdp bench \
                learning-report --run ours=runs/learn --run official=runs/learn-official.jsonl --output out`.
                """)
        @Option(name: .customLong("run"), help: "NAME=PATH of a run's metrics (repeatable).") var runs: [String]
        @Option(help: "Folder for learning.csv and learning.svg.") var output: String
        @Option(help: "Prototypes of the DINO head (draws ln K and 0.9 ln K on the entropy panel).")
        var prototypes: Int?
        @Option(help: "Title of the picture.") var title = "Learning"

        func run() throws {
            do {
                let parsed = try runs.map { spec -> LearningReport.Run in
                    guard let cut = spec.firstIndex(of: "="), cut != spec.startIndex else {
                        throw ValidationError("--run \(spec): expected NAME=PATH, e.g. ours=runs/learn")
                    }
                    let name = String(spec[..<cut]), path = String(spec[spec.index(after: cut)...])
                    return try LearningReport.Run(name: name, path: path)
                }
                let summary = try LearningReport.write(parsed, folder: output, title: title, prototypes: prototypes)
                Console.out(summary)
                Console.out("wrote \(output)/learning.csv and \(output)/learning.svg")
            } catch let error as ValidationError {
                throw error
            } catch {
                Console.write("error: \(error)\n", to: 2)
                throw ExitCode.failure
            }
        }
    }
}
