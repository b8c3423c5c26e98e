// `dinov2-fsdp report RUN` and the end of `train`: one self-contained HTML page of a training output
// folder (styles inline, curves as inline SVG, the patch picture as a data: URL; nothing fetched).
// Sections, each an element with its id: summary, configuration (config.yaml and every launch in
// run.json), curves (the TrainingCurves panels), knn (every evaluation), throughput (images/s, data
// wait, exposed communication and each rank's peak memory over the run), checkpoints (folders with
// their iterations and sizes), pca (the teacher's patch features on validation images, or why not).

import DinoConfig
import DinoData
import Foundation

/// The HTML report of a run folder.
public enum RunReport {
    /// The section ids, in page order (the tests look for each).
    public static let sections = ["summary", "configuration", "curves", "knn", "throughput", "checkpoints", "pca"]

    /// The patch-feature section's content: a picture with what it shows, or the reason there is none.
    public enum PictureSection: Sendable {
        case picture(PatchPicture, caption: String)
        case missing(String)

        /// The reason given when the run names no validation split.
        public static let noValidation = missing(RunReport.noValidation)
    }

    /// The page for `output`, whose metrics.jsonl must hold at least one training record.
    public static func html(output: String, picture: PictureSection) throws -> String {
        let records = try MetricsFile.read(output + "/metrics.jsonl")
        let training = records.filter(\.isTraining)
        guard !training.isEmpty else { throw MetricsError.empty(output + "/metrics.jsonl") }
        let configText = (try? String(contentsOfFile: output + "/config.yaml", encoding: .utf8)) ?? ""
        let config = try? ConfigLoader.load(yaml: configText, source: output + "/config.yaml")
        let launches = RunLaunch.all(in: output)
        let curves = try TrainingCurves.svg(metrics: output + "/metrics.jsonl", title: "Training curves")

        var page = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>dinov2-fsdp run \(escape(output))</title>
            <style>
            body { font-family: Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 940px; color: #222; }
            h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
            table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
            td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
            th { background: #f4f4f4; } td.text, th.text { text-align: left; }
            pre { background: #f7f7f7; padding: 8px; font-size: 12px; max-height: 420px; overflow: auto; }
            svg { max-width: 100%; height: auto; } img { max-width: 100%; image-rendering: pixelated; }
            .note { color: #666; font-size: 13px; }
            </style></head><body>
            <h1>dinov2-fsdp run: \(escape(output))</h1>

            """
        page += summary(records: records, training: training, config: config, launches: launches)
        page += section("configuration", "Configuration") {
            var text = ""
            if !launches.isEmpty {
                text += table(
                    ["started (UTC)", "host", "ranks", "from iteration", "data", "validation"],
                    textColumns: [0, 1, 4, 5],
                    rows: launches.map {
                        [
                            $0.startedAt, $0.host, "\($0.worldSize)", "\($0.firstIteration)", $0.data,
                            $0.validation ?? "none",
                        ]
                    })
            }
            text += "<pre>\(escape(configText.isEmpty ? "(config.yaml is missing)" : configText))</pre>\n"
            return text
        }
        page += section("curves", "Curves") { curves }
        page += knnSection(records)
        page += throughputSection(training)
        page += checkpointSection(output)
        page += section("pca", "Patch features of the teacher") {
            switch picture {
            case .picture(let drawn, let caption):
                // Small crops drawn at least 448 px wide, pixels kept square (image-rendering: pixelated).
                let width = min(900, max(448, 2 * drawn.size))
                return "<p class=\"note\">\(escape(caption))</p>\n<img alt=\"patch feature PCA\" "
                    + "style=\"width: \(width)px\" src=\"data:image/png;base64,\(drawn.png.base64EncodedString())\">\n"
            case .missing(let why):
                return "<p class=\"note\">\(escape(why))</p>\n"
            }
        }
        let generated = ISO8601DateFormatter().string(from: Date())
        page += "<p class=\"note\">Written by dinov2-fsdp at \(generated).</p>\n</body></html>\n"
        return page
    }

    /// Writes the page to `file` (default OUTPUT/report.html) through a temporary file.
    public static func write(output: String, picture: PictureSection, to file: String? = nil) throws -> String {
        let path = file ?? output + "/report.html"
        let text = try html(output: output, picture: picture)
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw MetricsError.unwritable(path, reason: systemReason())
        }
        return path
    }

    static let noValidation =
        "No labelled validation split is known for this run (it was trained without --val): "
        + "`dinov2-fsdp report RUN --val FOLDER` draws the picture."

    /// The patch-feature section for `model` on up to `images` images of `validation` (one per class
    /// first); collective, nil on ranks other than 0.
    public static func pictureSection(
        model: SelfDistillation, validation: ImageDataset?, source: String?, images: Int = 4, iteration: Int? = nil
    ) throws -> PictureSection? {
        guard let validation, validation.count > 0 else {
            return model.communicatorRank == 0
                ? .missing(noValidation) : nil
        }
        let chosen = try PatchPicture.sample(of: validation, count: images)
        guard
            let picture = try PatchPicture.draw(
                model: model, dataset: chosen, communicator: model.checkpointCommunicator)
        else { return nil }
        let at = iteration.map { " at iteration \($0)" } ?? ""
        let caption = String(
            format: "The teacher%@ on %d image(s) of %@: each view, then its final-norm patch tokens by PCA (the "
                + "first component split at its mean marks the foreground, %.0f %% of the patches; three "
                + "foreground components as RGB, background black).", at, picture.images, source ?? "validation",
            100 * picture.foregroundShare)
        return .picture(picture, caption: caption)
    }

    // MARK: - Sections

    static func summary(
        records: [MetricsRecord], training: [MetricsRecord], config: TrainingConfig?, launches: [RunLaunch]
    ) -> String {
        let last = training[training.count - 1]
        let total = config?.endIteration
        var rows: [[String]] = []
        if let config {
            let student = config.student
            let model = "\(student.arch.rawValue), patch \(student.patchSize), \(student.registerTokens) registers"
            rows.append(["model", model + ", \(config.dino.headPrototypes) prototypes"])
        }
        let done = total.map { last.iteration >= $0 ? "finished" : "stopped or running" } ?? "unknown"
        rows.append(["iterations", "\(last.iteration) of \(total.map(String.init) ?? "?") (\(done))"])
        if let ranks = launches.last?.worldSize ?? last.maxRSSBytesByRank?.count { rows.append(["ranks", "\(ranks)"]) }
        if let loss = last.loss { rows.append(["last loss", String(format: "%.4f", loss)]) }
        if let knn = records.last(where: { $0.knnTop1 != nil }), let top1 = knn.knnTop1 {
            var text = String(format: "%.1f %% top-1 at iteration %d", top1, knn.iteration)
            if let gain = knn.knnGain { text += String(format: " (%+.1f points over the initialisation)", gain) }
            rows.append(["k-NN", text])
        }
        if let rate = median(training.compactMap(\.imagesPerSec)) {
            rows.append(["throughput", String(format: "%.2f images/s (median over the records)", rate)])
        }
        if let peak = training.compactMap(\.maxRSSBytes).max() {
            rows.append(["peak memory", String(format: "%.0f MiB on the largest rank", Double(peak) / 1_048_576)])
        }
        if let seconds = records.compactMap(\.elapsedSeconds).max() {
            rows.append(["wall time", String(format: "%.1f min", seconds / 60)])
        }
        return section("summary", "Summary") { table(nil, textColumns: [0, 1], rows: rows) }
    }

    static func knnSection(_ records: [MetricsRecord]) -> String {
        let evaluations = records.filter { $0.knnTop1 != nil }
        return section("knn", "k-NN evaluations (teacher, k 20, validation split)") {
            guard !evaluations.isEmpty else {
                return "<p class=\"note\">No evaluation: the run had no validation split (--val) or "
                    + "evaluation.eval_period_iterations was 0.</p>\n"
            }
            return table(
                ["iteration", "top-1 %", "top-5 %", "gain (points)", "elapsed (min)"], textColumns: [],
                rows: evaluations.map { r in
                    [
                        "\(r.iteration)", format(r.knnTop1, "%.2f"), format(r.knnTop5, "%.2f"),
                        format(r.knnGain, "%+.2f"), format(r.elapsedSeconds.map { $0 / 60 }, "%.2f"),
                    ]
                })
        }
    }

    static func throughputSection(_ training: [MetricsRecord]) -> String {
        // At most 24 rows, evenly over the run, the last record always among them.
        let stride = max(1, (training.count + 23) / 24)
        var shown = Swift.stride(from: 0, to: training.count, by: stride).map { training[$0] }
        if shown.last?.iteration != training.last?.iteration, let last = training.last { shown.append(last) }
        let ranks = training.compactMap { $0.maxRSSBytesByRank?.count }.max() ?? 0
        let header =
            ["iteration", "images/s", "per rank", "data wait %", "exposed comm %"]
            + (ranks > 0 ? (0..<ranks).map { "rank \($0) MiB" } : ["peak MiB"])
        let rows = shown.map { r -> [String] in
            let memory: [String] =
                ranks > 0
                ? (0..<ranks).map { rank in
                    guard let all = r.maxRSSBytesByRank, rank < all.count else { return "" }
                    return String(format: "%.0f", Double(all[rank]) / 1_048_576)
                } : [format(r.maxRSSBytes.map { Double($0) / 1_048_576 }, "%.0f")]
            let common: [String] = [
                "\(r.iteration)", format(r.imagesPerSec, "%.2f"), format(r.imagesPerSecPerRank, "%.2f"),
                format(r.dataWaitFraction.map { $0 * 100 }, "%.1f"),
                format(r.commExposedFraction.map { $0 * 100 }, "%.1f"),
            ]
            return common + memory
        }
        return section("throughput", "Throughput and memory per rank") {
            "<p class=\"note\">Images per second of the slowest rank over each logging window; peak resident "
                + "memory of every rank so far.</p>\n" + table(header, textColumns: [], rows: rows)
        }
    }

    static func checkpointSection(_ output: String) -> String {
        let folders = Trainer.checkpoints(in: output)
        return section("checkpoints", "Checkpoints") {
            guard !folders.isEmpty else {
                return "<p class=\"note\">No checkpoint in \(escape(output))/checkpoints.</p>\n"
            }
            let manager = FileManager.default
            let rows = folders.map { folder -> [String] in
                let files = (try? manager.contentsOfDirectory(atPath: folder)) ?? []
                let bytes = files.compactMap {
                    (try? manager.attributesOfItem(atPath: folder + "/" + $0))?[.size] as? Int
                }.reduce(0, +)
                let complete = files.contains("manifest.json") ? "yes" : "no (being written or damaged)"
                let written = (try? manager.attributesOfItem(atPath: folder))?[.modificationDate] as? Date
                return [
                    (folder as NSString).lastPathComponent, "\(Int(folder.suffix(8)) ?? -1)",
                    String(format: "%.1f", Double(bytes) / 1_048_576), "\(files.count)", complete,
                    written.map { ISO8601DateFormatter().string(from: $0) } ?? "",
                ]
            }
            return table(
                ["folder", "iteration", "MiB", "files", "manifest", "written (UTC)"], textColumns: [0, 4, 5], rows: rows
            )
        }
    }

    // MARK: - HTML pieces

    static func section(_ id: String, _ title: String, _ body: () -> String) -> String {
        "<section id=\"\(id)\">\n<h2>\(escape(title))</h2>\n\(body())</section>\n"
    }

    static func table(_ header: [String]?, textColumns: Set<Int>, rows: [[String]]) -> String {
        func cells(_ row: [String], tag: String) -> String {
            row.enumerated().map { column, value in
                let style = textColumns.contains(column) ? " class=\"text\"" : ""
                return "<\(tag)\(style)>\(escape(value))</\(tag)>"
            }.joined()
        }
        var out = "<table>\n"
        if let header { out += "<tr>\(cells(header, tag: "th"))</tr>\n" }
        for row in rows { out += "<tr>\(cells(row, tag: "td"))</tr>\n" }
        return out + "</table>\n"
    }

    static func format(_ value: Double?, _ pattern: String) -> String {
        value.map { String(format: pattern, $0) } ?? ""
    }

    static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
