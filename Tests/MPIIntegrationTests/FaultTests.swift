// The fault matrix of a 2-rank training job, each with its outcome (the README's reliability section
// states the same): a rank killed mid-step ends the job with a message naming it, and the next run
// resumes from the last complete checkpoint; SIGTERM during a save completes that save and stops
// cleanly; a checkpoint with a bad manifest or a missing rank file is passed over for the previous
// one; a disk too full for the next save stops the job before writing it, naming the path, and
// leaves the previous checkpoint intact; a rank stopped with SIGSTOP is named by the collective
// timeout instead of hanging the job;
// unreadable images are reported with the run's total over ranks and every file named.

import DinoTestSupport
import Foundation
import Testing

@Suite("faults of a training job", .serialized)
struct FaultTests {
    let root: URL

    init() throws {
        root = try TestPaths.temporaryDirectory()
        try TrainingRuns.synthesize(into: root.path)
    }

    func arguments(_ output: String, _ extra: [String] = []) -> [String] {
        ["train", "--config", "Configs/tests/tiny.yaml", "--data", root.path + "/train", "--output", output] + extra
    }

    func complete(_ output: String) -> [String] {
        let folder = output + "/checkpoints"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted().filter {
            FileManager.default.fileExists(atPath: "\(folder)/\($0)/manifest.json")
        }
    }

