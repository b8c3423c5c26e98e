// The `dinov2-fsdp` command line: subcommands only; each turns its flags into library values and
// calls the library. No math lives here.

import ArgumentParser
import DinoKernels
import Foundation

@main
struct DinoV2FSDP: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dinov2-fsdp",
        abstract: "Train DINOv2 self-supervised Vision Transformers across MPI ranks, on CPUs.",
        discussion: """
            Launch on several ranks with mpirun (Launch/mpirun.sh adds the flags that root and \
            oversubscription need), e.g. `Launch/mpirun.sh -n 8 dinov2-fsdp train`. Without \
            mpirun every subcommand runs as a single rank through the same code path.
            """,
        subcommands: [
            TrainCommand.self, BenchCommand.self, EvalCommand.self, EmbedCommand.self, CurateCommand.self,
            CalibrateCopiesCommand.self, PCACommand.self,
            PlotCommand.self, ReportCommand.self,
            CheckpointCommand.self, DataCommand.self, ConfigCommand.self, SelftestCommand.self,
        ])

    static func main() {
        relaunchWithFasterBLASIfNeeded()
        main(nil)
    }

    /// OpenBLAS picks its kernels when it is loaded, before `main`; if it fell back to generic ones on a
    /// CPU it does not know (see BLAS.preferredCoreType), start this program again with
    /// OPENBLAS_CORETYPE set. Nothing has happened yet (no MPI, no files), so the new image simply
    /// takes over the process, under mpirun as well.
    static func relaunchWithFasterBLASIfNeeded() {
        guard let core = BLAS.preferredCoreType else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", arguments)
        // execv returns only on failure: go on with the generic kernels (slower, same results).
        unsetenv("OPENBLAS_CORETYPE")
    }
}
