// The scaling sweep's summary: reads the `bench step` JSON reports of a sweep folder, named
// {weak,strong}-STRATEGY-N.json, and writes scaling.csv (one row a point) and scaling.svg
// (images/s per rank, and scaling efficiency, against ranks, a line per mode and strategy).
// Efficiency: weak = per-rank throughput at N / at 1 rank; strong = throughput at N / (N x at 1 rank).
// The 1-rank point (FULL_SHARD, the same computation for every strategy) is every line's reference.

import DinoPlot
import Foundation

/// One point of a sweep.
public struct ScalingPoint: Sendable {
    public var mode: String, strategy: String, ranks: Int
    public var report: StepReport
}

/// Summarises a scaling sweep folder.
public enum ScalingReport {
    /// The points of `folder`, sorted by mode, strategy and ranks.
    public static func points(folder: String) throws -> [ScalingPoint] {
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".json") }
        var points: [ScalingPoint] = []
        for name in names {
            let parts = name.dropLast(5).split(separator: "-")
            guard parts.count == 3, ["weak", "strong"].contains(String(parts[0])), let ranks = Int(parts[2]) else {
                continue
            }
            let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name))
            let report = try JSONDecoder().decode(StepReport.self, from: data)
            points.append(
                ScalingPoint(mode: String(parts[0]), strategy: String(parts[1]), ranks: ranks, report: report))
        }
        return points.sorted { ($0.mode, $0.strategy, $0.ranks) < ($1.mode, $1.strategy, $1.ranks) }
    }

    /// Scaling efficiency of `point` against the 1-rank reference of its mode.
    static func efficiency(_ point: ScalingPoint, reference: StepReport?) -> Double? {
        guard let reference, reference.imagesPerSecond > 0 else { return nil }
        return point.mode == "weak"
            ? point.report.imagesPerSecondPerRank / reference.imagesPerSecondPerRank
            : point.report.imagesPerSecond / (Double(point.ranks) * reference.imagesPerSecond)
    }

    /// Writes FOLDER/scaling.csv and FOLDER/scaling.svg; returns the CSV text. `cores`: the cores
    /// the sweep ran on; the efficiency panel shows the most that N ranks on them can reach,
    /// min(1, cores / N) (ranks beyond the cores share them).
    @discardableResult
    public static func write(folder: String, title: String, cores: Int) throws -> String {
        let all = try points(folder: folder)
        guard !all.isEmpty else {
            throw CocoaError(
                .fileNoSuchFile,
                userInfo: [
                    NSLocalizedDescriptionKey:
                        "\(folder) holds no {weak,strong}-STRATEGY-N.json reports; run Benchmarks/scaling-sweep.sh "
                        + "first"
                ])
        }
        func reference(_ mode: String) -> StepReport? {
            all.first { $0.mode == mode && $0.ranks == 1 }?.report
        }
        var csv =
            "mode,strategy,ranks,images_per_rank,images_per_sec,images_per_sec_per_rank,efficiency,mfu,"
            + "time_step,time_compute,time_comm_exposed,time_comm_total,max_rss_bytes\n"
        for p in all {
            let r = p.report
            let e = efficiency(p, reference: reference(p.mode)).map { String(format: "%.3f", $0) } ?? ""
            csv +=
                "\(p.mode),\(p.strategy),\(p.ranks),\(r.imagesPerRank),"
                + String(
                    format: "%.4f,%.4f,", r.imagesPerSecond,
                    r.imagesPerSecondPerRank) + e
                + String(
                    format: ",%.3f,%.3f,%.3f,%.3f,%.3f,", r.mfu, r.timeStep, r.timeCompute,
                    r.timeCommunicationExposed, r.timeCommunicationTotal) + "\(r.maxRSSBytes)\n"
        }
        // A line per (mode, strategy), each starting at the shared 1-rank point.
        var throughput: [LineSeries] = [], efficiencies: [LineSeries] = []
        let lines = Array(Set(all.filter { $0.ranks > 1 }.map { "\($0.mode) \($0.strategy)" })).sorted()
        for line in lines {
            let parts = line.split(separator: " ").map(String.init)
            var members = all.filter { $0.mode == parts[0] && $0.strategy == parts[1] && $0.ranks > 1 }
            if let one = all.first(where: { $0.mode == parts[0] && $0.ranks == 1 }) { members.insert(one, at: 0) }
            throughput.append(
                LineSeries(
                    name: line, points: members.map { (Double($0.ranks), $0.report.imagesPerSecondPerRank) },
                    markers: true))
            efficiencies.append(
                LineSeries(
                    name: line,
                    points: members.compactMap { p in
                        efficiency(p, reference: reference(p.mode)).map { (Double(p.ranks), $0) }
                    }, markers: true))
        }
        let rankCounts = Array(Set(all.map { Double($0.ranks) })).sorted()
        efficiencies.append(
            LineSeries(name: "limit of \(cores) cores", points: rankCounts.map { ($0, min(1, Double(cores) / $0)) }))
        let svg = LineChart.svg(
            title: title,
            panels: [
                ChartPanel(
                    title: "Throughput per rank", xLabel: "ranks", yLabel: "images/s per rank", series: throughput,
                    logX: true,
                    xTicks: rankCounts),
                ChartPanel(
                    title: "Scaling efficiency", xLabel: "ranks", yLabel: "efficiency", series: efficiencies,
                    logX: true,
                    xTicks: rankCounts),
            ], columns: 2, panelWidth: 560, panelHeight: 360)
        try Data(csv.utf8).write(to: URL(fileURLWithPath: folder + "/scaling.csv"), options: .atomic)
        try Data(svg.utf8).write(to: URL(fileURLWithPath: folder + "/scaling.svg"), options: .atomic)
        return csv
    }
}
