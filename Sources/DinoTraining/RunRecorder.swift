// What rank 0 writes about a run besides checkpoints: OUTPUT/metrics.jsonl (the run's record; a
// failure to append stops the run like any lost output), TensorBoard events under OUTPUT/tensorboard
// (a viewer's copy: a failure warns once and the run goes on without them), and OUTPUT/run.json
// (how each launch was started: ranks, data, validation split, host; the report reads it).

import DinoCore
import Foundation

/// Rank 0's writer of metrics records and events.
public final class RunRecorder {
    public let metrics: String
    private var events: TensorBoardWriter?
    private let log: Log

    /// A recorder for the run in `output`, started (or resumed) at iteration `start`.
    public init(output: String, start: Int, log: Log) {
        metrics = output + "/metrics.jsonl"
        self.log = log
        do {
            events = try TensorBoardWriter(folder: output + "/tensorboard", resumedAt: start)
        } catch {
            log.warning("\(error); the run goes on without TensorBoard events")
        }
    }

    /// Appends `record` to metrics.jsonl and to the event file.
    public func append(_ record: MetricsRecord) throws {
        try MetricsFile.append(record, to: metrics)
        do {
            try events?.append(record)
        } catch {
            log.warning("\(error); no more TensorBoard events in this run (metrics.jsonl goes on)")
            events = nil
        }
    }
}

/// One launch of `train` in an output folder, as OUTPUT/run.json lists them (oldest first).
public struct RunLaunch: Codable, Equatable, Sendable {
    public var startedAt: String
    public var host: String
    public var worldSize: Int
    public var firstIteration: Int
    public var data: String
    public var validation: String?
    public var arguments: [String]

    enum CodingKeys: String, CodingKey {
        case startedAt = "started_at", host, worldSize = "world_size", firstIteration = "first_iteration", data
        case validation, arguments
    }

    public init(worldSize: Int, firstIteration: Int, data: String, validation: String?, arguments: [String]) {
        startedAt = ISO8601DateFormatter().string(from: Date())
        host = ProcessInfo.processInfo.hostName
        self.worldSize = worldSize
        self.firstIteration = firstIteration
        // Absolute, so that `report` finds the images from any working directory.
        self.data = URL(fileURLWithPath: data).standardizedFileURL.path
        self.validation = validation.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        self.arguments = arguments
    }

    /// The launches recorded in `output` (none when run.json is missing or unreadable).
    public static func all(in output: String) -> [RunLaunch] {
        guard let data = FileManager.default.contents(atPath: output + "/run.json") else { return [] }
        return (try? JSONDecoder().decode([RunLaunch].self, from: data)) ?? []
    }

    /// Adds this launch to `output`/run.json (written whole through a temporary file).
    public func record(in output: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let path = output + "/run.json"
        do {
            try encoder.encode(Self.all(in: output) + [self]).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw MetricsError.unwritable(path, reason: systemReason())
        }
    }
}
