// `dinov2-fsdp selftest`: checks of the MPI set-up that users run on a new machine or cluster, and
// that the test suite runs under mpirun at several rank counts.

import ArgumentParser
import DinoBench
import DinoCore
import DinoKernels

struct SelftestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check that collectives and failure handling work on this machine or cluster.",
        subcommands: [Collectives.self, Abort.self])

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
                log.main("collectives on \(comm.worldSize) rank(s): \(counts[0]) passed, \(counts[1]) failed"
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
