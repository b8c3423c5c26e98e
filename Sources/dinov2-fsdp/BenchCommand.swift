// `dinov2-fsdp bench`: benchmarks that print ratios against references measured in the same run.

import ArgumentParser
import DinoBench
import DinoCore
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks: collective bandwidth (comm); kernels and training steps (not implemented yet).",
        subcommands: [Comm.self, Kernels.self, Step.self])

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
                    let report = CommReport(worldSize: comm.worldSize, host: comm.hostName, records: records)
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    try encoder.encode(report).write(to: URL(fileURLWithPath: json))
                    log.main("wrote \(json)")
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
            abstract: "Kernel throughput against OpenBLAS sgemm (not implemented yet).")
        @Option(help: "Write the results as JSON to this file.") var json: String?
        func run() throws { try NotImplemented.fail("bench kernels", "compute core issue") }
    }

    struct Step: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Full training steps: images/s per rank, MFU, time split (not implemented yet).")
        @OptionGroup var options: ConfigOptions
        @Option(help: "Timed steps.") var steps = 10
        @Option(help: "Untimed warm-up steps.") var warmup = 2
        @Option(help: "Write the results as JSON to this file.") var json: String?
        func run() throws { try NotImplemented.fail("bench step", "benchmark harness issue") }
    }
}
