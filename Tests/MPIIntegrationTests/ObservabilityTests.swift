// Watching a run: a 2-rank tiny run with k-NN evaluations, stopped (its last checkpoints removed) and
// resumed, then (1) its TensorBoard events read back by TensorBoard's own reader (the Python
// `tensorboard` package, which checks every record's CRC) and compared scalar by scalar with
// metrics.jsonl, and (2) its HTML report, written by `train` and by `report` under mpirun, rendered by
// headless Chromium: every section in the rendered page, a screenshot that is not blank; (3) a run
// stopped by SIGUSR1 (as Slurm's early signal does) leaves its checkpoint, events and report.

import DinoData
import DinoTestSupport
import Foundation
import Testing

@Suite("watching a run: TensorBoard events and the HTML report", .serialized)
struct ObservabilityTests {
    /// A run folder trained on 2 ranks for 8 iterations, resumed at iteration 4 (its iterations 5-8 and
    /// the final k-NN computed twice: the first ones set aside in metrics.replaced.jsonl, both in the two
    /// event files), and its dataset's root.
    static func resumedRun() throws -> (root: URL, output: String) {
        let root = try TestPaths.temporaryDirectory()
        try TrainingRuns.synthesize(into: root.path, valPerClass: 2)
        let output = root.path + "/run"
        let arguments = [
            "train", "--config", "Configs/tests/tiny.yaml", "--data", root.path + "/train", "--val",
            root.path + "/val", "--output", output, "evaluation.eval_period_iterations=4",
        ]
        for attempt in 0..<2 {
            let result = try ProcessRunner.mpirun(ranks: 2, arguments, timeout: 240)
            guard result.status == 0 else { throw TestFailure(message: result.stdout + result.stderr) }
            if attempt == 0 {
                for late in ["checkpoint-00000006", "checkpoint-00000008"] {
                    try FileManager.default.removeItem(atPath: output + "/checkpoints/" + late)
                }
            }
        }
        return (root, output)
    }

