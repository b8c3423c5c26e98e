// Launch/slurm/train.sbatch on a real Slurm (slurmctld + slurmd + munged on this machine, started and
// stopped by Tests/Scripts/slurm-jobs.sh): a 2-task job that runs to its end with every metric, and a
// job whose time limit brings the template's early SIGUSR1 mid-run, which checkpoints, requeues itself,
// resumes and ends with the same losses, bit for bit, as the same run without Slurm and without a stop.
// Needs root (slurmd); installs slurm-wlm and munge when missing.

import DinoTestSupport
import Foundation
import Testing

@Suite("Slurm: the sbatch template on a local cluster")
struct SlurmTests {

    @Test("a job to its end; a job signalled before its limit: checkpoint, requeue, resume, same losses")
    func jobs() throws {
        try #require(getuid() == 0, "the local Slurm needs root (slurmd starts the jobs)")
        let root = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        try TrainingRuns.synthesize(into: root.path + "/data")
        let out = root.path + "/out"
        let script = try ProcessRunner.run(
            URL(fileURLWithPath: "/bin/bash"), ["Tests/Scripts/slurm-jobs.sh", root.path + "/data", out],
            environment: ["DINOV2_FSDP": TestPaths.executable.path], timeout: 900)
        try #require(script.status == 0, "\(script.stdout)\n\(script.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out + "/slurm/slurmctld.pid"), "the cluster is still up")

        let finished = try TrainingRuns.records(out + "/a")
        #expect(finished.count == 8 && finished.allSatisfy { $0["loss"] != nil && $0["max_rss_bytes_by_rank"] != nil })
        #expect((finished.last?["max_rss_bytes_by_rank"] as? [Int])?.count == 2, "2 ranks")

        // The same run without Slurm and without a stop.
        let reference = root.path + "/reference"
        let straight = try ProcessRunner.mpirun(
            ranks: 2,
            [
                "train", "--config", "Configs/tests/tiny.yaml", "--data", root.path + "/data/train", "--output",
                reference, "train.OFFICIAL_EPOCH_LENGTH=15000", "train.log_every=1000", "checkpointing.period=100000",
            ], timeout: 600)
        try #require(straight.status == 0, "\(straight.stderr)")
        let expected = try TrainingRuns.records(reference), preempted = try TrainingRuns.records(out + "/b")
        #expect(preempted.map { $0["iteration"] as? Int } == expected.map { $0["iteration"] as? Int })
        for (a, b) in zip(preempted, expected) {
            for key in ["loss", "dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss", "koleo_loss", "lr"] {
                #expect(a[key] as? Double == b[key] as? Double, "\(key) at iteration \(b["iteration"] ?? "?")")
            }
        }
        let checkpoints = try FileManager.default.contentsOfDirectory(atPath: out + "/b/checkpoints").sorted()
        #expect(checkpoints.count == 2 && checkpoints.last == "checkpoint-00030000", "\(checkpoints)")
    }
}
