// The training-curves picture from a metrics file: panels and points from the records, k-NN
// evaluations with the initialisation line, and a malformed line named by number.

import DinoTestSupport
import DinoTraining
import Foundation
import Testing

@Suite("training curves")
struct TrainingCurvesTests {
    func write(_ lines: [String]) throws -> URL {
        let folder = try TestPaths.temporaryDirectory()
        try (lines.joined(separator: "\n") + "\n").write(
            to: folder.appendingPathComponent("metrics.jsonl"), atomically: true,
            encoding: .utf8)
        return folder
    }

    @Test("every training record becomes a point of each curve; k-NN records their own panel")
    func picture() throws {
        let records = (1...3).map { i in
            "{\"iteration\": \(i * 10), \"loss\": \(12 - Double(i)), \"dino_local_crops_loss\": 6, "
                + "\"dino_global_crops_loss\": 1.5, "
                + "\"ibot_loss\": 4, \"koleo_loss\": 0.1, \"lr\": \(Double(i) * 1e-4), \"wd\": 0.04, \"mom\": 0.99, "
                + "\"teacher_temp\": 0.04, \"images_per_sec\": 30, \"images_per_sec_per_rank\": 15, "
                + "\"teacher_entropy\": 7.5, \"teacher_mean_entropy\": 8.3}"
        }
        let folder = try write(
            records + ["{\"iteration\": 30, \"knn_top1_init\": 12.5, \"knn_top1\": 40.0, \"knn_top5\": 80.0}"])
        defer { try? FileManager.default.removeItem(at: folder) }
        let svg = try TrainingCurves.svg(metrics: folder.path + "/metrics.jsonl", title: "run")
        for title in ["Loss terms", "Teacher targets", "Learning rate", "Throughput", "Validation k-NN", "Schedules"] {
            #expect(svg.contains(title), "missing panel \(title)")
        }
        // Loss panel: 5 series of 3 points each; every polyline has as many points as its records.
        let polylines = svg.components(separatedBy: "<polyline").dropFirst().map {
            $0.components(separatedBy: "points=\"")[1]
        }
        let pointCounts = polylines.map { $0.prefix { $0 != "\"" }.split(separator: " ").count }
        #expect(pointCounts.prefix(5) == [3, 3, 3, 3, 3], "\(pointCounts)")
        #expect(pointCounts.contains(1))  // the single k-NN evaluation
        #expect(svg.contains("at initialisation"))
    }

    @Test("a malformed line and a file without training records are refused by name")
    func errors() throws {
        let bad = try write(["{\"iteration\": 1, \"loss\": 3}", "not json"])
        defer { try? FileManager.default.removeItem(at: bad) }
        #expect(throws: TrainingCurves.CurvesError.self) {
            try TrainingCurves.svg(metrics: bad.path + "/metrics.jsonl", title: "x")
        }
        do {
            _ = try TrainingCurves.svg(metrics: bad.path + "/metrics.jsonl", title: "x")
        } catch {
            #expect("\(error)".contains("line 2"))
        }
        let empty = try write(["{\"iteration\": 8, \"knn_top1\": 20}"])
        defer { try? FileManager.default.removeItem(at: empty) }
        #expect(throws: TrainingCurves.CurvesError.self) {
            try TrainingCurves.svg(metrics: empty.path + "/metrics.jsonl", title: "x")
        }
    }

    @Test("learning report: both runs' k-NN over iterations and wall time, CSV rows, summary with the gain")
    func learningReport() throws {
        func run(_ name: String, knn: [Double], seconds: Double) -> LearningReport.Run {
            var records: [[String: Any]] = []
            for (i, top1) in knn.enumerated() {
                records.append(["iteration": i * 10, "knn_top1": top1, "elapsed_seconds": Double(i) * seconds])
                if i > 0 {
                    records.append([
                        "iteration": i * 10, "loss": 9.0, "teacher_entropy": 5.0, "teacher_mean_entropy": 6.5,
                        "teacher_prototypes_in_use": 40, "teacher_cls_spread": 0.5,
                        "teacher_head_spread": 0.05, "elapsed_seconds": Double(i) * seconds,
                    ])
                }
            }
            return LearningReport.Run(name: name, records: records)
        }
        let runs = [
            run("ours", knn: [12.5, 20, 31.25], seconds: 60), run("official", knn: [12.5, 18, 27], seconds: 120),
        ]
        let csv: [String] = LearningReport.csv(runs).split(separator: "\n").map(String.init)
        let header =
            "run,iteration,elapsed_seconds,knn_top1,teacher_entropy,teacher_mean_entropy,"
            + "teacher_prototypes_in_use,teacher_cls_spread,teacher_head_spread,loss"
        #expect(csv.first == header)
        #expect(csv.count == 1 + 2 * 5)
        let row = "ours,20.0,120.0,31.25,,,,,,"
        #expect(csv.contains(row))
        let svg = LearningReport.svg(runs, title: "t", prototypes: 256)
        for title in ["over iterations", "over wall time", "Teacher target entropy", "Prototypes in use", "CLS spread"]
        {
            #expect(svg.contains(title), "missing panel \(title)")
        }
        #expect(svg.contains("0.9 ln K"))
        let summary: [String] = LearningReport.summary(runs, prototypes: 256).split(separator: "\n").map(String.init)
        #expect(summary.count == 2)
        #expect(summary[0].contains("12.5% at iteration 0 -> 31.2% at 20 (gain +18.8 points"), "\(summary[0])")
        #expect(
            summary[0].contains("2.0 min") && summary[0].contains("(0.90 ln K)") && summary[0].contains("15.6 % of K"))
    }
}
