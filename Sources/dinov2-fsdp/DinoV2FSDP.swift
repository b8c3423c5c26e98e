// The `dinov2-fsdp` command line: subcommands only; each turns its flags into library values and
// calls the library. No math lives here.

import ArgumentParser

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
            TrainCommand.self, BenchCommand.self, EvalCommand.self, EmbedCommand.self, PCACommand.self, PlotCommand.self,
            CheckpointCommand.self, DataCommand.self, ConfigCommand.self, SelftestCommand.self,
        ])
}
