// The picture of a training run: reads OUTPUT/metrics.jsonl (one JSON object a line, as the
// Trainer appends them) and draws, over iterations, the loss terms, the learning rate and weight
// decay, the throughput, the teacher's target entropy (collapse check) and the k-NN evaluations.

import DinoPlot
import Foundation

/// Training curves from a metrics file.
public enum TrainingCurves {
    /// Errors naming the file and what is wrong with it.
    public enum CurvesError: Error, CustomStringConvertible {
        case unreadable(String)
        case malformed(path: String, line: Int)
        case empty(String)

        public var description: String {
            switch self {
            case .unreadable(let path): return "cannot read \(path): is it a training output folder's metrics.jsonl?"
            case .malformed(let path, let line): return "\(path) line \(line) is not a JSON object"
            case .empty(let path): return "\(path) holds no training records yet (they come every train.log_every iterations)"
            }
        }
    }

    /// The records of `path`, in file order.
    public static func records(path: String) throws -> [[String: Any]] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw CurvesError.unreadable(path)
        }
        var records: [[String: Any]] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                throw CurvesError.malformed(path: path, line: index + 1)
            }
            records.append(object)
        }
        return records
    }

    /// The SVG of the run whose metrics are at `path`.
    public static func svg(metrics path: String, title: String) throws -> String {
        let all = try records(path: path)
        let training = all.filter { $0["loss"] != nil }
        guard !training.isEmpty else { throw CurvesError.empty(path) }
        func series(_ key: String, _ name: String? = nil, from rows: [[String: Any]] = training, markers: Bool = false) -> LineSeries {
            let points = rows.compactMap { row -> (x: Double, y: Double)? in
                guard let x = number(row["iteration"]), let y = number(row[key]) else { return nil }
                return (x, y)
            }
            return LineSeries(name: name ?? key, points: points, markers: markers)
        }
        var panels = [
            ChartPanel(title: "Loss terms", xLabel: "iteration", yLabel: "loss", series: [
                series("loss", "total"), series("dino_local_crops_loss", "dino local"),
                series("dino_global_crops_loss", "dino global"), series("ibot_loss", "ibot"), series("koleo_loss", "koleo"),
            ]),
            ChartPanel(title: "Teacher targets (ln K = uniform)", xLabel: "iteration", yLabel: "entropy (nats)", series: [
                series("teacher_entropy", "mean entropy"), series("teacher_mean_entropy", "entropy of mean"),
            ]),
            ChartPanel(title: "Teacher spread over images (0 = image-independent)", xLabel: "iteration",
                       yLabel: "mean std", series: [series("teacher_cls_spread", "CLS"),
                                                    series("teacher_head_spread", "head bottleneck (normalised)")]),
            ChartPanel(title: "Learning rate", xLabel: "iteration", yLabel: "lr", series: [series("lr")]),
            ChartPanel(title: "Throughput", xLabel: "iteration", yLabel: "images/s", series: [
                series("images_per_sec", "total"), series("images_per_sec_per_rank", "per rank"),
            ]),
        ]
        let evaluations = all.filter { $0["knn_top1"] != nil }
        if !evaluations.isEmpty {
            var knn = [series("knn_top1", "k-NN top-1", from: evaluations, markers: true)]
            let initial = evaluations.compactMap { number($0["knn_top1_init"]) }
            if let first = initial.first, let last = training.compactMap({ number($0["iteration"]) }).max() {
                knn.append(LineSeries(name: "at initialisation", points: [(0, first), (last, first)]))
            }
            panels.append(ChartPanel(title: "Validation k-NN", xLabel: "iteration", yLabel: "top-1 (%)", series: knn))
        }
        panels.append(ChartPanel(title: "Schedules", xLabel: "iteration", yLabel: "value", series: [
            series("wd", "weight decay"), series("mom", "teacher momentum"), series("teacher_temp", "teacher temp"),
        ]))
        return LineChart.svg(title: title, panels: panels, columns: 2)
    }

    /// Writes the picture of `output`'s metrics.jsonl to `file` (through a temporary file).
    public static func write(output: String, to file: String) throws {
        let text = try svg(metrics: output + "/metrics.jsonl", title: "dinov2-fsdp: " + output)
        try Data(text.utf8).write(to: URL(fileURLWithPath: file), options: .atomic)
    }

    static func number(_ value: Any?) -> Double? {
        if let n = value as? NSNumber { return n.doubleValue }
        return nil
    }
}
