// One line of OUTPUT/metrics.jsonl, as `train` writes it and the plots, the learning report and a
// resumed run read it back: a training record (every train.log_every iterations), a k-NN
// evaluation, or the run's final k-NN summary. Every field but the iteration is optional: a record
// carries only what was measured. JSON keys are the snake_case names below (the official
// training_metrics.json names where one exists: loss terms, lr, wd, mom).

import DinoCore
import Foundation

/// A metrics.jsonl record.
public struct MetricsRecord: Codable, Equatable, Sendable {
    public var iteration: Int
    // Training: losses averaged over ranks, schedules, throughput, memory, collapse diagnostics.
    public var loss: Double?
    public var dinoLocalCropsLoss: Double?
    public var dinoGlobalCropsLoss: Double?
    public var ibotLoss: Double?
    public var koleoLoss: Double?
    /// The copy-detection loss, in runs that train it (`copy_detection.loss_weight` > 0).
    public var copyLoss: Double?
    public var lr: Double?
    public var wd: Double?
    public var mom: Double?
    public var teacherTemp: Double?
    public var imagesPerSec: Double?
    public var imagesPerSecPerRank: Double?
    public var dataWaitFraction: Double?
    public var commExposedFraction: Double?
    public var maxRSSBytes: Int?
    /// Each rank's peak resident set size (maxRSSBytes is the largest).
    public var maxRSSBytesByRank: [Int]?
    public var skippedImages: Int?
    /// Unreadable images skipped since the run's first iteration, over all ranks (resumed runs continue it).
    public var skippedImagesTotal: Int?
    public var teacherEntropy: Double?
    public var teacherMeanEntropy: Double?
    public var teacherPrototypesInUse: Int?
    public var teacherCLSSpread: Double?
    public var teacherHeadSpread: Double?
    // Evaluation: the teacher's k-NN on the validation split; the final record adds the gain.
    public var knnTop1: Double?
    public var knnTop5: Double?
    public var knnTop1Init: Double?
    public var knnGain: Double?
    /// Wall time of the run so far (continued across resumes).
    public var elapsedSeconds: Double?

    public init(iteration: Int) { self.iteration = iteration }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case iteration, loss
        case dinoLocalCropsLoss = "dino_local_crops_loss"
        case dinoGlobalCropsLoss = "dino_global_crops_loss"
        case ibotLoss = "ibot_loss"
        case koleoLoss = "koleo_loss"
        case copyLoss = "copy_loss"
        case lr, wd, mom
        case teacherTemp = "teacher_temp"
        case imagesPerSec = "images_per_sec"
        case imagesPerSecPerRank = "images_per_sec_per_rank"
        case dataWaitFraction = "data_wait_fraction"
        case commExposedFraction = "comm_exposed_fraction"
        case maxRSSBytes = "max_rss_bytes"
        case maxRSSBytesByRank = "max_rss_bytes_by_rank"
        case skippedImages = "skipped_images"
        case skippedImagesTotal = "skipped_images_total"
        case teacherEntropy = "teacher_entropy"
        case teacherMeanEntropy = "teacher_mean_entropy"
        case teacherPrototypesInUse = "teacher_prototypes_in_use"
        case teacherCLSSpread = "teacher_cls_spread"
        case teacherHeadSpread = "teacher_head_spread"
        case knnTop1 = "knn_top1"
        case knnTop5 = "knn_top5"
        case knnTop1Init = "knn_top1_init"
        case knnGain = "knn_gain"
        case elapsedSeconds = "elapsed_seconds"
    }

    /// A training record (the loss is there).
    public var isTraining: Bool { loss != nil }

    /// The iteration as a plot coordinate.
    public var iterationValue: Double? { Double(iteration) }
    /// Prototypes in use as a plot coordinate.
    public var prototypesInUse: Double? { teacherPrototypesInUse.map(Double.init) }
}

/// A metrics file that cannot be used, naming the file and what is wrong with it.
public enum MetricsError: Error, CustomStringConvertible {
    case unreadable(String)
    case malformed(path: String, line: Int, reason: String)
    case empty(String)
    /// A file or folder that could not be written, and the system's reason (strerror at the failure).
    case unwritable(String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let path): return "cannot read \(path): is it a training output folder's metrics.jsonl?"
        case .malformed(let path, let line, let reason):
            return "\(path) line \(line) is not a metrics record (\(reason)); was it written by `dinov2-fsdp train`?"
        case .unwritable(let path, let reason):
            return "cannot write \(path) (\(reason)); is the output folder writable and its disk not full?"
        case .empty(let path):
            return "\(path) holds no training records yet (they come every train.log_every iterations)"
        }
    }
}

/// The C library's text for the last failed system call (for MetricsError.unwritable).
func systemReason() -> String { String(cString: strerror(errno)) }

/// Reads and appends metrics.jsonl files.
public enum MetricsFile {
    /// The records of `path`, in file order.
    public static func read(_ path: String) throws -> [MetricsRecord] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8)
        else {
            throw MetricsError.unreadable(path)
        }
        var records: [MetricsRecord] = []
        let decoder = JSONDecoder()
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            do {
                records.append(try decoder.decode(MetricsRecord.self, from: Data(trimmed.utf8)))
            } catch {
                throw MetricsError.malformed(path: path, line: index + 1, reason: decodingProblem(error))
            }
        }
        return records
    }

    /// A resumed run computes the iterations after `start` again: their old lines move from `path` to
    /// metrics.replaced.jsonl beside it (appended, nothing lost), so the curves, the report and the
    /// TensorBoard events (which drop them too) show each iteration once. Lines are moved as they are.
    public static func setAsideRecords(after start: Int, of path: String, log: Log) throws {
        guard start > 0, let data = FileManager.default.contents(atPath: path),
            let text = String(data: data, encoding: .utf8)
        else { return }
        var kept: [Substring] = [], replaced: [Substring] = []
        let decoder = JSONDecoder()
        for line in text.split(separator: "\n") where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            let iteration = (try? decoder.decode(MetricsRecord.self, from: Data(line.utf8)))?.iteration ?? 0
            if iteration > start { replaced.append(line) } else { kept.append(line) }
        }
        guard !replaced.isEmpty else { return }
        let aside = (path as NSString).deletingPathExtension + ".replaced.jsonl"
        do {
            let handle = FileHandle(forWritingAtPath: aside)
            if let handle {
                try handle.seekToEnd()
                try handle.write(contentsOf: Data((replaced.joined(separator: "\n") + "\n").utf8))
                try handle.close()
            } else {
                try Data((replaced.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: aside))
            }
            try Data((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8)
                .write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw MetricsError.unwritable(path, reason: systemReason())
        }
        log.main("\(replaced.count) record(s) after iteration \(start) will be computed again: moved to \(aside)")
    }

    /// Appends `record` as one line of `path` (created if missing).
    public static func append(_ record: MetricsRecord, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var data = try encoder.encode(record)
        data.append(0x0A)
        do {
            if let handle = FileHandle(forWritingAtPath: path) {
                defer { try? handle.close() }
                try handle.seekToEnd()
                try handle.write(contentsOf: data)
            } else {
                try data.write(to: URL(fileURLWithPath: path))
            }
        } catch {
            throw MetricsError.unwritable(path, reason: systemReason())
        }
    }
}
