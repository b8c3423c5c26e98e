// Refusing a run that cannot fit, before it allocates (issue: the vits14 recipe's 64 images per rank
// on 2 ranks was killed by the kernel with signal 9 and no word). The memory model's prediction for
// the ranks of a node is compared with what the node has; the run stops on every rank with one
// sentence giving both numbers and what to change, and a non-zero status; --skip-memory-check runs
// anyway with the sentence as a warning; --memory-limit replaces the node's figure.

import DinoTestSupport
import Foundation
import Testing

@Suite("memory check", .serialized)
struct MemoryCheckTests {
    @Test("vits14 at 64 images per rank on 2 ranks stops with the memory sentence, before allocating")
    func refusesTheRecipeThatWasKilled() throws {
        let result = try ProcessRunner.mpirun(
            ranks: 2, ["bench", "step", "--config", "Configs/vits14.yaml"], timeout: 120)
        let output = result.stdout + result.stderr
        #expect(result.status != 0 && !result.timedOut)
        // The whole sentence: need, the node's figure, the three changes, the override.
        for fragment in [
            "the run needs about", "2 rank(s) x", "largest: student activations", "the node has",
            "GiB available", "lower train.batch_size_per_gpu (64 now)", "set activation_checkpoint.mode=full",
            "start fewer ranks per node (2 now)", "or pass --skip-memory-check",
        ] {
            #expect(output.contains(fragment), "missing '\(fragment)' in: \(output)")
        }
        // It stopped before the model existed: no step ran, and it took seconds, not a step's minutes.
        #expect(!output.contains("images/s") && result.seconds < 60)
        #expect(!output.contains("signal 9") && !output.contains("Killed"))
    }

    @Test("--memory-limit below the prediction refuses a tiny run; --skip-memory-check runs it with a warning")
    func limitAndOverride() throws {
        let tiny = ["bench", "step", "--config", "Configs/tests/tiny.yaml", "--steps", "1", "--warmup", "0"]
        let refused = try ProcessRunner.mpirun(ranks: 2, tiny + ["--memory-limit", "64M"], timeout: 120)
        #expect(refused.status != 0)
        #expect((refused.stdout + refused.stderr).contains("but --memory-limit allows 0.1 GiB available"))
        let forced = try ProcessRunner.mpirun(
            ranks: 2, tiny + ["--memory-limit", "64M", "--skip-memory-check"], timeout: 300)
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stderr.contains("warning: the run needs about"))
        #expect(forced.stderr.contains("starting anyway (--skip-memory-check)"))
        #expect(forced.stdout.contains("images/s") && forced.stdout.contains("total:"))
        let fits = try ProcessRunner.mpirun(ranks: 2, tiny, timeout: 300)
        #expect(fits.status == 0, "\(fits.stderr)")
        #expect(fits.stdout.contains("memory: ") && fits.stdout.contains("rank(s) on this node"))
    }
}
