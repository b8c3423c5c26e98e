// The training-curves picture from a metrics file: panels and points from the records, k-NN
// evaluations with the initialisation line, and a malformed line named by number.

import DinoPlot
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

@Suite("plot legends")
struct LegendPlacementTests {
    /// The legend rectangle and the drawn lines (polylines and marker centres) of each panel of `svg`.
    func panels(_ svg: String) -> [(legend: [Double], lines: [[(Double, Double)]])] {
        func attribute(_ name: String, in element: Substring) -> String? {
            guard let start = element.range(of: " \(name)=\"") else { return nil }
            return String(element[start.upperBound...].prefix { $0 != "\"" })
        }
        return svg.components(separatedBy: "<g>").dropFirst().compactMap { group in
            let elements = group.split(separator: "<")
            guard let box = elements.first(where: { $0.hasPrefix("rect class=\"legend\"") }) else { return nil }
            let legend = ["x", "y", "width", "height"].map { Double(attribute($0, in: box)!)! }
            var lines: [[(Double, Double)]] = elements.filter { $0.hasPrefix("polyline") }.map { element in
                attribute("points", in: element)!.split(separator: " ").map { pair in
                    let xy = pair.split(separator: ",").map { Double($0)! }
                    return (xy[0], xy[1])
                }
            }
            for circle in elements.filter({ $0.hasPrefix("circle") }) {
                lines.append([(Double(attribute("cx", in: circle)!)!, Double(attribute("cy", in: circle)!)!)])
            }
            return (legend, lines)
        }
    }

    /// Points along every segment (every 0.25 px) that fall inside the legend box.
    func covered(_ panel: (legend: [Double], lines: [[(Double, Double)]])) -> Int {
        let (x, y, w, h) = (panel.legend[0], panel.legend[1], panel.legend[2], panel.legend[3])
        var hits = 0
        for line in panel.lines {
            for i in line.indices {
                let a = line[max(i - 1, 0)], b = line[i]
                let steps = max(1, Int((abs(b.0 - a.0) + abs(b.1 - a.1)) * 4))
                for s in 0...steps {
                    let t = Double(s) / Double(steps)
                    let (px, py) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
                    if px >= x && px <= x + w && py >= y && py <= y + h { hits += 1 }
                }
            }
        }
        return hits
    }

    @Test("legends sit where no line or marker passes: a free corner, else above the data")
    func legendsHideNoData() throws {
        let n = 60
        let rising = (0..<n).map { (Double($0), Double($0 * $0)) }
        let falling = (0..<n).map { (Double($0), 100 / (1 + Double($0))) }
        // A band through all four corners: the diagonal up and down, plus flat lines at both extremes.
        let everywhere = [
            LineSeries(name: "rises", points: (0..<n).map { (Double($0), Double($0)) }),
            LineSeries(name: "falls", points: (0..<n).map { (Double($0), Double(n - 1 - $0)) }),
            LineSeries(name: "top", points: [(0, Double(n - 1)), (Double(n - 1), Double(n - 1))]),
            LineSeries(name: "bottom", points: [(0, 0), (Double(n - 1), 0)], markers: true),
        ]
        let chart = LineChart.svg(
            title: "legends",
            panels: [
                ChartPanel(
                    title: "rising", xLabel: "x", yLabel: "y", series: [LineSeries(name: "x^2", points: rising)]),
                ChartPanel(
                    title: "both", xLabel: "x", yLabel: "y",
                    series: [
                        LineSeries(name: "a rising curve with a long name", points: rising),
                        LineSeries(name: "falling", points: falling, markers: true),
                    ]),
                ChartPanel(title: "everywhere", xLabel: "x", yLabel: "y", series: everywhere),
                ChartPanel(title: "log", xLabel: "x", yLabel: "y", series: everywhere, logY: true),
            ])
        let found = panels(chart)
        #expect(found.count == 4)
        for (index, panel) in found.enumerated() {
            #expect(covered(panel) == 0, "panel \(index): the legend hides \(covered(panel)) drawn points")
        }
    }
}
