// TensorBoard event files: every metrics.jsonl record as scalar summaries, so `tensorboard --logdir
// OUTPUT/tensorboard` shows a run live. The format (what TensorBoard's reader expects):
//   file  = record*, the first record an Event with file_version "brain.Event:2"
//   record = length (uint64 LE), masked CRC32C of the 8 length bytes (uint32 LE), data, masked CRC32C
//            of data (uint32 LE); masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32)
//   Event  = wall_time (field 1, double), step (2, int64), file_version (3, string), summary (5),
//            session_log (7: status (1, enum) START = 1)
//   Summary = value* (field 1); Value = tag (1, string), simple_value (2, float)
// Tags are "group/key" with the metrics.jsonl key (TensorBoard groups cards by the part before '/'):
// loss, schedule, teacher, throughput, memory for training records, knn for every field of an evaluation
// record; per-rank arrays become one tag per rank ("memory/max_rss_bytes_by_rank/rank_3").

import Foundation

/// Appends scalar events to one TensorBoard event file (rank 0 of a run).
public final class TensorBoardWriter {
    public let path: String
    private let handle: FileHandle

    /// A new event file in `folder` (created if missing), named as TensorBoard's writers name theirs.
    /// `resumedAt` > 0 marks a resumed run: a SessionLog START at the next iteration makes TensorBoard drop
    /// the earlier files' points after `resumedAt` (steps that were run again).
    public init(folder: String, resumedAt: Int = 0) throws {
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch { throw MetricsError.unwritable(folder, reason: systemReason()) }
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        var name = "events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(host)"
        // Two writers in the same second (a quick resume) must not share a file.
        var suffix = 1
        while FileManager.default.fileExists(atPath: folder + "/" + name) {
            name = "events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(host).\(suffix)"
            suffix += 1
        }
        path = folder + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: nil),
            let handle = FileHandle(forWritingAtPath: path)
        else { throw MetricsError.unwritable(path, reason: systemReason()) }
        self.handle = handle
        var header = ProtoWriter()
        header.double(1, Date().timeIntervalSince1970)
        header.string(3, "brain.Event:2")
        try write(record: header.bytes)
        if resumedAt > 0 {
            var sessionLog = ProtoWriter()
            sessionLog.varint(1, 1)  // START
            var event = ProtoWriter()
            event.double(1, Date().timeIntervalSince1970)
            event.varint(2, UInt64(resumedAt + 1))
            event.message(7, sessionLog.bytes)
            try write(record: event.bytes)
        }
    }

    deinit { try? handle.close() }

    /// Writes `record` as one event at its iteration, every numeric field a scalar (one write: a reader
    /// never sees half an event, and it is on disk when this returns).
    public func append(_ record: MetricsRecord, wallTime: Double = Date().timeIntervalSince1970) throws {
        var summary = ProtoWriter()
        for (tag, value) in Self.scalars(of: record) {
            var entry = ProtoWriter()
            entry.string(1, tag)
            entry.float(2, Float(value))
            summary.message(1, entry.bytes)
        }
        var event = ProtoWriter()
        event.double(1, wallTime)
        event.varint(2, UInt64(record.iteration))
        event.message(5, summary.bytes)
        try write(record: event.bytes)
    }

    /// The (tag, value) scalars of `record`: every field metrics.jsonl holds, except the iteration (the step).
    public static func scalars(of record: MetricsRecord) -> [(tag: String, value: Double)] {
        guard let data = try? JSONEncoder().encode(record),
            let fields = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        else { return [] }
        // An evaluation record's fields all go in "knn" (its elapsed_seconds is another point than the
        // training record's of the same iteration).
        let evaluation = !record.isTraining
        var out: [(String, Double)] = []
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) where key != "iteration" {
            let prefix = (evaluation ? "knn" : group(of: key)) + "/" + key
            if let number = value as? NSNumber {
                out.append((prefix, number.doubleValue))
            } else if let numbers = value as? [NSNumber] {
                for (rank, number) in numbers.enumerated() {
                    out.append((prefix + "/rank_\(rank)", number.doubleValue))
                }
            }
        }
        return out
    }

    /// The TensorBoard group of a training record's key.
    static func group(of key: String) -> String {
        if key.hasPrefix("teacher_") && key != "teacher_temp" { return "teacher" }
        if key.hasSuffix("_loss") || key == "loss" { return "loss" }
        if ["lr", "wd", "mom", "teacher_temp"].contains(key) { return "schedule" }
        if key.hasPrefix("max_rss") { return "memory" }
        return "throughput"
    }

    private func write(record data: [UInt8]) throws {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(data.count + 16)
        let length = withUnsafeBytes(of: UInt64(data.count).littleEndian) { Array($0) }
        bytes += length
        bytes += withUnsafeBytes(of: CRC32C.masked(length).littleEndian) { Array($0) }
        bytes += data
        bytes += withUnsafeBytes(of: CRC32C.masked(data).littleEndian) { Array($0) }
        do { try handle.write(contentsOf: bytes) } catch { throw MetricsError.unwritable(path, reason: systemReason()) }
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord files checksum their records.
public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 == 1 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes { c = table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    /// The masked form stored in records (so that a CRC of data holding CRCs stays well distributed).
    public static func masked(_ bytes: [UInt8]) -> UInt32 {
        let c = checksum(bytes)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }
}

/// Protocol-buffer wire encoding of the few field kinds an Event needs.
struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func key(_ field: Int, _ wireType: UInt64) { raw(UInt64(field) << 3 | wireType) }

    mutating func raw(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func varint(_ field: Int, _ value: UInt64) {
        key(field, 0)
        raw(value)
    }

    mutating func double(_ field: Int, _ value: Double) {
        key(field, 1)
        bytes += withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
    }

    mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        bytes += withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
    }

    mutating func message(_ field: Int, _ body: [UInt8]) {
        key(field, 2)
        raw(UInt64(body.count))
        bytes += body
    }

    mutating func string(_ field: Int, _ text: String) { message(field, Array(text.utf8)) }
}
