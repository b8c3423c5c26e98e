// `dinov2-fsdp train` on a tiny config and a small generated dataset: every metrics field at 1, 2
// and 4 ranks, 1 vs 4 ranks with the same global batch, bit-exact auto-resume, and bad input.

import DinoCheckpoint
import DinoData
import DinoTestSupport
import Foundation
import Testing

@Suite("train under mpirun", .serialized)
struct TrainTests {
    static let fields = [
        "iteration", "loss", "dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss", "koleo_loss",
        "lr", "wd", "mom", "teacher_temp", "images_per_sec", "images_per_sec_per_rank",
        "data_wait_fraction", "comm_exposed_fraction", "max_rss_bytes", "skipped_images", "teacher_entropy",
        "teacher_mean_entropy", "teacher_prototypes_in_use", "teacher_cls_spread", "teacher_head_spread",
    ]

    func dataset() throws -> URL {
        let root = try TestPaths.temporaryDirectory()
        try TrainingRuns.synthesize(into: root.path)
        return root
    }

    func train(ranks: Int, data: URL, output: String, _ extra: [String] = []) throws -> ProcessResult {
        let arguments =
            ["train", "--config", "Configs/tests/tiny.yaml", "--data", data.path + "/train", "--output", output]
            + extra
        return try ProcessRunner.ranked(ranks, arguments, timeout: 240)
    }

    @Test("every metrics field, the resolved config and checkpoints at 1, 2 and 4 ranks", arguments: [1, 2, 4])
    func fields(ranks: Int) throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let output = data.path + "/run"
        let result = try train(
            ranks: ranks, data: data, output: output,
            ["train.batch_size_per_gpu=\(8 / ranks)"]
                + (ranks == 4 ? ["dino.koleo_loss_weight=0"] : []))
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let records = try TrainingRuns.records(output)
        #expect(records.count == 8)
        for record in records { for field in Self.fields { #expect(record[field] != nil, "missing \(field)") } }
        #expect(records.last?["iteration"] as? Int == 8)
        #expect(FileManager.default.fileExists(atPath: output + "/config.yaml"))
        #expect(FileManager.default.fileExists(atPath: output + "/checkpoints/checkpoint-00000008/manifest.json"))
        #expect(!FileManager.default.fileExists(atPath: output + "/checkpoints/checkpoint-00000002"))  // max_to_keep 3
        // Collapse diagnostics within their bounds: entropies in [0, ln K], prototypes in 1...K (K = 64).
        for record in records {
            for key in ["teacher_entropy", "teacher_mean_entropy"] {
                let value = record[key] as? Double ?? -1
                #expect(value >= 0 && value <= log(64.0) + 1e-6, "\(key) \(value)")
            }
            #expect((1...64).contains(record["teacher_prototypes_in_use"] as? Int ?? 0))
            // LayerNorm output over 4 or more crops: a spread in (0, a few), finite.
            let spread = record["teacher_cls_spread"] as? Double ?? -1
            #expect(spread > 0 && spread < 10, "teacher_cls_spread \(spread)")
            // Unit vectors: each channel's spread is at most 1.
            let head = record["teacher_head_spread"] as? Double ?? -1
            #expect(head >= 0 && head <= 1, "teacher_head_spread \(head)")
        }
        // The run's picture, and `plot` redraws it elsewhere.
        let svg = try String(contentsOfFile: output + "/metrics.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("Loss terms") && svg.contains("<polyline"))
        let plot = try ProcessRunner.dinov2(["plot", output, "--output", data.path + "/curves.svg"])
        #expect(plot.status == 0 && FileManager.default.fileExists(atPath: data.path + "/curves.svg"), "\(plot.stderr)")
    }

    @Test("with --val the run ends with the teacher's k-NN accuracy; eval knn on the checkpoint agrees")
    func knn() throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let output = data.path + "/run"
        let result = try train(
            ranks: 2, data: data, output: output,
            [
                "--val", data.path + "/val",
                "evaluation.eval_period_iterations=4",
            ])
        #expect(result.status == 0 && result.stdout.contains("k-NN (k 20)"), "\(result.stdout)\n\(result.stderr)")
        // Periodic evaluations before step 1 and at iteration 4 (of 8); the final one carries the
        // initialisation's (the iteration-0 value) and the gain; every record has the run's wall time.
        let periodic = try TrainingRuns.records(output).filter { $0["knn_top1"] != nil && $0["knn_top1_init"] == nil }
        #expect(periodic.map { $0["iteration"] as? Int } == [0, 4])
        let last = try TrainingRuns.records(output).last ?? [:]
        let top1 = last["knn_top1"] as? Double ?? -1, initial = last["knn_top1_init"] as? Double ?? -1
        #expect((0...100).contains(top1) && (0...100).contains(initial))
        #expect(initial == periodic.first?["knn_top1"] as? Double)
        #expect(abs((last["knn_gain"] as? Double ?? -1000) - (top1 - initial)) < 1e-9)
        let elapsed = try TrainingRuns.records(output).map { $0["elapsed_seconds"] as? Double ?? -1 }
        #expect(elapsed.allSatisfy { $0 >= 0 } && elapsed == elapsed.sorted(), "\(elapsed)")

        // `eval knn` on the run folder loads the final checkpoint; on the same 2 ranks the features are
        // computed in the same batches, so the accuracy must equal the one training printed exactly.
        let json = data.path + "/knn.json"
        let knnArguments = [
            "eval", "knn", "--checkpoint", output, "--train", data.path + "/train", "--val",
            data.path + "/val", "--k", "1,20",
        ]
        let eval = try ProcessRunner.mpirun(ranks: 2, knnArguments + ["--output", json], timeout: 120)
        #expect(eval.status == 0 && eval.stdout.contains("k 20: top-1"), "\(eval.stdout)\n\(eval.stderr)")
        let record =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        let results = record?["results"] as? [[String: Any]] ?? []
        #expect(results.map { $0["k"] as? Int } == [1, 20])
        #expect(results.last?["top1"] as? Double == top1)
        #expect(results.last?["top5"] as? Double == last["knn_top5"] as? Double)
        #expect(record?["iteration"] as? Int == 8)

        // One rank reads the 2-rank checkpoint; a folder without checkpoints is refused by name.
        let single = try ProcessRunner.dinov2(knnArguments, timeout: 120)
        #expect(single.status == 0 && single.stdout.contains("k 1: top-1"), "\(single.stderr)")
        let missing = try ProcessRunner.dinov2([
            "eval", "knn", "--checkpoint", data.path + "/train", "--train",
            data.path + "/train", "--val", data.path + "/val",
        ])
        #expect(
            missing.status != 0 && missing.stderr.contains("neither manifest.json nor checkpoints"), "\(missing.stderr)"
        )
    }

