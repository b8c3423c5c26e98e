// Chooses the world communicator: MPI when the process was started by an MPI launcher (mpirun,
// srun with PMI/PMIx), the single-process communicator otherwise. DINO_COMM=mpi|single forces one.

import DinoCore
import Foundation

/// Builds the communicator a command runs on.
public enum CommunicatorFactory {
    /// True when an MPI launcher started this process.
    public static var launchedByMPI: Bool {
        let environment = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"].contains {
            environment[$0] != nil
        }
    }

    /// Returns the world communicator for this process.
    public static func world() throws -> any Communicator {
        switch ProcessInfo.processInfo.environment["DINO_COMM"] {
        case "mpi": return try MPICommunicator.initializeWorld()
        case "single": return SingleProcessCommunicator()
        case nil, "": return launchedByMPI ? try MPICommunicator.initializeWorld() : SingleProcessCommunicator()
        case let other?:
            throw CommunicatorError.invalidArgument("DINO_COMM=\(other) is not one of mpi, single")
        }
    }

    /// Ends MPI if this process started it.
    public static func finish(_ communicator: any Communicator) {
        if communicator is MPICommunicator { MPICommunicator.finalize() }
    }
}
