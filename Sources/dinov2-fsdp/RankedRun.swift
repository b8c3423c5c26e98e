// Runs a command body on every rank with the world communicator, and turns any error into one
// message naming the rank plus a job-wide abort, so one failing rank never leaves the others hanging.

import ArgumentParser
import DinoConfig
import DinoCore
import DinoDistributed
import Foundation

enum RankedRun {
    /// Runs `body` with the world communicator; finalises MPI on success.
    static func execute(_ body: (any Communicator, Log) throws -> Void) throws {
        let comm: any Communicator
        do {
            comm = try CommunicatorFactory.world()
        } catch {
            Log(rank: LaunchEnvironment.rank, worldSize: LaunchEnvironment.worldSize).error("\(error)")
            throw ExitCode.failure
        }
        let log = Log(rank: comm.rank, worldSize: comm.worldSize)
        do {
            try body(comm, log)
        } catch let exitCode as ExitCode {
            // An ExitCode is a decision every rank reached together (e.g. after an all-reduce of
            // failure counts): end normally with that status instead of aborting the job.
            CommunicatorFactory.finish(comm)
            exit(exitCode.rawValue)
        } catch {
            log.error("\(error)")
            fail(comm, exitCode: 1)
        }
        CommunicatorFactory.finish(comm)
    }

    private static func fail(_ comm: any Communicator, exitCode: Int32) -> Never {
        if comm.worldSize > 1 { comm.abort(exitCode: exitCode) }
        CommunicatorFactory.finish(comm)
        exit(exitCode)
    }

    /// Loads the layered config before MPI starts; on error prints one message (rank 0) and exits 1.
    static func loadConfig(file: String?, overrides: [String]) throws -> TrainingConfig {
        do {
            return try ConfigLoader.load(file: file, overrides: overrides)
        } catch {
            if LaunchEnvironment.rank == 0 {
                Console.write("error: \(error)\n", to: 2)
            } else {
                // Every rank reaches the same error; the others give rank 0 time to print it before
                // their exit status makes the launcher kill the job (rank 0 usually ends it first).
                sleep(5)
            }
            throw ExitCode.failure
        }
    }
}

/// What the launcher tells a process about its place in the job, read before MPI starts.
enum LaunchEnvironment {
    static var rank: Int { integer(["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"]) ?? 0 }
    static var worldSize: Int { integer(["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"]) ?? 1 }

    private static func integer(_ names: [String]) -> Int? {
        let environment = ProcessInfo.processInfo.environment
        return names.lazy.compactMap { environment[$0].flatMap(Int.init) }.first
    }
}

/// Options shared by every command that reads a training config.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "YAML file layered on the official defaults (e.g. Configs/vits14.yaml).")
    var config: String?

    @Argument(help: "Overrides as dotted section.key=value, applied last (e.g. optim.base_lr=0.002).")
    var overrides: [String] = []

    func load() throws -> TrainingConfig {
        try RankedRun.loadConfig(file: config, overrides: overrides)
    }
}
