// Sharded checkpoints of a SelfDistillation run. Layout of one checkpoint folder:
//   rank-00000.h5 ...   one file per rank: for every model part and unit, the rank's shards of the
//                       student, the teacher and both AdamW moments (datasets <part>/<kind>/unit-<u>),
//                       and (every rank, identical) the softmax centers
//   manifest.json       written by rank 0 after every rank has finished: format and version,
//                       iteration, optimizer steps, world size, strategy and shard count, resolved
//                       config, every tensor's name, shape, unit and offset, every unit's size,
//                       and per rank its shard index, file name, size and checksum
// Every file goes through a temporary name, fsync and rename; the folder counts as a checkpoint
// only once its manifest exists, so a crash during a save never looks like a finished one.
// Loading reads, for each unit, just the element range this rank now owns, from whichever old
// shards cover it: the state loads exactly at any rank count and any sharding strategy.

import DinoCheckpoint
import DinoConfig
import DinoCore
import DinoModel
import DinoSharding
import Foundation

/// What can go wrong with a checkpoint; each case names the file and what to do.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case notFound(String)
    case incomplete(String)
    case versionMismatch(found: Int, expected: Int, path: String)
    case corrupt(file: String, reason: String)
    case mismatch(String)
    case io(String)

    public var description: String {
        switch self {
        case .notFound(let path):
            return "no checkpoint folder \(path)"
        case .incomplete(let path):
            return "checkpoint \(path) is incomplete (no manifest.json): a save was interrupted; use an earlier checkpoint"
        case .versionMismatch(let found, let expected, let path):
            return "checkpoint \(path) has format version \(found), this build reads version \(expected)"
        case .corrupt(let file, let reason):
            return "checkpoint file \(file) is damaged: \(reason)"
        case .mismatch(let text):
            return "checkpoint does not fit this run: \(text)"
        case .io(let text):
            return "checkpoint write failed: \(text) (earlier checkpoints are untouched)"
        }
    }
}

/// The manifest of a checkpoint.
public struct CheckpointManifest: Codable, Sendable, Equatable {
    public static let format = "dinov2-fsdp-checkpoint"
    public static let currentVersion = 1

    public struct Tensor: Codable, Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var unit: Int
        public var offset: Int
    }

    public struct Part: Codable, Sendable, Equatable {
        public var name: String
        public var unitCounts: [Int]
        public var tensors: [Tensor]
    }

    public struct RankFile: Codable, Sendable, Equatable {
        public var rank: Int
        public var shardIndex: Int
        public var file: String
        public var bytes: Int
        public var checksum: String
    }

    public var format: String
    public var version: Int
    public var iteration: Int
    public var optimizerSteps: Int
    public var worldSize: Int
    public var strategy: String
    public var shards: Int
    public var config: String
    public var parts: [Part]
    public var ranks: [RankFile]
}

