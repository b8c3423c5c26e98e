// Learning curves of several runs side by side (the learning benchmark): k-NN top-1 over iterations
// and over wall time, the teacher's target entropy against ln K, the prototypes in use and the
// spreads of the teacher's CLS and head output over images, read from each run's metrics.jsonl (a
// `train` output folder, or the official-modules reference script's file with the same fields).
// Writes learning.csv (one row per record that has any of these fields) and learning.svg, and
// returns a summary line per run.

import DinoPlot
import Foundation

/// The learning benchmark's report.
public enum LearningReport {
    /// A run: its name in the legend and the records of its metrics file.
    public struct Run {
        public var name: String
        public var records: [[String: Any]]

        /// The run named `name` whose metrics are `path` (a metrics.jsonl file or a folder holding one).
        public init(name: String, path: String) throws {
            var isFolder: ObjCBool = false
            let file = FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && isFolder.boolValue
                ? path + "/metrics.jsonl" : path
            self.name = name
            self.records = try TrainingCurves.records(path: file)
        }

        public init(name: String, records: [[String: Any]]) {
            self.name = name
            self.records = records
        }

        /// (iteration, k-NN top-1, elapsed seconds) of every evaluation, in order.
        var evaluations: [(iteration: Double, top1: Double, seconds: Double?)] {
            records.compactMap { r in
                guard let i = TrainingCurves.number(r["iteration"]), let top1 = TrainingCurves.number(r["knn_top1"])
                else { return nil }
                return (i, top1, TrainingCurves.number(r["elapsed_seconds"]))
            }
        }

        var training: [[String: Any]] { records.filter { $0["teacher_entropy"] != nil } }
    }

    static let fields = ["knn_top1", "teacher_entropy", "teacher_mean_entropy", "teacher_prototypes_in_use",
                         "teacher_cls_spread", "teacher_head_spread", "loss"]

    /// The CSV of `runs`: run, iteration, elapsed_seconds, then `fields` (empty where a record lacks one).
    public static func csv(_ runs: [Run]) -> String {
        var lines = ["run,iteration,elapsed_seconds," + fields.joined(separator: ",")]
        for run in runs {
            for r in run.records where fields.contains(where: { r[$0] != nil }) {
                func cell(_ key: String) -> String { TrainingCurves.number(r[key]).map { String($0) } ?? "" }
                let cells = [run.name, cell("iteration"), cell("elapsed_seconds")] + fields.map(cell)
                lines.append(cells.joined(separator: ","))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The picture of `runs`; `prototypes` draws ln K and the collapse bound 0.9 ln K on the entropy panel.
    public static func svg(_ runs: [Run], title: String, prototypes: Int?) -> String {
        func series(_ run: Run, _ key: String, x: String = "iteration", scale: Double = 1,
                    rows: [[String: Any]]? = nil, markers: Bool = false) -> LineSeries {
            let points = (rows ?? run.training).compactMap { r -> (x: Double, y: Double)? in
                guard let xv = TrainingCurves.number(r[x]), let yv = TrainingCurves.number(r[key]) else { return nil }
                return (xv * scale, yv)
            }
            return LineSeries(name: run.name, points: points, markers: markers)
        }
        let evaluationRows = runs.map { run in run.records.filter { $0["knn_top1"] != nil } }
        var entropy = runs.map { series($0, "teacher_entropy") }
        let iterations = runs.flatMap { $0.training.compactMap { TrainingCurves.number($0["iteration"]) } }
        if let k = prototypes, let last = iterations.max() {
            let lnK = log(Double(k))
            entropy.append(LineSeries(name: "ln K (uniform)", points: [(0, lnK), (last, lnK)]))
            entropy.append(LineSeries(name: "0.9 ln K (collapse bound)", points: [(0, 0.9 * lnK), (last, 0.9 * lnK)]))
        }
        let panels = [
            ChartPanel(title: "Validation k-NN top-1 over iterations", xLabel: "iteration", yLabel: "top-1 (%)",
                       series: zip(runs, evaluationRows).map { series($0, "knn_top1", rows: $1, markers: true) }),
            ChartPanel(title: "Validation k-NN top-1 over wall time", xLabel: "minutes", yLabel: "top-1 (%)",
                       series: zip(runs, evaluationRows).map {
                           series($0, "knn_top1", x: "elapsed_seconds", scale: 1.0 / 60, rows: $1, markers: true)
                       }),
            ChartPanel(title: "Teacher target entropy (mean over crops of each crop's entropy)", xLabel: "iteration",
                       yLabel: "nats",
                       series: entropy),
            ChartPanel(title: "Prototypes in use (argmax of the teacher's targets)", xLabel: "iteration",
                       yLabel: "prototypes", series: runs.map { series($0, "teacher_prototypes_in_use") }),
            ChartPanel(title: "Teacher CLS spread over images", xLabel: "iteration", yLabel: "mean std",
                       series: runs.map { series($0, "teacher_cls_spread") }),
            ChartPanel(title: "Teacher head output spread over images", xLabel: "iteration", yLabel: "mean std",
                       series: runs.map { series($0, "teacher_head_spread") }),
        ]
        return LineChart.svg(title: title, panels: panels, columns: 2)
    }

    /// One line per run: k-NN at the first and last evaluation, the best, wall time, entropy and prototypes at the end.
    public static func summary(_ runs: [Run], prototypes: Int?) -> String {
        runs.map { run in
            let e = run.evaluations
            guard let first = e.first, let last = e.last else { return "\(run.name): no k-NN evaluations" }
            let best = e.max { $0.top1 < $1.top1 }!
            let end = run.training.last
            let entropy = TrainingCurves.number(end?["teacher_entropy"])
            let inUse = TrainingCurves.number(end?["teacher_prototypes_in_use"])
            var line = String(format: "%@: k-NN top-1 %.1f%% at iteration %.0f -> %.1f%% at %.0f "
                                  + "(gain %+.1f points; best %.1f%% at %.0f)",
                              run.name, first.top1, first.iteration, last.top1, last.iteration, last.top1 - first.top1,
                              best.top1, best.iteration)
            if let seconds = last.seconds { line += String(format: ", %.1f min", seconds / 60) }
            if let entropy {
                line += String(format: "; teacher mean entropy %.3f", entropy)
                if let k = prototypes { line += String(format: " (%.2f ln K)", entropy / log(Double(k))) }
            }
            if let inUse {
                line += String(format: ", %.0f prototypes in use", inUse)
                if let k = prototypes { line += String(format: " (%.1f %% of K)", 100 * inUse / Double(k)) }
            }
            return line
        }.joined(separator: "\n")
    }

    /// Writes `folder`/learning.csv and `folder`/learning.svg; returns the summary.
    public static func write(_ runs: [Run], folder: String, title: String, prototypes: Int?) throws -> String {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data(csv(runs).utf8).write(to: URL(fileURLWithPath: folder + "/learning.csv"), options: .atomic)
        try Data(svg(runs, title: title, prototypes: prototypes).utf8)
            .write(to: URL(fileURLWithPath: folder + "/learning.svg"), options: .atomic)
        return summary(runs, prototypes: prototypes)
    }
}
