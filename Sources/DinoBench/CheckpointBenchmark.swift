// Save and load throughput of the sharded checkpoint of a full training state (student, teacher,
// AdamW moments of backbone and heads) against raw sequential writes and reads of the same number
// of bytes in the same folder, measured in the same run. Every rank saves its own file at once;
// the time of a save or load is the slowest rank's. Files are fsynced, so the write figures include
// reaching the disk; reads may be served from the page cache, for the checkpoint and the raw file alike.

import DinoCheckpoint
import DinoConfig
import DinoCore
import DinoTraining
import Foundation

/// The result of `bench checkpoint`.
public struct CheckpointReport: Codable, Sendable {
    public var worldSize: Int
    public var bytesTotal: Int
    public var saveSeconds: Double
    public var loadSeconds: Double
    public var saveMBPerSecond: Double
    public var saveMBPerSecondPerRank: Double
    public var loadMBPerSecond: Double
    public var rawWriteMBPerSecond: Double
    public var rawReadMBPerSecond: Double
    public var saveRatio: Double
    public var loadRatio: Double

    enum CodingKeys: String, CodingKey {
        case worldSize = "world_size"
        case bytesTotal = "bytes_total"
        case saveSeconds = "save_seconds"
        case loadSeconds = "load_seconds"
        case saveMBPerSecond = "save_mb_per_sec"
        case saveMBPerSecondPerRank = "save_mb_per_sec_per_rank"
        case loadMBPerSecond = "load_mb_per_sec"
        case rawWriteMBPerSecond = "raw_write_mb_per_sec"
        case rawReadMBPerSecond = "raw_read_mb_per_sec"
        case saveRatio = "save_ratio_to_raw"
        case loadRatio = "load_ratio_to_raw"
    }
}

public enum CheckpointBenchmark {
    public static func run(
        config: TrainingConfig, communicator comm: any Communicator, folder: String
    ) throws -> CheckpointReport {
        let model = try SelfDistillation(config: config, communicator: comm, seed: 0)
        let checkpoint = folder + "/bench-checkpoint"
        try comm.barrier()
        let saveStart = MonotonicClock.seconds()
        try model.saveCheckpoint(to: checkpoint, iteration: 0)
        let save = try comm.allReduce(MonotonicClock.seconds() - saveStart, op: .max)
        let manifest = try ShardedCheckpoint.readManifest(checkpoint)
        let bytes = manifest.ranks.reduce(0) { $0 + $1.bytes }
        let mine = manifest.ranks[comm.rank].bytes
        try comm.barrier()
        let loadStart = MonotonicClock.seconds()
        _ = try model.loadCheckpoint(from: checkpoint)
        let load = try comm.allReduce(MonotonicClock.seconds() - loadStart, op: .max)

        // Raw sequential I/O of the same bytes per rank: 4 MiB writes, fsync; then read back.
        let raw = folder + String(format: "/bench-raw-%05d", comm.rank)
        let chunk = [UInt8](repeating: 0x5A, count: 4 << 20)
        try comm.barrier()
        let writeStart = MonotonicClock.seconds()
        let fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CheckpointError.io("cannot create \(raw)") }
        var written = 0
        while written < mine {
            let n = Swift.min(chunk.count, mine - written)
            let result = chunk.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, n) }
            guard result > 0 else {
                close(fd)
                throw CheckpointError.io("write to \(raw) failed")
            }
            written += result
        }
        fsync(fd)
        close(fd)
        let rawWrite = try comm.allReduce(MonotonicClock.seconds() - writeStart, op: .max)
        try comm.barrier()
        let readStart = MonotonicClock.seconds()
        if let handle = FileHandle(forReadingAtPath: raw) {
            while !handle.readData(ofLength: 4 << 20).isEmpty {}
            try? handle.close()
        }
        let rawRead = try comm.allReduce(MonotonicClock.seconds() - readStart, op: .max)
        unlink(raw)
        try comm.barrier()
        if comm.rank == 0 { try? FileManager.default.removeItem(atPath: checkpoint) }
        let megabytes = Double(bytes) / 1e6
        return CheckpointReport(
            worldSize: comm.worldSize, bytesTotal: bytes, saveSeconds: save, loadSeconds: load,
            saveMBPerSecond: megabytes / save, saveMBPerSecondPerRank: megabytes / save / Double(comm.worldSize),
            loadMBPerSecond: megabytes / load, rawWriteMBPerSecond: megabytes / rawWrite,
            rawReadMBPerSecond: megabytes / rawRead,
            saveRatio: rawWrite / save, loadRatio: rawRead / load)
    }
}