    /// Waits until `condition` holds or `seconds` pass; returns whether it held.
    func wait(_ seconds: Double, for condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() > deadline { return false }
            usleep(2_000)
        }
        return true
    }

    /// Waits for `job` to end (at most `seconds`, then kills it); returns whether it ended by itself.
    func finish(_ job: Process, within seconds: Double) -> Bool {
        let ended = wait(seconds) { !job.isRunning }
        if !ended {
            job.terminate()
            job.waitUntilExit()
        }
        return ended
    }

    @Test("a rank killed mid-step: the job ends naming it, the next run resumes from the last checkpoint")
    func rankKilledMidStep() throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let output = root.path + "/run", log = root.appendingPathComponent("job.log")
        let long = ["train.OFFICIAL_EPOCH_LENGTH=2000", "checkpointing.period=500"]
        let job = try ProcessRunner.startMPI(ranks: 2, arguments(output, long), log: log)
        let started = wait(120) { complete(output).contains("checkpoint-00000500") }
        let ranks = ProcessRunner.rankProcesses(writing: output)
        try #require(started && ranks.count == 2 && job.isRunning, "the run did not get past its first checkpoint")
        kill(ranks[1], SIGKILL)
        #expect(finish(job, within: 60), "the job hung after a rank died")
        #expect(job.terminationStatus != 0)
        let text = try String(contentsOf: log, encoding: .utf8)
        #expect(text.contains("exited on signal 9"), "\(text.suffix(2000))")
        let last = try #require(complete(output).last)
        let again = try ProcessRunner.mpirun(ranks: 2, arguments(output, long), timeout: 300)
        #expect(
            again.status == 0 && again.stdout.contains("resumed from \(output)/checkpoints/\(last)"), "\(again.stdout)")
        #expect(again.stdout.contains("finished at iteration 4000"))
    }

    @Test("SIGTERM during a save: the save completes, the job stops cleanly, every checkpoint verifies")
    func sigtermDuringSave() throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let output = root.path + "/run"
        let every = ["train.OFFICIAL_EPOCH_LENGTH=2000", "checkpointing.period=1", "checkpointing.max_to_keep=1000"]
        // The launcher forwards SIGTERM to every rank; the signal must land while a save is being written.
        var hit = false
        for attempt in 0..<6 where !hit {
            let job = try ProcessRunner.startMPI(ranks: 2, arguments(output + "-\(attempt)", every))
            let mine = output + "-\(attempt)"
            hit = wait(60) {
                ((try? FileManager.default.contentsOfDirectory(atPath: mine + "/checkpoints")) ?? []).contains {
                    $0 >= "checkpoint-00000003"
                        && !FileManager.default.fileExists(atPath: "\(mine)/checkpoints/\($0)/manifest.json")
                }
            }
            kill(job.processIdentifier, SIGTERM)
            #expect(finish(job, within: 60), "the job did not stop after SIGTERM")
            #expect(job.terminationStatus == 0)
            // Whatever the timing: no half-written checkpoint is left, and each one verifies.
            let folders = try FileManager.default.contentsOfDirectory(atPath: mine + "/checkpoints").sorted()
            #expect(folders == complete(mine), "a save was left unfinished: \(folders)")
            if let newest = folders.last {
                let verify = try ProcessRunner.dinov2(["checkpoint", "verify", mine + "/checkpoints/" + newest])
                #expect(verify.status == 0, "\(verify.stderr)")
            }
        }
        #expect(hit, "SIGTERM never landed during a save in 6 attempts")
    }

    @Test("a bad manifest, then a missing rank file, in the newest checkpoint: the previous one is used")
    func damagedNewestCheckpoint() throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let straightFolder = root.path + "/straight"
        #expect(try ProcessRunner.mpirun(ranks: 2, arguments(straightFolder), timeout: 240).status == 0)
        let straight = try TrainingRuns.records(straightFolder)
        for damage in ["manifest", "rank file"] {
            let output = root.path + "/run-" + damage.replacingOccurrences(of: " ", with: "-")
            let first = try ProcessRunner.mpirun(ranks: 2, arguments(output, ["train.stop_iteration=6"]), timeout: 240)
            try #require(first.status == 0, "\(first.stderr)")
            let newest = output + "/checkpoints/checkpoint-00000006"
            if damage == "manifest" {
                try "{ \"format\": ".write(toFile: newest + "/manifest.json", atomically: true, encoding: .utf8)
            } else {
                try FileManager.default.removeItem(atPath: newest + "/rank-00001.h5")
            }
            let again = try ProcessRunner.mpirun(ranks: 2, arguments(output), timeout: 240)
            #expect(again.status == 0, "\(again.stderr)")
            #expect(again.stderr.contains("passing over \(newest)"), "\(damage): \(again.stderr)")
            #expect(again.stdout.contains("resumed from \(output)/checkpoints/checkpoint-00000004"), "\(again.stdout)")
            // The replayed steps 5-8 equal the straight run's.
            let resumed = try TrainingRuns.records(output).filter { ($0["iteration"] as? Int ?? 0) > 4 }.suffix(4)
            for (a, b) in zip(resumed, straight.suffix(4)) {
                #expect(a["loss"] as? Double == b["loss"] as? Double, "\(damage): loss at \(a["iteration"] ?? "?")")
            }
        }
    }

    @Test("a disk too full for a save: the job stops naming the path, the previous checkpoint stays intact")
    func fullDisk() throws {
        defer { try? FileManager.default.removeItem(at: root) }
        guard getuid() == 0 else {
            print("skipped: mounting a small tmpfs needs root")
            return
        }
        let mount = root.path + "/small"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let mounted = try ProcessRunner.run(
            URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "size=2600k", "tmpfs", mount])
        guard mounted.status == 0 else {
            print("skipped: cannot mount a tmpfs here (\(mounted.stderr))")
            return
        }
        defer { _ = try? ProcessRunner.run(URL(fileURLWithPath: "/bin/umount"), [mount]) }
        let output = mount + "/run"
        let result = try ProcessRunner.mpirun(
            ranks: 2, arguments(output, ["checkpointing.max_to_keep=100", "train.OFFICIAL_EPOCH_LENGTH=40"]),
            timeout: 240)
        #expect(result.status != 0, "the disk never filled")
        let text = result.stdout + result.stderr
        #expect(text.contains("no space left for checkpoint \(output)/checkpoints/"), "\(text.suffix(3000))")
        #expect(!text.contains("Error Domain="), "a raw Foundation error: \(text.suffix(3000))")
        let kept = complete(output)
        try #require(!kept.isEmpty, "no checkpoint was saved before the disk filled")
        let verify = try ProcessRunner.dinov2(["checkpoint", "verify", output + "/checkpoints/" + kept.last!])
        #expect(verify.status == 0, "\(verify.stderr)")
    }

    @Test("a rank stopped with SIGSTOP: the collective timeout names it and ends the job")
    func hungRank() throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let output = root.path + "/run", log = root.appendingPathComponent("job.log")
        let job = try ProcessRunner.startMPI(
            ranks: 2,
            arguments(output, ["train.OFFICIAL_EPOCH_LENGTH=100000", "train.collective_timeout=4"]), log: log)
        let running = wait(120) { ((try? TrainingRuns.records(output)) ?? []).count >= 5 }
        let ranks = ProcessRunner.rankProcesses(writing: output)
        try #require(running && ranks.count == 2, "the run did not start")
        kill(ranks[1], SIGSTOP)
        defer { kill(ranks[1], SIGKILL) }
        let start = Date()
        #expect(finish(job, within: 90), "the job hung with rank 1 stopped")
        let seconds = Date().timeIntervalSince(start)
        #expect(job.terminationStatus != 0)
        let text = try String(contentsOf: log, encoding: .utf8)
        #expect(
            text.contains("[rank 0] error:") && text.contains("rank(s) 1 (last heartbeat")
                && text.contains("stopped responding"), "\(text.suffix(2000))")
        #expect(seconds < 60, "detected after \(seconds) s with a 4 s timeout")
    }

    @Test("unreadable images: the run's total over ranks and every file named at the end")
    func unreadableImages() throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let classes = try FileManager.default.contentsOfDirectory(atPath: root.path + "/train").sorted()
        var broken: [String] = []
        for name in classes.prefix(2) {
            let folder = root.path + "/train/" + name
            let file = folder + "/" + (try FileManager.default.contentsOfDirectory(atPath: folder).sorted()[0])
            try Data("not an image".utf8).write(to: URL(fileURLWithPath: file))
            broken.append(file)
        }
        let output = root.path + "/run"
        let result = try ProcessRunner.mpirun(ranks: 2, arguments(output), timeout: 240)
        #expect(result.status == 0, "\(result.stderr)")
        let training = try TrainingRuns.records(output).filter { $0["loss"] != nil }
        let perRecord = training.map { $0["skipped_images"] as? Int ?? -1 }
        let totals = training.map { $0["skipped_images_total"] as? Int ?? -1 }
        // Each record's count is over both ranks; the total adds them up.
        var running = 0
        #expect(
            totals
                == perRecord.map {
                    running += $0
                    return running
                }, "\(perRecord) \(totals)")
        #expect((totals.last ?? 0) > 0)
        #expect(result.stderr.contains("2 unreadable training image(s) were skipped"), "\(result.stderr)")
        for file in broken { #expect(result.stderr.contains(file)) }
        let listed = try String(contentsOfFile: output + "/unreadable-images.txt", encoding: .utf8)
        #expect(listed.split(separator: "\n").map(String.init) == broken.sorted())
    }
}
