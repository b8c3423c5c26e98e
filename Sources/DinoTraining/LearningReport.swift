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
        public var records: [MetricsRecord]

        /// The run named `name` whose metrics are `path` (a metrics.jsonl file or a folder holding one).
        public init(name: String, path: String) throws {
            var isFolder: ObjCBool = false
            let file =
                FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && isFolder.boolValue
                ? path + "/metrics.jsonl" : path
            self.name = name
            self.records = try MetricsFile.read(file)
        }

        public init(name: String, records: [MetricsRecord]) {
            self.name = name
            self.records = records
        }

        /// Records given as JSON objects (field names as in metrics.jsonl); objects that are not
        /// records (no iteration) are left out.
        public init(name: String, records objects: [[String: Any]]) {
            let decoder = JSONDecoder()
            self.init(
                name: name,
                records: objects.compactMap { object in
                    guard let data = try? JSONSerialization.data(withJSONObject: object) else { return nil }
                    return try? decoder.decode(MetricsRecord.self, from: data)
                })
        }

        /// (iteration, k-NN top-1, elapsed seconds) of every evaluation, in order.
        var evaluations: [(iteration: Int, top1: Double, seconds: Double?)] {
            records.compactMap { r in r.knnTop1.map { (r.iteration, $0, r.elapsedSeconds) } }
        }

        var training: [MetricsRecord] { records.filter { $0.teacherEntropy != nil } }
    }

    /// The CSV columns after run, iteration and elapsed_seconds: (JSON name, field).
    static var columns: [(name: MetricsRecord.CodingKeys, field: MetricsField)] {
        [
            (.knnTop1, \.knnTop1), (.teacherEntropy, \.teacherEntropy), (.teacherMeanEntropy, \.teacherMeanEntropy),
            (.teacherPrototypesInUse, \.prototypesInUse), (.teacherCLSSpread, \.teacherCLSSpread),
            (.teacherHeadSpread, \.teacherHeadSpread), (.loss, \.loss),
        ]
    }

    /// The CSV of `runs`: run, iteration, elapsed_seconds, then `columns` (empty where a record lacks one).
    public static func csv(_ runs: [Run]) -> String {
        var lines = ["run,iteration,elapsed_seconds," + columns.map(\.name.rawValue).joined(separator: ",")]
        for run in runs {
            for r in run.records where columns.contains(where: { r[keyPath: $0.field] != nil }) {
                func cell(_ field: MetricsField) -> String { r[keyPath: field].map { String($0) } ?? "" }
                let cells = [run.name, cell(\.iterationValue), cell(\.elapsedSeconds)] + columns.map { cell($0.field) }
                lines.append(cells.joined(separator: ","))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The picture of `runs`; `prototypes` draws ln K and the collapse bound 0.9 ln K on the entropy panel.
    public static func svg(_ runs: [Run], title: String, prototypes: Int?) -> String {
        func series(
            _ run: Run, _ field: MetricsField, x: MetricsField = \.iterationValue, scale: Double = 1,
            rows: [MetricsRecord]? = nil, markers: Bool = false
        ) -> LineSeries {
            LineSeries(
                name: run.name, points: TrainingCurves.points(rows ?? run.training, x: x, y: field, xScale: scale),
                markers: markers)
        }
        let evaluationRows = runs.map { run in run.records.filter { $0.knnTop1 != nil } }
        var entropy = runs.map { series($0, \.teacherEntropy) }
        let iterations = runs.flatMap { $0.training.map(\.iteration) }
        if let k = prototypes, let last = iterations.max().map(Double.init) {
            let lnK = log(Double(k))
            entropy.append(LineSeries(name: "ln K (uniform)", points: [(0, lnK), (last, lnK)]))
            entropy.append(LineSeries(name: "0.9 ln K (collapse bound)", points: [(0, 0.9 * lnK), (last, 0.9 * lnK)]))
        }
        let panels = [
            ChartPanel(
                title: "Validation k-NN top-1 over iterations", xLabel: "iteration", yLabel: "top-1 (%)",
                series: zip(runs, evaluationRows).map { series($0, \.knnTop1, rows: $1, markers: true) }),
            ChartPanel(
                title: "Validation k-NN top-1 over wall time", xLabel: "minutes", yLabel: "top-1 (%)",
                series: zip(runs, evaluationRows).map {
                    series($0, \.knnTop1, x: \.elapsedSeconds, scale: 1.0 / 60, rows: $1, markers: true)
                }),
            ChartPanel(
                title: "Teacher target entropy (mean over crops of each crop's entropy)", xLabel: "iteration",
                yLabel: "nats",
                series: entropy),
            ChartPanel(
                title: "Prototypes in use (argmax of the teacher's targets)", xLabel: "iteration",
                yLabel: "prototypes", series: runs.map { series($0, \.prototypesInUse) }),
            ChartPanel(
                title: "Teacher CLS spread over images", xLabel: "iteration", yLabel: "mean std",
                series: runs.map { series($0, \.teacherCLSSpread) }),
            ChartPanel(
                title: "Teacher head output spread over images", xLabel: "iteration", yLabel: "mean std",
                series: runs.map { series($0, \.teacherHeadSpread) }),
        ]
        return LineChart.svg(title: title, panels: panels, columns: 2)
    }

    /// One line per run: k-NN at the first and last evaluation, the best, wall time, entropy and prototypes at the end.
    public static func summary(_ runs: [Run], prototypes: Int?) -> String {
        runs.map { run in
            let e = run.evaluations
            guard let first = e.first, let last = e.last, let best = e.max(by: { $0.top1 < $1.top1 }) else {
                return "\(run.name): no k-NN evaluations"
            }
            let end = run.training.last
            var line = String(
                format: "%@: k-NN top-1 %.1f%% at iteration %d -> %.1f%% at %d "
                    + "(gain %+.1f points; best %.1f%% at %d)",
                run.name, first.top1, first.iteration, last.top1, last.iteration, last.top1 - first.top1,
                best.top1, best.iteration)
            if let seconds = last.seconds { line += String(format: ", %.1f min", seconds / 60) }
            if let entropy = end?.teacherEntropy {
                line += String(format: "; teacher mean entropy %.3f", entropy)
                if let k = prototypes { line += String(format: " (%.2f ln K)", entropy / log(Double(k))) }
            }
            if let inUse = end?.prototypesInUse {
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