extension SelfDistillation {
    /// Writes this rank's shards and (rank 0) the manifest to `folder`; collective.
    /// `iteration` is the next iteration the run will compute.
    public func saveCheckpoint(to folder: String, iteration: Int) throws {
        let comm = communicator.base
        let manager = FileManager.default
        do { try manager.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            throw CheckpointError.io("cannot create \(folder): \(error.localizedDescription)")
        }
        let name = String(format: "rank-%05d.h5", comm.rank)
        let final = folder + "/" + name, temporary = final + ".tmp"
        try? manager.removeItem(atPath: temporary)
        do {
            let file = try HDF5File.create(temporary, truncate: true)
            try file.setAttribute("format", string: CheckpointManifest.format)
            try file.setAttribute("version", int: Int64(CheckpointManifest.currentVersion))
            try file.setAttribute("rank", int: Int64(comm.rank))
            try file.setAttribute("iteration", int: Int64(iteration))
            for part in parts {
                for u in part.table.units.indices {
                    let count = part.student.plan.shardCount(u)
                    for (kind, pointer) in [("student", part.student.parametersShard[u]), ("teacher", part.teacher.parametersShard[u]),
                                            ("adam_m", part.firstMoment[u]), ("adam_v", part.secondMoment[u])] {
                        try file.write("\(part.name)/\(kind)/unit-\(u)", values: UnsafeBufferPointer(start: pointer, count: count),
                                       shape: [count])
                    }
                }
            }
            for (label, center) in [("dino", dinoCenter), ("ibot", ibotCenter)] {
                try file.write("centers/\(label)", values: UnsafeBufferPointer(start: center.values.base, count: center.prototypes),
                               shape: [center.prototypes])
                if let pending = center.pendingBatchCenter {  // float64, as held: resume must be exact
                    try file.write("centers/\(label)_pending", doubles: pending, shape: [pending.count])
                }
            }
            try file.flush()
        } catch {
            try? manager.removeItem(atPath: temporary)
            throw CheckpointError.io("\(temporary): \(error)")
        }
        try Self.durableRename(temporary, to: final)
        let (bytes, checksum) = try Self.checksum(of: final)

        // Every rank's file is complete before rank 0 writes the manifest.
        var table = [Int64](repeating: 0, count: 4 * comm.worldSize)
        let mine: [Int64] = [Int64(comm.rank), Int64(backbone.student.plan.shardIndex), Int64(bytes),
                             Int64(bitPattern: checksum)]
        try mine.withUnsafeBufferPointer { m in try table.withUnsafeMutableBufferPointer { try comm.allGather(m, into: $0) } }
        if comm.rank == 0 {
            let manifest = CheckpointManifest(
                format: CheckpointManifest.format, version: CheckpointManifest.currentVersion, iteration: iteration,
                optimizerSteps: optimizerSteps, worldSize: comm.worldSize, strategy: config.fsdp.shardingStrategy.rawValue,
                shards: backbone.student.plan.shards, config: ConfigLoader.yaml(config),
                parts: parts.map { part in
                    CheckpointManifest.Part(name: part.name, unitCounts: part.table.units.map(\.count),
                                            tensors: part.table.entries.map {
                                                CheckpointManifest.Tensor(name: $0.name, shape: $0.shape, unit: $0.unit, offset: $0.offset)
                                            })
                },
                ranks: (0..<comm.worldSize).map { r in
                    CheckpointManifest.RankFile(rank: r, shardIndex: Int(table[4 * r + 1]), file: String(format: "rank-%05d.h5", r),
                                                bytes: Int(table[4 * r + 2]),
                                                checksum: String(UInt64(bitPattern: table[4 * r + 3]), radix: 16))
                })
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let path = folder + "/manifest.json"
            do { try encoder.encode(manifest).write(to: URL(fileURLWithPath: path + ".tmp")) } catch {
                throw CheckpointError.io("\(path).tmp: \(error.localizedDescription)")
            }
            try Self.durableRename(path + ".tmp", to: path)
            Self.syncDirectory(folder)
        }
        try comm.barrier()
    }

    /// Reads the manifest of the checkpoint in `folder`, checking its format and version.
    public static func readManifest(_ folder: String) throws -> CheckpointManifest {
        let path = folder + "/manifest.json"
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CheckpointError.notFound(folder)
        }
        guard FileManager.default.fileExists(atPath: path) else { throw CheckpointError.incomplete(folder) }
        let manifest: CheckpointManifest
        do {
            manifest = try JSONDecoder().decode(CheckpointManifest.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw CheckpointError.corrupt(file: path, reason: "not a readable manifest (\(error))")
        }
        guard manifest.format == CheckpointManifest.format else {
            throw CheckpointError.corrupt(file: path, reason: "format '\(manifest.format)' is not \(CheckpointManifest.format)")
        }
        guard manifest.version == CheckpointManifest.currentVersion else {
            throw CheckpointError.versionMismatch(found: manifest.version, expected: CheckpointManifest.currentVersion, path: path)
        }
        return manifest
    }

    /// Checks that every rank file exists with the recorded size and checksum; names the first bad one.
    public static func verifyCheckpoint(_ folder: String) throws -> CheckpointManifest {
        let manifest = try readManifest(folder)
        try verifyFiles(manifest.ranks, in: folder, worldSize: manifest.worldSize)
        return manifest
    }

