// Sharded checkpoints of a training state. Layout of one checkpoint folder:
//   rank-00000.h5 ...   one file per rank: for every part and unit, the rank's shards of each of the
//                       part's buffers (datasets <part>/<kind>/unit-<u>; kinds student, teacher,
//                       adam_m, adam_v), and (every rank, identical) the softmax centers
//   manifest.json       written by rank 0 after every rank has finished: format and version,
//                       iteration, optimizer steps, world size, strategy and shard count, resolved
//                       config, every tensor's name, shape, unit and offset, every unit's size,
//                       and per rank its shard index, file name, size and checksum
// Every file goes through a temporary name, fsync and rename; the folder counts as a checkpoint
// only once its manifest exists, so a crash during a save never looks like a finished one.
// Loading reads, for each unit, just the element range this rank now owns, from whichever old
// shards cover it: the state loads exactly at any rank count and any sharding strategy.
// The state is anything that implements ShardedTrainingState (the training run's SelfDistillation).

import DinoCore
import DinoKernels  // KernelScalar (the centers are SoftmaxCenter<Float>)
import DinoModel
import DinoSharding
import Foundation

/// What a checkpoint saves and restores of a training state.
public protocol ShardedTrainingState: AnyObject {
    /// The sharded parts, in save order (every rank the same).
    var checkpointParts: [CheckpointPart] { get }
    /// Softmax centers by label (every rank holds the same values).
    var checkpointCenters: [(label: String, center: SoftmaxCenter<Float>)] { get }
    var optimizerSteps: Int { get set }
    /// The resolved configuration as YAML, carried by the manifest.
    var checkpointConfig: String { get }
    /// The sharding strategy's name, for the manifest.
    var checkpointStrategy: String { get }
    /// The ranks that save and load together.
    var checkpointCommunicator: any Communicator { get }
    /// When set, a `pos_embed` saved on another patch grid is loaded resampled to this state's grid
    /// (a run continued at another crop size); when nil, shapes must match.
    var checkpointPositionResampling: PositionResampling? { get }
}

extension ShardedTrainingState {
    public var checkpointPositionResampling: PositionResampling? { nil }
}

/// One sharded part of a state: its tensor table, how it is sharded, and each unit's shard buffers.
public struct CheckpointPart {
    public let name: String
    public let table: TensorTable
    public let plan: ShardPlan
    /// (kind, shard buffer of `plan.shardCount(unit)` values) for a unit, in save order.
    public let shards: (_ unit: Int) -> [(kind: String, values: UnsafeMutablePointer<Float>)]

    public init(
        name: String, table: TensorTable, plan: ShardPlan,
        shards: @escaping (_ unit: Int) -> [(kind: String, values: UnsafeMutablePointer<Float>)]
    ) {
        self.name = name
        self.table = table
        self.plan = plan
        self.shards = shards
    }
}