    @Test(
        "embed writes the teacher's CLS and patch tokens (1 and 3 ranks and the re-imported export agree); pca draws"
    )
    func embed() throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let output = data.path + "/run"
        #expect(try train(ranks: 1, data: data, output: output, ["train.OFFICIAL_EPOCH_LENGTH=1"]).status == 0)
        let arguments = ["embed", "--checkpoint", output, "--data", data.path + "/train", "--patch", "--output"]
        let one = try ProcessRunner.dinov2(arguments + [data.path + "/one.h5"], timeout: 120)
        // 16 images over 3 ranks: slices of 6, 6 and 4, so the rows come back from uneven gathers.
        let three = try ProcessRunner.mpirun(ranks: 3, arguments + [data.path + "/three.h5"], timeout: 120)
        #expect(one.status == 0 && three.status == 0, "\(one.stderr)\n\(three.stderr)")
        let a = try HDF5File.open(data.path + "/one.h5"), b = try HDF5File.open(data.path + "/three.h5")
        let d = 32, p = 4  // tiny.yaml: width 32, 28-pixel crops of patch 14
        #expect(
            try a.shape(of: "cls") == [16, d] && a.shape(of: "patch") == [16, p, d] && a.shape(of: "labels") == [16])
        #expect(try a.readDoubles("labels") == (0..<16).map { Double($0 / 4) })
        #expect(try a.stringAttribute("classes").split(separator: "\n").count == 4)
        let paths = try a.readStrings("paths")
        #expect(paths.count == 16 && paths.first?.hasSuffix("/train/checker/00000.png") == true, "\(paths)")
        #expect(try a.intAttribute("iteration") == 2)
        for name in ["cls", "patch"] {
            let x = try a.readDoubles(name), y = try b.readDoubles(name)
            // Same images, same weights; only the GEMM row count differs between the batches of 16, 6
            // and 4 rows, which changes OpenBLAS's blocking: float32 rounding, well below 1e-5.
            #expect(normwiseError(y.map(Float.init), x) < 1e-5, "\(name)")
            // Rows are images: a misplaced slice would show as two different images' rows swapped.
            #expect(Set(stride(from: 0, to: x.count, by: x.count / 16).map { x[$0] }).count > 8, "\(name)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: data.path).allSatisfy { !$0.contains(".tmp-") })

        // Export the teacher to the official layout, re-import it (the file carries its config): the
        // model built from the file gives bit for bit the same forward output as the checkpoint.
        let exported = data.path + "/teacher.h5"
        let export = try ProcessRunner.dinov2([
            "checkpoint", "export", output + "/checkpoints/checkpoint-00000002",
            "--output", exported,
        ])
        #expect(export.status == 0, "\(export.stderr)")
        let reimported = try ProcessRunner.dinov2(
            [
                "embed", "--checkpoint", exported, "--data", data.path + "/train", "--patch",
                "--output", data.path + "/reimported.h5",
            ], timeout: 120)
        #expect(reimported.status == 0, "\(reimported.stderr)")
        let c = try HDF5File.open(data.path + "/reimported.h5")
        for name in ["cls", "patch"] { #expect(try c.readDoubles(name) == a.readDoubles(name), "\(name)") }

        // pca on 2 ranks: one PNG, a row per image: the 28-px evaluation view beside its 2x2 picture.
        let files = ["checker", "dots", "stripes"].map { data.path + "/train/\($0)/00000.png" }
        let pca = try ProcessRunner.mpirun(
            ranks: 2,
            ["pca", "--checkpoint", output, "--output", data.path + "/pca.png"]
                + files, timeout: 120)
        #expect(pca.status == 0, "\(pca.stderr)")
        let picture = try ImageCodec.decode(Data(contentsOf: URL(fileURLWithPath: data.path + "/pca.png")))
        #expect(picture.width == 56 && picture.height == 84)
        let missing = try ProcessRunner.dinov2([
            "pca", "--checkpoint", output, "--output", data.path + "/x.png",
            data.path + "/nothing.png",
        ])
        #expect(missing.status != 0 && missing.stderr.contains("nothing.png"), "\(missing.stderr)")
    }

    @Test("eval linear trains one probe per learning rate, shared over ranks: 1 and 2 ranks agree")
    func linearProbe() throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let output = data.path + "/run"
        #expect(try train(ranks: 1, data: data, output: output, ["train.OFFICIAL_EPOCH_LENGTH=1"]).status == 0)
        let arguments = [
            "eval", "linear", "--checkpoint", output, "--train", data.path + "/train", "--val",
            data.path + "/val", "--lrs", "0.01,0.1,1", "--epochs", "5", "--batch", "4", "--output",
        ]
        let one = try ProcessRunner.dinov2(arguments + [data.path + "/one.json"], timeout: 120)
        let two = try ProcessRunner.mpirun(ranks: 2, arguments + [data.path + "/two.json"], timeout: 120)
        let pooled = try ProcessRunner.dinov2(arguments + [data.path + "/pooled.json", "--avgpool"], timeout: 120)
        #expect(pooled.status == 0 && pooled.stdout.contains("best: lr"), "\(pooled.stderr)")
        #expect(one.status == 0 && two.status == 0 && one.stdout.contains("best: lr"), "\(one.stderr)\n\(two.stderr)")
        func results(_ name: String) throws -> [[String: Any]] {
            let object = try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: data.path + name)))
            return (object as? [String: Any])?["results"] as? [[String: Any]] ?? []
        }
        let a = try results("/one.json"), b = try results("/two.json")
        // Scaled by batch / 256 as the official grid is.
        #expect(a.map { $0["lr"] as? Double ?? -1 } == [0.01, 0.1, 1].map { $0 * 4 / 256 })
        #expect(b.count == 3)
        for (x, y) in zip(a, b) {
            let top1 = x["top1"] as? Double ?? -1, loss = x["final_loss"] as? Double ?? -1
            #expect((0...100).contains(top1) && loss > 0)
            // Features from 1 and 2 ranks differ only by float32 GEMM blocking (see the embed test);
            // 5 epochs of SGD on 16 samples keep the loss within 1e-4 of each other.
            #expect(abs(loss - (y["final_loss"] as? Double ?? -1)) < 1e-4)
        }
        let bad = try ProcessRunner.dinov2([
            "eval", "linear", "--checkpoint", output, "--train", data.path + "/train",
            "--val", data.path + "/val", "--lrs", "0.1,fast",
        ])
        #expect(bad.status != 0 && bad.stderr.contains("--lrs must be"), "\(bad.stderr)")
    }

    @Test("1 rank and 4 ranks with the same global batch give the same losses (within 1e-5)")
    func parity() throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let common = ["student.drop_path_rate=0", "dino.koleo_loss_weight=0", "train.centering=sinkhorn_knopp"]
        let one = try train(ranks: 1, data: data, output: data.path + "/one", common + ["train.batch_size_per_gpu=8"])
        let four = try train(ranks: 4, data: data, output: data.path + "/four", common + ["train.batch_size_per_gpu=2"])
        #expect(one.status == 0 && four.status == 0, "\(one.stderr)\n\(four.stderr)")
        for (a, b) in zip(try TrainingRuns.records(data.path + "/one"), try TrainingRuns.records(data.path + "/four")) {
            for field in ["loss", "dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss"] {
                let x = a[field] as? Double ?? .nan, y = b[field] as? Double ?? .nan
                #expect(abs(x - y) <= 1e-5 * max(abs(x), 1e-12), "\(field) at \(a["iteration"] ?? "?"): \(x) vs \(y)")
            }
        }
    }

    @Test("a run resumed from its iteration-4 checkpoint continues bit for bit")
    func resume() throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let output = data.path + "/run"
        #expect(try train(ranks: 2, data: data, output: output).status == 0)
        let straight = try TrainingRuns.records(output)
        for late in ["checkpoint-00000006", "checkpoint-00000008"] {
            try FileManager.default.removeItem(atPath: output + "/checkpoints/" + late)
        }
        try FileManager.default.removeItem(atPath: output + "/metrics.jsonl")
        let again = try train(ranks: 2, data: data, output: output)
        #expect(again.status == 0 && again.stdout.contains("resumed from"), "\(again.stdout)\n\(again.stderr)")
        let resumed = try TrainingRuns.records(output)
        #expect(resumed.map { $0["iteration"] as? Int ?? -1 } == [5, 6, 7, 8])
        for (a, b) in zip(straight.suffix(4), resumed) {
            for field in ["loss", "dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss", "koleo_loss"] {
                #expect((a[field] as? Double) == (b[field] as? Double), "\(field) at \(a["iteration"] ?? "?")")
            }
        }
    }

    @Test("kill -9 of a rank during a checkpoint save, then the same command: every metric equals the straight run")
    func killDuringSave() throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let common = ["train.OFFICIAL_EPOCH_LENGTH=8", "checkpointing.period=1", "checkpointing.max_to_keep=4"]
        #expect(try train(ranks: 2, data: data, output: data.path + "/straight", common).status == 0)
        let straight = try TrainingRuns.records(data.path + "/straight")
        #expect(straight.count == 16)

        // Save every iteration; once a save is in progress (a folder without its manifest, iteration 3
        // on), SIGKILL one rank; the launcher then ends the job. Finding the rank takes longer than a
        // tiny step, so the kill can land between two saves: then the same command is started again
        // (it resumes) and killed again, until a save was interrupted (at most 6 attempts).
        let output = data.path + "/crashed"
        let arguments =
            ["train", "--config", "Configs/tests/tiny.yaml", "--data", data.path + "/train", "--output", output]
            + common
        func interrupted() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: output + "/checkpoints")) ?? []).filter {
                $0 >= "checkpoint-00000003"
                    && !FileManager.default.fileExists(atPath: output + "/checkpoints/\($0)/manifest.json")
            }
        }
        var crashes = 0
        for _ in 0..<6 where interrupted().isEmpty {
            let job = try ProcessRunner.startMPI(ranks: 2, arguments)
            var killed = false
            let deadline = Date().addingTimeInterval(120)
            var rank: Int32?
            while !killed && job.isRunning && Date() < deadline {
                rank = rank ?? ProcessRunner.rankProcesses(writing: output).first
                if let rank, !interrupted().isEmpty {
                    kill(rank, SIGKILL)
                    killed = true
                }
                usleep(500)
            }
            job.waitUntilExit()
            if killed { crashes += 1 }
        }
        #expect(crashes >= 1 && !interrupted().isEmpty, "no save was interrupted in 6 attempts")

        // Every folder with a manifest verifies; the rerun resumes from the newest complete one.
        for folder in try FileManager.default.contentsOfDirectory(atPath: output + "/checkpoints") {
            let path = output + "/checkpoints/" + folder
            guard FileManager.default.fileExists(atPath: path + "/manifest.json") else { continue }
            let verify = try ProcessRunner.dinov2(["checkpoint", "verify", path])
            #expect(verify.status == 0, "\(verify.stderr)")
        }
        let again = try ProcessRunner.mpirun(ranks: 2, arguments, timeout: 240)
        #expect(again.status == 0 && again.stdout.contains("resumed from"), "\(again.stdout)\n\(again.stderr)")
        let records = try TrainingRuns.records(output)
        #expect(records.last?["iteration"] as? Int == 16)
        for record in records {
            guard let iteration = record["iteration"] as? Int, iteration >= 1, iteration <= 16 else { continue }
            let reference = straight[iteration - 1]
            for field in ["loss", "dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss", "koleo_loss"] {
                #expect((record[field] as? Double) == (reference[field] as? Double), "\(field) at \(iteration)")
            }
        }
    }

    @Test("missing data and a dataset smaller than one global batch are clear errors")
    func badInput() throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let missing = try ProcessRunner.dinov2([
            "train", "--config", "Configs/tests/tiny.yaml", "--data", data.path + "/nope",
            "--output", data.path + "/run",
        ])
        #expect(missing.status != 0 && missing.stderr.contains("does not exist"))
        let small = try ProcessRunner.dinov2([
            "train", "--config", "Configs/tests/tiny.yaml", "--data", data.path + "/val",
            "--output", data.path + "/run2", "train.batch_size_per_gpu=8",
        ])
        #expect(small.status != 0 && small.stderr.contains("fewer than one global batch"))
    }

    /// Every file under `folder` with its bytes.
    func snapshot(_ folder: String) -> [String: Data] {
        var files: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(atPath: folder)
        while let relative = enumerator?.nextObject() as? String {
            if let data = FileManager.default.contents(atPath: folder + "/" + relative) { files[relative] = data }
        }
        return files
    }

    @Test("unknown key, empty dataset, incompatible checkpoint in the output folder: one clear error, nothing written")
    func refusals() throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let run = data.path + "/run"
        let unknown = try train(ranks: 2, data: data, output: run, ["optim.bse_lr=0.1"])
        #expect(
            unknown.status != 0 && unknown.stderr.contains("optim.bse_lr") && unknown.stderr.contains("optim.base_lr"))
        #expect(!FileManager.default.fileExists(atPath: run))

        try FileManager.default.createDirectory(atPath: data.path + "/empty/a", withIntermediateDirectories: true)
        let empty = try ProcessRunner.dinov2([
            "train", "--config", "Configs/tests/tiny.yaml", "--data", data.path + "/empty",
            "--output", run,
        ])
        #expect(empty.status != 0 && empty.stderr.contains("holds no .jpg, .jpeg or .png images"))

        let first = try train(ranks: 2, data: data, output: run, ["optim.epochs=1"])
        try #require(first.status == 0, "\(first.stderr)")
        let before = snapshot(run)
        #expect(before.keys.contains { $0.hasPrefix("checkpoints/checkpoint-00000004/") })
        let other = try train(ranks: 2, data: data, output: run, ["student.embed_dim=48", "optim.epochs=2"])
        #expect(other.status != 0)
        #expect(other.stderr.contains("was written by an incompatible configuration"), "\(other.stderr)")
        for output in [unknown, empty, other] {
            #expect(!output.stderr.contains("Fatal error") && !output.stderr.contains("Stack dump"))
        }
        #expect(snapshot(run) == before, "the refused run changed the output folder")
    }

    @Test("bf16 asked for on a CPU without AVX512-BF16: one warning line, then exactly the fp32 run")
    func bf16Fallback() throws {
        let data = try dataset()
        defer { try? FileManager.default.removeItem(at: data) }
        let common = ["train", "--config", "Configs/tests/tiny.yaml", "--data", data.path + "/train"]
        let fp32 = try ProcessRunner.dinov2(common + ["--output", data.path + "/fp32"], timeout: 240)
        #expect(fp32.status == 0, "\(fp32.stderr)")
        // oneDNN's own limit stands in for an older CPU: AVX-512 without the bf16 instructions.
        let limited = try ProcessRunner.run(
            TestPaths.executable, common + ["--output", data.path + "/fallback", "compute_precision=bf16"],
            environment: ["ONEDNN_MAX_CPU_ISA": "AVX512_CORE"], timeout: 240)
        #expect(limited.status == 0, "\(limited.stderr)")
        let warnings = limited.stderr.split(separator: "\n").filter { $0.contains("no AVX512-BF16 or AMX") }
        #expect(warnings.count == 1, "\(limited.stderr)")
        #expect(warnings.first?.hasPrefix("warning: compute_precision asks for bf16") == true)
        let losses = { (folder: String) in try TrainingRuns.records(folder).compactMap { $0["loss"] as? Double } }
        #expect(try losses(data.path + "/fallback") == losses(data.path + "/fp32"))
        #expect(try !losses(data.path + "/fp32").isEmpty)
    }
}