    /// Checks the size and checksum of each of `files`.
    static func verifyFiles(_ files: [CheckpointManifest.RankFile], in folder: String, worldSize: Int) throws {
        for file in files {
            let path = folder + "/" + file.file
            guard FileManager.default.fileExists(atPath: path) else {
                throw CheckpointError.corrupt(file: path, reason: "missing (rank \(file.rank) of \(worldSize))")
            }
            let (bytes, checksum) = try checksum(of: path)
            guard bytes == file.bytes else {
                throw CheckpointError.corrupt(file: path, reason: "\(bytes) bytes, the manifest says \(file.bytes) (truncated?)")
            }
            guard String(checksum, radix: 16) == file.checksum else {
                throw CheckpointError.corrupt(file: path, reason: "checksum \(String(checksum, radix: 16)) differs from \(file.checksum)")
            }
        }
    }

    /// The model saved in `path` (a checkpoint folder, or a training output folder: its newest complete
    /// checkpoint), rebuilt from the configuration the checkpoint carries, on this job's ranks.
    public static func restored(from path: String, communicator comm: any Communicator)
        throws -> (model: SelfDistillation, folder: String, iteration: Int)
    {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            // A backbone exported by `checkpoint export`: the configuration travels as an attribute.
            let text: String
            do { text = try HDF5File.open(path).stringAttribute("config") } catch {
                throw CheckpointError.notFound("\(path) is a file without a `config` attribute; pass a checkpoint folder, or a file "
                    + "written by `dinov2-fsdp checkpoint export`")
            }
            var config = try ConfigLoader.load(yaml: text, source: path)
            config.fsdp.shardingStrategy = .fullShard
            config.student.pretrainedWeights = path
            let model = try SelfDistillation(config: config.resolved(worldSize: comm.worldSize), communicator: comm,
                                             seed: UInt64(config.train.seed))
            return (model, path, 0)
        }
        var candidates = [path]
        if !manager.fileExists(atPath: path + "/manifest.json") {
            candidates = Trainer.checkpoints(in: path).reversed()
            guard !candidates.isEmpty else {
                throw CheckpointError.notFound("\(path) holds neither manifest.json nor checkpoints/checkpoint-*; "
                    + "pass a checkpoint folder or a training output folder")
            }
        }
        var lastError: Error = CheckpointError.notFound(path)
        for folder in candidates {
            do {
                let manifest = try readManifest(folder)
                var config = try ConfigLoader.load(yaml: manifest.config, source: folder + "/manifest.json")
                // Loading is strategy-agnostic; the saved strategy may not fit this job's rank count.
                config.fsdp.shardingStrategy = .fullShard
                let model = try SelfDistillation(config: config.resolved(worldSize: comm.worldSize), communicator: comm,
                                                 seed: UInt64(config.train.seed))
                return (model, folder, try model.loadCheckpoint(from: folder))
            } catch let error as CheckpointError {
                // A newer but damaged checkpoint of a run: fall back to the previous complete one.
                if candidates.count == 1 { throw error }
                lastError = error
            }
        }
        throw lastError
    }

    /// Sets the student and teacher backbones from `path`, an HDF5 file with one dataset per tensor under
    /// the official names and PyTorch shapes (what `checkpoint export` writes); each rank reads only its
    /// shard's ranges. Every backbone tensor must be present with its shape.
    public func loadBackboneWeights(from path: String) throws {
        let file: HDF5File
        do { file = try HDF5File.open(path) } catch {
            throw CheckpointError.notFound("student.pretrained_weights: \(path) is missing or not HDF5")
        }
        let part = backbone
        for entry in part.table.entries {
            let name = CheckpointExport.officialName(entry.name)
            let shape: [Int]
            do { shape = try file.shape(of: name) } catch {
                throw CheckpointError.mismatch("\(path) has no tensor \(name) (another architecture? student.arch and the "
                    + "student.* keys must match the file)")
            }
            guard shape == entry.shape else {
                throw CheckpointError.mismatch("\(path): \(name) has shape \(shape), this model's is \(entry.shape)")
            }
            let count = entry.shape.reduce(1, *)
            let mine = part.student.plan.shardRange(entry.unit)
            let lower = Swift.max(mine.lowerBound, entry.offset), upper = Swift.min(mine.upperBound, entry.offset + count)
            guard lower < upper else { continue }
            let target = part.student.parametersShard[entry.unit] + (lower - mine.lowerBound)
            try file.read(name, range: (lower - entry.offset)..<(upper - entry.offset),
                          into: UnsafeMutableBufferPointer(start: target, count: upper - lower))
        }
        part.copyStudentToTeacher()
    }

    /// Loads the checkpoint in `folder` into this run, whatever rank count and strategy wrote it;
    /// returns the iteration to continue from. Collective only in that every rank reads.
    public func loadCheckpoint(from folder: String) throws -> Int {
        let manifest = try Self.readManifest(folder)
        guard manifest.parts.map(\.name) == parts.map(\.name) else {
            throw CheckpointError.mismatch("parts \(manifest.parts.map(\.name)) vs this run's \(parts.map(\.name))")
        }
        // The old shards this rank's ranges overlap (and shard 0, which holds the centers): only
        // their files are checksummed and opened. Replicas (HYBRID_SHARD, NO_SHARD) hold the same data.
        var needed: Set<Int> = [0]
        for part in parts {
            for u in part.table.units.indices {
                let count = part.table.units[u].count
                let oldShard = CollectiveShape.padded(count, toMultipleOf: manifest.shards) / manifest.shards
                let mine = part.student.plan.shardRange(u)
                let upper = Swift.min(mine.upperBound, count)
                if mine.lowerBound < upper { needed.formUnion((mine.lowerBound / oldShard)...((upper - 1) / oldShard)) }
            }
        }
        var chosen: [Int: CheckpointManifest.RankFile] = [:]
        for rankFile in manifest.ranks where needed.contains(rankFile.shardIndex) && chosen[rankFile.shardIndex] == nil {
            chosen[rankFile.shardIndex] = rankFile
        }
        try Self.verifyFiles(Array(chosen.values).sorted { $0.rank < $1.rank }, in: folder, worldSize: manifest.worldSize)
        var files: [Int: HDF5File] = [:]
        for (index, rankFile) in chosen { files[index] = try HDF5File.open(folder + "/" + rankFile.file) }
        for (part, saved) in zip(parts, manifest.parts) {
            let expected = part.table.entries.map { CheckpointManifest.Tensor(name: $0.name, shape: $0.shape, unit: $0.unit, offset: $0.offset) }
            guard saved.tensors == expected, saved.unitCounts == part.table.units.map(\.count) else {
                throw CheckpointError.mismatch("the \(part.name) tensors differ from this configuration's (another architecture?)")
            }
            for u in part.table.units.indices {
                let count = part.table.units[u].count
                let oldShard = CollectiveShape.padded(count, toMultipleOf: manifest.shards) / manifest.shards
                let mine = part.student.plan.shardRange(u)
                let real = mine.lowerBound..<Swift.max(mine.lowerBound, Swift.min(mine.upperBound, count))
                for (kind, pointer) in [("student", part.student.parametersShard[u]), ("teacher", part.teacher.parametersShard[u]),
                                        ("adam_m", part.firstMoment[u]), ("adam_v", part.secondMoment[u])] {
                    pointer.setToZero(count: part.student.plan.shardCount(u))
                    var position = real.lowerBound
                    while position < real.upperBound {
                        let index = position / oldShard
                        let upper = Swift.min(real.upperBound, (index + 1) * oldShard)
                        guard let file = files[index] else {
                            throw CheckpointError.corrupt(file: folder, reason: "no rank file holds shard \(index)")
                        }
                        let local = (position - index * oldShard)..<(upper - index * oldShard)
                        try file.read("\(part.name)/\(kind)/unit-\(u)", range: local,
                                      into: UnsafeMutableBufferPointer(start: pointer + (position - mine.lowerBound), count: local.count))
                        position = upper
                    }
                }
            }
        }
        guard let first = files[0] else { throw CheckpointError.corrupt(file: folder, reason: "no file for shard 0") }
        for (label, center) in [("dino", dinoCenter), ("ibot", ibotCenter)] {
            let values = try first.readDoubles("centers/\(label)").map { Float($0) }
            let pending = try? first.readDoubles("centers/\(label)_pending")
            center.restore(center: values, pending: pending)
        }
        optimizerSteps = manifest.optimizerSteps
        return manifest.iteration
    }

    // MARK: - Files

    /// Renames `from` to `to` after flushing `from` to disk, so `to` never names a partial file.
    public static func durableRename(_ from: String, to: String) throws {
        let fd = open(from, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
        guard rename(from, to) == 0 else {
            throw CheckpointError.io("cannot rename \(from) to \(to): \(String(cString: strerror(errno)))")
        }
    }

    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    /// File size and a 64-bit checksum of its bytes (multiply-xorshift over 8-byte words).
    static func checksum(of path: String) throws -> (Int, UInt64) {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CheckpointError.corrupt(file: path, reason: "cannot be opened")
        }
        defer { try? handle.close() }
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325, total = 0
        while true {
            let chunk = handle.readData(ofLength: 1 << 22)
            if chunk.isEmpty { break }
            total += chunk.count
            chunk.withUnsafeBytes { raw in
                var i = 0
                while i + 8 <= raw.count {
                    hash = (hash ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x100_0000_01B3
                    hash ^= hash >> 29
                    i += 8
                }
                while i < raw.count {
                    hash = (hash ^ UInt64(raw[i])) &* 0x100_0000_01B3
                    i += 1
                }
            }
        }
        return (total, hash)
    }
}

