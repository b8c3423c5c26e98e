// `dinov2-fsdp selftest`: checks of the MPI set-up that users run on a new machine or cluster, and
// that the test suite runs under mpirun at several rank counts.

import ArgumentParser
import DinoBench
import DinoCore
import DinoKernels
import DinoTraining

struct SelftestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check that collectives and failure handling work on this machine or cluster.",
        subcommands: [Collectives.self, Sharding.self, Abort.self])

    struct Sharding: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sharding",
            abstract: "Train a few steps on synthetic crops with the sharded runtime and report losses and parameters.",
            discussion: """
                The global batch (batch_size_per_gpu x ranks) is drawn by global image index, so runs \
                at different rank counts with the same global batch must agree: compare their --json \
                outputs. Use drop path 0 and KoLeo weight 0 for such comparisons (the official KoLeo is \
                computed per rank).
                """)
        @OptionGroup var options: ConfigOptions
        @Option(help: "Optimisation steps.") var steps = 5
        @Option(help: "Seed of the synthetic crops and the initialisation.") var seed = 0
        @Option(help: "Write losses and gathered student, teacher and frozen-teacher parameters as JSON (rank 0).")
        var json: String?
        @Option(help: "Save a checkpoint into this folder after --save-at steps.") var checkpoint: String?
        @Option(help: "Steps after which to save the checkpoint.") var saveAt: Int?
        @Option(help: "Resume from this checkpoint folder, then run --steps more steps.") var resume: String?

        func validate() throws { try validateOutputFiles([("--json", json)]) }

        func run() throws {
            let loaded = try options.load()
            try RankedRun.execute { comm, log in
                BLAS.threadCount = 1
                let config = try loaded.resolved(worldSize: comm.worldSize).resolvingDistillation()
                let model = try SelfDistillation(config: config, communicator: comm, seed: UInt64(seed))
                var first = 0
                if let resume {
                    first = try model.loadCheckpoint(from: resume)
                    log.main("resumed from \(resume) at iteration \(first)")
                }
                var losses: [StepLosses] = []
                if let checkpoint, let saveAt, saveAt <= steps {
                    losses += try runSyntheticSteps(
                        model, steps: saveAt, seed: UInt64(seed), communicator: comm,
                        firstIteration: first)
                    try model.saveCheckpoint(to: checkpoint, iteration: first + saveAt)
                    log.main("saved \(checkpoint) at iteration \(first + saveAt)")
                    losses += try runSyntheticSteps(
                        model, steps: steps - saveAt, seed: UInt64(seed), communicator: comm,
                        firstIteration: first + saveAt)
                } else {
                    losses = try runSyntheticSteps(
                        model, steps: steps, seed: UInt64(seed), communicator: comm,
                        firstIteration: first)
                }
                for (i, l) in losses.enumerated() {
                    log.main(
                        "step \(i + 1): loss \(l.total) (dino local \(l.dinoLocal), dino global \(l.dinoGlobal), "
                            + "ibot \(l.ibot), koleo \(l.koleo), copy \(l.copy))"
                    )
                }
                // Memory accounting of this rank: shard elements of student, gradients, teacher and the
                // two AdamW moments, against the unsharded and padded totals; peak gathered units.
                var shardElements = 0, fullElements = 0, paddedElements = 0, peak = 0
                for part in model.parts {
                    for u in part.table.units.indices {
                        shardElements += 5 * part.student.plan.shardCount(u)
                        fullElements += 5 * part.table.units[u].count
                        paddedElements += 5 * part.student.plan.paddedCount(u)
                    }
                    peak = max(peak, part.student.peakGatheredUnits, part.teacher.peakGatheredUnits)
                }
                var perRank = [Int64](repeating: 0, count: 2 * comm.worldSize)
                try [Int64(shardElements), Int64(peak)].withUnsafeBufferPointer { mine in
                    try perRank.withUnsafeMutableBufferPointer { try comm.allGather(mine, into: $0) }
                }
                var parameters: [String: [Float]] = [:]
                for part in model.parts {
                    for entry in part.table.entries {
                        parameters["student/\(part.name)/\(entry.name)"] = try part.student.gatherTensor(entry.name)
                        parameters["teacher/\(part.name)/\(entry.name)"] = try part.teacher.gatherTensor(entry.name)
                    }
                }
                for (name, store) in model.distillationTeacher?.stores ?? [] {
                    for entry in store.table.entries {
                        parameters["frozen_teacher/\(name)/\(entry.name)"] = try store.gatherTensor(entry.name)
                    }
                }
                if let json, comm.rank == 0 {
                    let report = ShardingReport(
                        worldSize: comm.worldSize, strategy: config.fsdp.shardingStrategy.rawValue,
                        losses: losses.map(\.terms),
                        parameters: parameters, unshardedElements: fullElements,
                        paddedElements: paddedElements,
                        shardElements: (0..<comm.worldSize).map { Int(perRank[2 * $0]) },
                        peakGatheredUnits: (0..<comm.worldSize).map { Int(perRank[2 * $0 + 1]) })
                    try writeJSON(report, to: json)
                }
            }
        }
    }

    struct ShardingReport: Codable {
        var worldSize: Int
        var strategy: String
        var losses: [[Double]]
        var parameters: [String: [Float]]
        var unshardedElements: Int
        var paddedElements: Int
        var shardElements: [Int]
        var peakGatheredUnits: [Int]
        enum CodingKeys: String, CodingKey {
            case worldSize = "world_size"
            case strategy, losses, parameters
            case unshardedElements = "unsharded_elements"
            case paddedElements = "padded_elements"
            case shardElements = "shard_elements"
            case peakGatheredUnits = "peak_gathered_units"
        }
    }

    struct Collectives: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run every collective (blocking, in-place, nonblocking with overlap, sub-groups) and verify it.")

        func run() throws {
            try RankedRun.execute { comm, log in
                BLAS.threadCount = 1  // ranks share the cores; see Launch/mpirun.sh
                var check = CollectiveSelfCheck(comm)
                let start = MonotonicClock.seconds()
                let report = try check.run()
                for failure in report.failures { log.all("FAILED: \(failure)") }
                let counts = try comm.allReduce([Int64(report.passed), Int64(report.failures.count)], op: .sum)
                let seconds = MonotonicClock.seconds() - start
                log.main(
                    "collectives on \(comm.worldSize) rank(s): \(counts[0]) passed, \(counts[1]) failed"
                        + " (\(Int(seconds * 1000)) ms)")
                if counts[1] > 0 { throw ExitCode.failure }
            }
        }
    }

    struct Abort: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fail on one rank while the others wait in a barrier: the job must end, not hang.",
            shouldDisplay: false)

        @Option(help: "The rank that fails.") var failingRank = 0

        func run() throws {
            try RankedRun.execute { comm, log in
                if comm.rank == failingRank % comm.worldSize {
                    throw SelftestFailure(message: "deliberate failure for the abort self-test")
                }
                try comm.barrier()  // never completes: the failing rank aborts the job
                log.main("barrier completed although a rank failed")
            }
        }
    }

    struct SelftestFailure: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }
}