    @Test("TensorBoard's reader finds every scalar and step of metrics.jsonl, the replayed steps once")
    func tensorBoard() throws {
        let (root, output) = try Self.resumedRun()
        defer { try? FileManager.default.removeItem(at: root) }
        let files = try FileManager.default.contentsOfDirectory(atPath: output + "/tensorboard")
        #expect(files.count == 2 && files.allSatisfy { $0.hasPrefix("events.out.tfevents.") }, "\(files)")

        // Expected: each record's numbers under "group/key" (arrays one tag a rank), the last record of
        // an iteration winning, as a resumed run replaces the steps it runs again.
        let text = try String(contentsOfFile: output + "/metrics.jsonl", encoding: .utf8)
        var expected: [String: [Int: Float]] = [:]
        var keys = Set<String>()
        for line in text.split(separator: "\n") {
            let record = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let step = try #require(record["iteration"] as? Int)
            let kind = record["loss"] == nil ? "evaluation " : "training "
            for (name, value) in record where name != "iteration" {
                keys.insert(name)
                let key = kind + name
                if let number = value as? Double {
                    expected[key, default: [:]][step] = Float(number)
                } else if let numbers = value as? [Double] {
                    for (rank, number) in numbers.enumerated() {
                        expected[key + "/rank_\(rank)", default: [:]][step] = Float(number)
                    }
                }
            }
        }
        #expect(keys.contains("max_rss_bytes_by_rank") && keys.contains("knn_top1") && keys.contains("lr"))
        // The first run's records after iteration 4 (steps 5-8 and its final k-NN) were set aside.
        let replaced = try String(contentsOfFile: output + "/metrics.replaced.jsonl", encoding: .utf8)
        #expect(replaced.split(separator: "\n").count == 5, "\(replaced)")
        #expect(text.split(separator: "\n").count == 8 + 3, "each iteration once: 8 training records, 3 k-NN")

        let reader = try ProcessRunner.run(
            URL(fileURLWithPath: "/usr/bin/env"),
            ["python3", "Tests/Scripts/read_tensorboard.py", output + "/tensorboard"], timeout: 120)
        let hint = "the README's test command installs it: python3 -m pip install tensorboard"
        try #require(reader.status == 0, "TensorBoard's reader failed (\(hint)): \(reader.stderr)")
        let read = try #require(
            try JSONSerialization.jsonObject(with: Data(reader.stdout.utf8)) as? [String: [[Double]]])
        var found: [String: [Int: Float]] = [:]
        for (tag, points) in read {
            // "group/key" or "group/key/rank_N": the metrics key is what follows the group; every field of
            // an evaluation record is in the knn group, no field of a training record is.
            let kind = tag.hasPrefix("knn/") ? "evaluation " : "training "
            let key = kind + (tag.split(separator: "/", maxSplits: 1).last.map(String.init) ?? tag)
            for point in points {
                #expect(found[key]?[Int(point[0])] == nil, "\(tag) has step \(Int(point[0])) twice")
                found[key, default: [:]][Int(point[0])] = Float(point[1])
            }
        }
        #expect(Set(found.keys) == Set(expected.keys))
        var mismatches: [String] = []
        for (key, steps) in expected where found[key] != steps {
            mismatches.append("\(key): metrics \(steps.sorted { $0.key < $1.key }) events \(found[key] ?? [:])")
        }
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
    }

    @Test("the report, from train and from `report` on 2 ranks, renders in Chromium with every section")
    func report() throws {
        let chromium = "/usr/bin/chromium"
        try #require(
            FileManager.default.isExecutableFile(atPath: chromium),
            "Chromium is missing: bash Launch/install-deps.sh --test installs it")
        let (root, output) = try Self.resumedRun()
        defer { try? FileManager.default.removeItem(at: root) }
        let fromTrain = try String(contentsOfFile: output + "/report.html", encoding: .utf8)
        #expect(fromTrain.contains("data:image/png;base64,"), "train's report has no patch picture")

        let page = root.path + "/page.html"
        let again = try ProcessRunner.mpirun(ranks: 2, ["report", output, "--output", page], timeout: 120)
        try #require(again.status == 0, "\(again.stdout)\n\(again.stderr)")
        let html = try String(contentsOfFile: page, encoding: .utf8)
        for fetch in ["src=\"http", "href=\"http", "url(http", "url(//", "@import", "<script"] {
            #expect(!html.contains(fetch), "the page must need no network (it has \(fetch))")
        }

        let profile = root.path + "/chromium-profile"
        let common = [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=" + profile,
        ]
        let dom = try ProcessRunner.run(
            URL(fileURLWithPath: chromium), common + ["--dump-dom", "file://" + page], timeout: 120)
        try #require(dom.status == 0, "\(dom.stderr)")
        for id in ["summary", "configuration", "curves", "knn", "throughput", "checkpoints", "pca"] {
            #expect(dom.stdout.contains("<section id=\"\(id)\">"), "the rendered page lacks the \(id) section")
        }
        #expect(dom.stdout.contains("<svg") && dom.stdout.contains("<img alt=\"patch feature PCA\""))
        // k-NN rows for iterations 0, 4 and 8; a peak-memory column per rank.
        #expect(dom.stdout.contains("rank 0 MiB") && dom.stdout.contains("rank 1 MiB"))

        let shot = root.path + "/shot.png"
        let screenshot = try ProcessRunner.run(
            URL(fileURLWithPath: chromium),
            common + ["--hide-scrollbars", "--window-size=1000,2400", "--screenshot=" + shot, "file://" + page],
            timeout: 120)
        try #require(screenshot.status == 0, "\(screenshot.stderr)")
        let image = try ImageCodec.decode(Data(contentsOf: URL(fileURLWithPath: shot)))
        #expect(image.width == 1000 && image.height == 2400)
        // Not blank: text, lines and the picture leave many colours and a good share of non-white pixels.
        var colours = Set<Int>(), inked = 0
        for i in 0..<(image.width * image.height) {
            let (r, g, b) = (Int(image.pixels[3 * i]), Int(image.pixels[3 * i + 1]), Int(image.pixels[3 * i + 2]))
            colours.insert(r << 16 | g << 8 | b)
            if r + g + b < 600 { inked += 1 }
        }
        #expect(colours.count > 100, "\(colours.count) colours")
        #expect(Double(inked) / Double(image.width * image.height) > 0.02, "\(inked) inked pixels")
    }

    @Test("SIGUSR1 mid-run: every rank stops at one iteration, saves it, and writes the report")
    func preemption() throws {
        let root = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        try TrainingRuns.synthesize(into: root.path)
        let output = root.path + "/run"
        // 4000 iterations: far more than run before the signal lands.
        let job = try ProcessRunner.startMPI(
            ranks: 2,
            [
                "train", "--config", "Configs/tests/tiny.yaml", "--data", root.path + "/train", "--val",
                root.path + "/val", "--output", output, "train.OFFICIAL_EPOCH_LENGTH=2000",
                "evaluation.eval_period_iterations=0", "checkpointing.period=100000",
            ])
        let deadline = Date().addingTimeInterval(120)
        func logged() -> Int {
            ((try? String(contentsOfFile: output + "/metrics.jsonl", encoding: .utf8)) ?? "")
                .split(separator: "\n").count
        }
        while job.isRunning && logged() < 5 && Date() < deadline { usleep(20_000) }
        try #require(job.isRunning, "the run ended before it could be stopped")
        kill(job.processIdentifier, SIGUSR1)
        while job.isRunning && Date() < deadline { usleep(20_000) }
        if job.isRunning { job.terminate() }
        job.waitUntilExit()
        #expect(job.terminationStatus == 0)

        let checkpoints = try FileManager.default.contentsOfDirectory(atPath: output + "/checkpoints")
        #expect(checkpoints.count == 1, "\(checkpoints)")
        let iteration = Int(checkpoints.first?.suffix(8) ?? "") ?? -1
        #expect(iteration >= 5 && iteration < 4000, "stopped at \(iteration)")
        #expect(FileManager.default.fileExists(atPath: output + "/checkpoints/\(checkpoints[0])/manifest.json"))
        let report = try String(contentsOfFile: output + "/report.html", encoding: .utf8)
        #expect(report.contains("of 4000 (stopped or running)"))
        #expect(report.contains("The teacher at iteration \(iteration) on 4 image(s)"))
        let events = try FileManager.default.contentsOfDirectory(atPath: output + "/tensorboard")
        #expect(events.count == 1)
    }
}