/// Export of a checkpoint's backbone to one HDF5 file in the official layout.
public enum CheckpointExport {
    /// The official (hub) name of a backbone tensor: chunked names `blocks.<chunk>.<i>.x` become `blocks.<i>.x`.
    public static func officialName(_ name: String) -> String {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count > 3, parts[0] == "blocks", Int(parts[1]) != nil, Int(parts[2]) != nil {
            return (["blocks"] + parts[2...].map(String.init)).joined(separator: ".")
        }
        return name
    }

    /// Writes the `which` ("teacher" or "student") backbone of the checkpoint in `folder` to `output`:
    /// one dataset per tensor under its official name and PyTorch shape. Returns the tensor count.
    @discardableResult
    public static func export(checkpoint folder: String, to output: String, which: String) throws -> Int {
        guard which == "teacher" || which == "student" else {
            throw CheckpointError.mismatch("--which must be teacher or student, not \(which)")
        }
        let manifest = try SelfDistillation.verifyCheckpoint(folder)
        guard let backbone = manifest.parts.first(where: { $0.name == "backbone" }) else {
            throw CheckpointError.corrupt(file: folder + "/manifest.json", reason: "no backbone part")
        }
        var files: [Int: HDF5File] = [:]
        for rankFile in manifest.ranks where files[rankFile.shardIndex] == nil {
            files[rankFile.shardIndex] = try HDF5File.open(folder + "/" + rankFile.file)
        }
        let temporary = output + ".tmp"
        try? FileManager.default.removeItem(atPath: temporary)
        do {
            let out = try HDF5File.create(temporary, truncate: true)
            try out.setAttribute("source", string: "dinov2-fsdp checkpoint \(folder), \(which), iteration \(manifest.iteration)")
            try out.setAttribute("config", string: manifest.config)  // lets `--checkpoint FILE.h5` rebuild the model
            for tensor in backbone.tensors {
                let count = tensor.shape.reduce(1, *)
                let unitCount = backbone.unitCounts[tensor.unit]
                let shard = CollectiveShape.padded(unitCount, toMultipleOf: manifest.shards) / manifest.shards
                var values = [Float](repeating: 0, count: count)
                try values.withUnsafeMutableBufferPointer { buffer in
                    guard let base = buffer.baseAddress else { return }
                    var position = tensor.offset
                    while position < tensor.offset + count {
                        let index = position / shard
                        let upper = Swift.min(tensor.offset + count, (index + 1) * shard)
                        guard let file = files[index] else {
                            throw CheckpointError.corrupt(file: folder, reason: "no rank file holds shard \(index)")
                        }
                        let local = (position - index * shard)..<(upper - index * shard)
                        try file.read("backbone/\(which)/unit-\(tensor.unit)", range: local,
                                      into: UnsafeMutableBufferPointer(start: base + (position - tensor.offset), count: local.count))
                        position = upper
                    }
                }
                try values.withUnsafeBufferPointer { try out.write(officialName(tensor.name), values: $0, shape: tensor.shape) }
            }
            try out.flush()
        } catch let error as CheckpointError {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw CheckpointError.io("\(temporary): \(error)")
        }
        try SelfDistillation.durableRename(temporary, to: output)
        return backbone.tensors.count
    }
}