/// What can go wrong with a checkpoint; each case names the file and what to do.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    /// No checkpoint at the path (missing, or a folder without manifest.json or checkpoints).
    case notFound(String)
    /// A file or folder that cannot serve as what was asked for; the text says why and what to do.
    case unusable(String)
    case incomplete(String)
    case versionMismatch(found: Int, expected: Int, path: String)
    case corrupt(file: String, reason: String)
    case mismatch(String)
    case noSpace(folder: String, detail: String)
    case io(String)

    public var description: String {
        switch self {
        case .notFound(let path):
            if !FileManager.default.fileExists(atPath: path) {
                return
                    "no checkpoint folder \(path): the path does not exist; pass a checkpoint folder or a training "
                    + "output folder"
            }
            return "\(path) is not a checkpoint: it holds neither manifest.json nor checkpoints/checkpoint-*; pass a "
                + "checkpoint folder or a training output folder"
        case .unusable(let text):
            return text
        case .incomplete(let path):
            return
                "checkpoint \(path) is incomplete (no manifest.json): a save was interrupted; use an earlier checkpoint"
        case .versionMismatch(let found, let expected, let path):
            return "checkpoint \(path) has format version \(found), this build reads version \(expected)"
        case .corrupt(let file, let reason):
            return "checkpoint file \(file) is damaged: \(reason)"
        case .mismatch(let text):
            return "checkpoint does not fit this run: \(text)"
        case .io(let text):
            return "checkpoint write failed: \(text) (earlier checkpoints are untouched)"
        case .noSpace(let folder, let detail):
            return "no space left for checkpoint \(folder): \(detail); nothing was written and earlier "
                + "checkpoints are untouched: free space or train into another --output"
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
        /// For a piece of a tensor (a head's last layer cut into units): the tensor's name and shape,
        /// and the piece's first element in it. Absent for a whole tensor.
        public var tensor: String? = nil
        public var tensorShape: [Int]? = nil
        public var tensorOffset: Int? = nil

        public init(_ entry: ParameterEntry) {
            name = entry.name
            shape = entry.shape
            unit = entry.unit
            offset = entry.offset
            if !entry.isWholeTensor {
                tensor = entry.tensor
                tensorShape = entry.tensorShape
                tensorOffset = entry.tensorOffset
            }
        }

        /// The tensor this entry belongs to, its shape, and the entry's first element in it.
        var whole: (name: String, shape: [Int], offset: Int) {
            (tensor ?? name, tensorShape ?? shape, tensorOffset ?? 0)
        }
    }

    public struct Part: Codable, Sendable, Equatable {
        public var name: String
        public var unitCounts: [Int]
        public var tensors: [Tensor]

        public init(name: String, unitCounts: [Int], tensors: [Tensor]) {
            self.name = name
            self.unitCounts = unitCounts
            self.tensors = tensors
        }
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

/// Saving, loading and checking sharded checkpoints.
public enum ShardedCheckpoint {
    /// Writes this rank's shards and (rank 0) the manifest to `folder`; collective.
    /// `iteration` is the next iteration the run will compute.
    public static func save(_ state: some ShardedTrainingState, to folder: String, iteration: Int) throws {
        let comm = state.checkpointCommunicator
        let parts = state.checkpointParts
        let manager = FileManager.default
        do { try manager.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            throw CheckpointError.io("cannot create \(folder): \(error.localizedDescription)")
        }
        try checkSpace(for: parts, in: folder, communicator: comm)
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
                    let count = part.plan.shardCount(u)
                    for (kind, pointer) in part.shards(u) {
                        try file.write(
                            "\(part.name)/\(kind)/unit-\(u)", values: UnsafeBufferPointer(start: pointer, count: count),
                            shape: [count])
                    }
                }
            }
            for (label, center) in state.checkpointCenters {
                try file.write(
                    "centers/\(label)",
                    values: UnsafeBufferPointer(start: center.values.base, count: center.prototypes),
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
        try FileSafety.durableRename(temporary, to: final)
        let (bytes, checksum) = try FileSafety.checksum(of: final)

        // Every rank's file is complete before rank 0 writes the manifest.
        var table = [Int64](repeating: 0, count: 4 * comm.worldSize)
        let plan = parts[0].plan
        let mine: [Int64] = [
            Int64(comm.rank), Int64(plan.shardIndex), Int64(bytes),
            Int64(bitPattern: checksum),
        ]
        try mine.withUnsafeBufferPointer { m in
            try table.withUnsafeMutableBufferPointer { try comm.allGather(m, into: $0) }
        }
        if comm.rank == 0 {
            let manifest = CheckpointManifest(
                format: CheckpointManifest.format, version: CheckpointManifest.currentVersion, iteration: iteration,
                optimizerSteps: state.optimizerSteps, worldSize: comm.worldSize, strategy: state.checkpointStrategy,
                shards: plan.shards, config: state.checkpointConfig,
                parts: parts.map { part in
                    CheckpointManifest.Part(
                        name: part.name, unitCounts: part.table.units.map(\.count),
                        tensors: part.table.entries.map(CheckpointManifest.Tensor.init))
                },
                ranks: (0..<comm.worldSize).map { r in
                    CheckpointManifest.RankFile(
                        rank: r, shardIndex: Int(table[4 * r + 1]), file: String(format: "rank-%05d.h5", r),
                        bytes: Int(table[4 * r + 2]),
                        checksum: String(UInt64(bitPattern: table[4 * r + 3]), radix: 16))
                })
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let path = folder + "/manifest.json"
            do { try encoder.encode(manifest).write(to: URL(fileURLWithPath: path + ".tmp")) } catch {
                throw CheckpointError.io("\(path).tmp: \(error.localizedDescription)")
            }
            try FileSafety.durableRename(path + ".tmp", to: path)
            FileSafety.syncDirectory(folder)
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
            manifest = try JSONDecoder().decode(
                CheckpointManifest.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw CheckpointError.corrupt(file: path, reason: "not a readable manifest (\(decodingProblem(error)))")
        }
        guard manifest.format == CheckpointManifest.format else {
            throw CheckpointError.corrupt(
                file: path, reason: "format '\(manifest.format)' is not \(CheckpointManifest.format)")
        }
        guard manifest.version == CheckpointManifest.currentVersion else {
            throw CheckpointError.versionMismatch(
                found: manifest.version, expected: CheckpointManifest.currentVersion, path: path)
        }
        return manifest
    }

    /// Checks that every rank file exists with the recorded size and checksum; names the first bad one.
    public static func verify(_ folder: String) throws -> CheckpointManifest {
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
            let (bytes, checksum) = try FileSafety.checksum(of: path)
            guard bytes == file.bytes else {
                throw CheckpointError.corrupt(
                    file: path, reason: "\(bytes) bytes, the manifest says \(file.bytes) (truncated?)")
            }
            guard String(checksum, radix: 16) == file.checksum else {
                throw CheckpointError.corrupt(
                    file: path, reason: "checksum \(String(checksum, radix: 16)) differs from \(file.checksum)")
            }
        }
    }

    /// Stops every rank before anything is written when the file system of `folder` lacks room for the
    /// save (HDF5 does not recover from a write that runs out of space): each rank's shards at 4 bytes
    /// an element, 4 KiB a dataset and 64 KiB a file for HDF5's own structures (measured: under 2 KiB a
    /// dataset), summed over the ranks when they all write to one file system (collective).
    static func checkSpace(for parts: [CheckpointPart], in folder: String, communicator comm: any Communicator) throws {
        var need = 64 << 10
        for part in parts {
            for u in part.table.units.indices {
                let kinds = part.shards(u).count
                need += kinds * (4 * part.plan.shardCount(u) + 4096)
            }
        }
        var stats = statvfs()
        let known = statvfs(folder, &stats) == 0
        let free = known ? Int(stats.f_bavail) * Int(stats.f_frsize) : Int.max
        let fileSystem = known ? Int64(bitPattern: UInt64(stats.f_fsid)) : -1
        let ids = try comm.allReduce([fileSystem, -fileSystem], op: .max)
        let total = try comm.allReduce(Int64(need), op: .sum)
        let needed = ids[0] == -ids[1] ? Int(total) : need  // one file system for all, or each its own
        let short = try comm.allReduce(Int64(free < needed ? 1 : 0), op: .max)
        guard short > 0 else { return }
        try? FileManager.default.removeItem(atPath: folder)
        let mib = { (bytes: Int) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
        throw CheckpointError.noSpace(
            folder: folder,
            detail: free < needed
                ? "it needs about \(mib(needed)), the file system has \(mib(free)) free"
                : "another rank's file system is short")
    }

    /// Loads the checkpoint in `folder` into this run, whatever rank count and strategy wrote it;
    /// returns the iteration to continue from. Collective only in that every rank reads.
    public static func load(into state: some ShardedTrainingState, from folder: String) throws -> Int {
        let manifest = try readManifest(folder)
        let parts = state.checkpointParts
        guard manifest.parts.map(\.name) == parts.map(\.name) else {
            throw CheckpointError.mismatch("parts \(manifest.parts.map(\.name)) vs this run's \(parts.map(\.name))")
        }
        // What to copy: for every unit, this rank's range of it, entry by entry, from wherever the
        // checkpoint saved those tensor elements (any unit layout, any cut of a tensor into pieces).
        let resampled = zip(parts, manifest.parts).map {
            resampledTensors(part: $0, saved: $1, resampling: state.checkpointPositionResampling)
        }
        let copies = try parts.indices.map { i in
            try copyPlan(for: parts[i], saved: manifest.parts[i], shards: manifest.shards, resampled: resampled[i])
        }
        // The old shards those ranges overlap (and shard 0, which holds the centers): only their files
        // are checksummed and opened. Replicas (HYBRID_SHARD, NO_SHARD) hold the same data.
        var needed: Set<Int> = [0]
        for (saved, names) in zip(manifest.parts, resampled) {
            // A resampled tensor is read whole.
            for tensor in saved.tensors where names.contains(tensor.whole.name) {
                let shard =
                    CollectiveShape.padded(saved.unitCounts[tensor.unit], toMultipleOf: manifest.shards)
                    / manifest.shards
                needed.formUnion(
                    (tensor.offset / shard)...((tensor.offset + tensor.shape.reduce(1, *) - 1) / shard))
            }
        }
        for plan in copies {
            for copy in plan where !copy.source.isEmpty {
                needed.formUnion(
                    (copy.source.lowerBound / copy.oldShard)...((copy.source.upperBound - 1) / copy.oldShard))
            }
        }
        var chosen: [Int: CheckpointManifest.RankFile] = [:]
        for rankFile in manifest.ranks where needed.contains(rankFile.shardIndex) && chosen[rankFile.shardIndex] == nil
        {
            chosen[rankFile.shardIndex] = rankFile
        }
        try verifyFiles(Array(chosen.values).sorted { $0.rank < $1.rank }, in: folder, worldSize: manifest.worldSize)
        var files: [Int: HDF5File] = [:]
        for (index, rankFile) in chosen { files[index] = try HDF5File.open(folder + "/" + rankFile.file) }
        for (part, plan) in zip(parts, copies) {
            for u in part.table.units.indices {
                for (_, pointer) in part.shards(u) { pointer.setToZero(count: part.plan.shardCount(u)) }
            }
            for copy in plan {
                for (kind, pointer) in part.shards(copy.unit) {
                    try readUnitRange(
                        "\(part.name)/\(kind)/unit-\(copy.sourceUnit)", range: copy.source, shardSize: copy.oldShard,
                        files: files, folder: folder, into: pointer + copy.targetInShard)
                }
            }
        }
        for ((part, saved), names) in zip(zip(parts, manifest.parts), resampled) {
            for name in names.sorted() {
                try loadResampled(
                    name, part: part, saved: saved, shards: manifest.shards, files: files, folder: folder,
                    resampling: state.checkpointPositionResampling)
            }
        }
        guard let first = files[0] else { throw CheckpointError.corrupt(file: folder, reason: "no file for shard 0") }
        for (label, center) in state.checkpointCenters {
            let values = try first.readDoubles("centers/\(label)").map { Float($0) }
            let pending = try? first.readDoubles("centers/\(label)_pending")
            center.restore(center: values, pending: pending)
        }
        state.optimizerSteps = manifest.optimizerSteps
        return manifest.iteration
    }

    /// One contiguous read of a load: elements `source` of saved unit `sourceUnit` (saved in shards
    /// of `oldShard` elements) into this rank's shard of `unit`, from element `targetInShard` on.
    public struct RangeCopy: Equatable, Sendable {
        public var unit: Int, targetInShard: Int, sourceUnit: Int, source: Range<Int>, oldShard: Int
    }

    /// The reads that fill this rank's shards of `part` from `saved`, matched tensor by tensor (by
    /// official name; pieces by their place in the tensor), adjacent reads merged. Throws when the
    /// tensors or their shapes differ.
    public static func copyPlan(
        for part: CheckpointPart, saved: CheckpointManifest.Part, shards: Int, resampled: Set<String> = []
    ) throws -> [RangeCopy] {
        func tensors(_ list: [(String, [Int])]) -> [String: [Int]] {
            Dictionary(list, uniquingKeysWith: { first, _ in first })
        }
        var mine = tensors(part.table.entries.map { ($0.tensor, $0.tensorShape) })
        var theirs = tensors(saved.tensors.map { ($0.whole.name, $0.whole.shape) })
        // Tensors filled by resampling (see `resampledTensors`) are present on both sides, shapes aside.
        for name in resampled where mine[name] != nil && theirs[name] != nil { (mine[name], theirs[name]) = ([], []) }
        guard mine == theirs, saved.unitCounts.count > 0 else {
            let missing = Set(mine.keys).symmetricDifference(theirs.keys).sorted().prefix(3)
            let reshaped = mine.keys.filter { theirs[$0] != nil && theirs[$0] != mine[$0] }.sorted().prefix(3)
            throw CheckpointError.mismatch(
                "the \(part.name) tensors differ from this configuration's (another architecture?)"
                    + (missing.isEmpty ? "" : "; only on one side: \(missing.joined(separator: ", "))")
                    + (reshaped.isEmpty ? "" : "; other shapes: \(reshaped.joined(separator: ", "))"))
        }
        let savedPieces = Dictionary(grouping: saved.tensors, by: { $0.whole.name })
        let oldShards = saved.unitCounts.map { CollectiveShape.padded($0, toMultipleOf: shards) / shards }
        var plan: [RangeCopy] = []
        for entry in part.table.entries where !resampled.contains(entry.tensor) {
            let range = part.plan.shardRange(entry.unit)
            let lower = Swift.max(range.lowerBound, entry.offset),
                upper = Swift.min(range.upperBound, entry.offset + entry.count)
            guard lower < upper else { continue }
            // Elements [lower, upper) of the unit are elements [first, first + count) of the tensor.
            let first = entry.tensorOffset + lower - entry.offset, count = upper - lower
            for piece in savedPieces[entry.tensor] ?? [] {
                let pieceFirst = piece.whole.offset, pieceCount = piece.shape.reduce(1, *)
                let from = Swift.max(first, pieceFirst), to = Swift.min(first + count, pieceFirst + pieceCount)
                guard from < to else { continue }
                let copy = RangeCopy(
                    unit: entry.unit, targetInShard: lower + (from - first) - range.lowerBound, sourceUnit: piece.unit,
                    source: (piece.offset + from - pieceFirst)..<(piece.offset + to - pieceFirst),
                    oldShard: oldShards[piece.unit])
                if let last = plan.last, last.unit == copy.unit, last.sourceUnit == copy.sourceUnit,
                    last.source.upperBound == copy.source.lowerBound,
                    last.targetInShard + last.source.count == copy.targetInShard
                {
                    plan[plan.count - 1].source = last.source.lowerBound..<copy.source.upperBound
                } else {
                    plan.append(copy)
                }
            }
        }
        return plan
    }

    /// The tensors of `part` to resample from `saved`: `pos_embed` when it was saved on another patch grid
    /// of the same width and the state allows resampling.
    static func resampledTensors(
        part: CheckpointPart, saved: CheckpointManifest.Part, resampling: PositionResampling?
    ) -> Set<String> {
        guard resampling != nil,
            let mine = part.table.entries.first(where: { $0.tensor == "pos_embed" && $0.isWholeTensor }),
            let theirs = saved.tensors.first(where: { $0.whole.name == "pos_embed" && $0.tensor == nil }),
            PositionResampling.targetGrid(from: theirs.shape, to: mine.shape) != nil
        else { return [] }
        return ["pos_embed"]
    }

    /// Reads the whole saved tensor `name` of every kind (student, teacher, AdamW moments), resamples it
    /// to this part's grid and keeps this rank's range. The second moment stays non-negative (bicubic
    /// weights can be negative).
    static func loadResampled(
        _ name: String, part: CheckpointPart, saved: CheckpointManifest.Part, shards: Int,
        files: [Int: HDF5File], folder: String, resampling: PositionResampling?
    ) throws {
        guard let resampling, let entry = part.table.entries.first(where: { $0.tensor == name }),
            let source = saved.tensors.first(where: { $0.whole.name == name }),
            let grid = PositionResampling.grid(rows: entry.shape[1])
        else { return }
        let d = entry.shape[2], count = source.shape.reduce(1, *)
        let oldShard = CollectiveShape.padded(saved.unitCounts[source.unit], toMultipleOf: shards) / shards
        guard let slice = part.plan.localSlice(of: entry) else { return }
        for (kind, pointer) in part.shards(entry.unit) {
            var values = [Float](repeating: 0, count: count)
            try values.withUnsafeMutableBufferPointer { buffer in
                try readUnitRange(
                    "\(part.name)/\(kind)/unit-\(source.unit)", range: source.offset..<(source.offset + count),
                    shardSize: oldShard, files: files, folder: folder, into: buffer.baseAddress!)
            }
            var resized = resampling.resample(values, channels: d, toGrid: grid)
            if kind == "adam_v" { resized = resized.map { Swift.max($0, 0) } }
            for (i, j) in zip(slice.inEntry, slice.inShard) { pointer[j] = resized[i] }
        }
    }

    /// Reads elements `range` of a unit saved as `name` in shards of `shardSize` elements (shard i in
    /// `files[i]`) into `target`, from whichever shards cover the range.
    static func readUnitRange(
        _ name: String, range: Range<Int>, shardSize: Int, files: [Int: HDF5File], folder: String,
        into target: UnsafeMutablePointer<Float>
    ) throws {
        var position = range.lowerBound
        while position < range.upperBound {
            let index = position / shardSize
            let upper = Swift.min(range.upperBound, (index + 1) * shardSize)
            guard let file = files[index] else {
                throw CheckpointError.corrupt(file: folder, reason: "no rank file holds shard \(index)")
            }
            let local = (position - index * shardSize)..<(upper - index * shardSize)
            try file.read(
                name, range: local,
                into: UnsafeMutableBufferPointer(start: target + (position - range.lowerBound), count: local.count))
            position = upper
        }
    }
}
