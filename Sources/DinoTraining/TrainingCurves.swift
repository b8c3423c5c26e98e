// The picture of a training run: reads OUTPUT/metrics.jsonl (MetricsRecord lines, as the Trainer
// appends them) and draws, over iterations, the loss terms, the learning rate and weight decay, the
// throughput, the teacher's target entropy (collapse check) and the k-NN evaluations.

import DinoPlot
import Foundation

/// A field of a metrics record, as a plot coordinate.
typealias MetricsField = KeyPath<MetricsRecord, Double?>

/// Training curves from a metrics file.
public enum TrainingCurves {
    public typealias CurvesError = MetricsError

    /// The points (x, y) of the records that have both fields.
    static func points(
        _ records: [MetricsRecord], x: MetricsField = \.iterationValue, y: MetricsField,
        xScale: Double = 1
    ) -> [(x: Double, y: Double)] {
        records.compactMap { record in
            guard let xValue = record[keyPath: x], let yValue = record[keyPath: y] else { return nil }
            return (xValue * xScale, yValue)
        }
    }

    /// The SVG of the run whose metrics are at `path`.
    public static func svg(metrics path: String, title: String) throws -> String {
        let all = try MetricsFile.read(path)
        let training = all.filter(\.isTraining)
        guard !training.isEmpty else { throw CurvesError.empty(path) }
        func series(
            _ field: MetricsField, _ name: String, from rows: [MetricsRecord] = training,
            markers: Bool = false
        ) -> LineSeries {
            LineSeries(name: name, points: points(rows, y: field), markers: markers)
        }
        var panels = [
            ChartPanel(
                title: "Loss terms", xLabel: "iteration", yLabel: "loss",
                series: [
                    series(\.loss, "total"), series(\.dinoLocalCropsLoss, "dino local"),
                    series(\.dinoGlobalCropsLoss, "dino global"), series(\.ibotLoss, "ibot"),
                    series(\.koleoLoss, "koleo"),
                ] + (training.contains { $0.copyLoss != nil } ? [series(\.copyLoss, "copy")] : [])),
            ChartPanel(
                title: "Teacher targets (ln K = uniform)", xLabel: "iteration", yLabel: "entropy (nats)",
                series: [
                    series(\.teacherEntropy, "mean entropy"), series(\.teacherMeanEntropy, "entropy of mean"),
                ]),
            ChartPanel(
                title: "Teacher spread over images (0 = image-independent)", xLabel: "iteration",
                yLabel: "mean std",
                series: [
                    series(\.teacherCLSSpread, "CLS"),
                    series(\.teacherHeadSpread, "head bottleneck (normalised)"),
                ]),
            ChartPanel(title: "Learning rate", xLabel: "iteration", yLabel: "lr", series: [series(\.lr, "lr")]),
            ChartPanel(
                title: "Throughput", xLabel: "iteration", yLabel: "images/s",
                series: [
                    series(\.imagesPerSec, "total"), series(\.imagesPerSecPerRank, "per rank"),
                ]),
        ]
        let evaluations = all.filter { $0.knnTop1 != nil }
        if !evaluations.isEmpty {
            var knn = [series(\.knnTop1, "k-NN top-1", from: evaluations, markers: true)]
            if let first = evaluations.compactMap(\.knnTop1Init).first, let last = training.map(\.iteration).max() {
                knn.append(LineSeries(name: "at initialisation", points: [(0, first), (Double(last), first)]))
            }
            panels.append(ChartPanel(title: "Validation k-NN", xLabel: "iteration", yLabel: "top-1 (%)", series: knn))
        }
        panels.append(
            ChartPanel(
                title: "Schedules", xLabel: "iteration", yLabel: "value",
                series: [
                    series(\.wd, "weight decay"), series(\.mom, "teacher momentum"),
                    series(\.teacherTemp, "teacher temp"),
                ]))
        return LineChart.svg(title: title, panels: panels, columns: 2)
    }

    /// Writes the picture of `output`'s metrics.jsonl to `file` (through a temporary file).
    public static func write(output: String, to file: String) throws {
        let text = try svg(metrics: output + "/metrics.jsonl", title: "dinov2-fsdp: " + output)
        try Data(text.utf8).write(to: URL(fileURLWithPath: file), options: .atomic)
    }
}
