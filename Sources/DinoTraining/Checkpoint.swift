// The training run's side of checkpoints: SelfDistillation as a ShardedTrainingState (its parts'
// student, teacher and AdamW shards, the softmax centers), the model rebuilt from a checkpoint or an
// exported backbone, and a backbone's official weights loaded into the student and teacher shards.
// The format itself (files, manifest, resharding on load) is DinoCheckpoint's ShardedCheckpoint.

import DinoCheckpoint
import DinoConfig
import DinoCore
import DinoKernels  // KernelScalar (SoftmaxCenter<Float>)
import DinoModel
import DinoSharding
import Foundation

extension SelfDistillation: ShardedTrainingState {
    public var checkpointParts: [CheckpointPart] {
        parts.map { part in
            CheckpointPart(name: part.name, table: part.table, plan: part.student.plan) { u in
                [
                    ("student", part.student.parametersShard[u]), ("teacher", part.teacher.parametersShard[u]),
                    ("adam_m", part.firstMoment[u]), ("adam_v", part.secondMoment[u]),
                ]
            }
        }
    }
    public var checkpointCenters: [(label: String, center: SoftmaxCenter<Float>)] {
        [("dino", dinoCenter), ("ibot", ibotCenter)]
    }
    public var checkpointConfig: String { ConfigLoader.yaml(config) }
    public var checkpointStrategy: String { config.fsdp.shardingStrategy.rawValue }
    public var checkpointCommunicator: any Communicator { communicator.base }
    public var checkpointPositionResampling: PositionResampling? {
        resamplesPositionsOnLoad ? positionResampling : nil
    }
    /// How this model's position embedding is brought to another grid (the config's offset and antialiasing).
    var positionResampling: PositionResampling {
        PositionResampling(offset: config.student.interpolateOffset, antialias: config.student.interpolateAntialias)
    }

    /// Writes this rank's shards and (rank 0) the manifest to `folder`; collective.
    /// `iteration` is the next iteration the run will compute.
    public func saveCheckpoint(to folder: String, iteration: Int) throws {
        try ShardedCheckpoint.save(self, to: folder, iteration: iteration)
    }

    /// Loads the checkpoint in `folder` into this run, whatever rank count and strategy wrote it;
    /// returns the iteration to continue from.
    public func loadCheckpoint(from folder: String) throws -> Int {
        try ShardedCheckpoint.load(into: self, from: folder)
    }

    /// The model saved in `path` (a checkpoint folder, or a training output folder: its newest complete
    /// checkpoint), rebuilt from the configuration the checkpoint carries, on this job's ranks, with
    /// `threads` workers (default: as many as OpenBLAS was given, as training takes them: cores / ranks
    /// under Launch/mpirun.sh, every core without mpirun). The model's GEMMs pin OpenBLAS to one thread
    /// per piece themselves (ParallelGEMM), so the process's OpenBLAS count stays as it was.
    public static func restored(
        from path: String, communicator comm: any Communicator, threads: Int = BLAS.threadCount
    )
        throws -> (model: SelfDistillation, folder: String, iteration: Int)
    {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            // A backbone exported by `checkpoint export`: the configuration travels as an attribute.
            let text: String
            do { text = try HDF5File.open(path).stringAttribute("config") } catch {
                throw CheckpointError.unusable(
                    "\(path) is a file without a `config` attribute; pass a checkpoint folder, or a file "
                        + "written by `dinov2-fsdp checkpoint export`")
            }
            var config = try ConfigLoader.load(yaml: text, source: path)
            config.fsdp.shardingStrategy = .fullShard
            config.distillation.enabled = false
            config.student.pretrainedWeights = path
            let model = try SelfDistillation(
                config: config.resolved(worldSize: comm.worldSize), communicator: comm,
                seed: UInt64(config.train.seed), threads: threads)
            return (model, path, 0)
        }
        var candidates = [path]
        if !manager.fileExists(atPath: path + "/manifest.json") {
            candidates = Trainer.checkpoints(in: path).reversed()
            guard !candidates.isEmpty else {
                throw CheckpointError.notFound(path)
            }
        }
        var lastError: Error = CheckpointError.notFound(path)
        for folder in candidates {
            do {
                let manifest = try ShardedCheckpoint.readManifest(folder)
                var config = try ConfigLoader.load(yaml: manifest.config, source: folder + "/manifest.json")
                // Loading is strategy-agnostic; the saved strategy may not fit this job's rank count.
                config.fsdp.shardingStrategy = .fullShard
                // A distillation run's model is its student with the spare EMA (saved as `teacher`); its
                // frozen teacher is not needed to evaluate, embed or export it.
                config.distillation.enabled = false
                let model = try SelfDistillation(
                    config: config.resolved(worldSize: comm.worldSize), communicator: comm,
                    seed: UInt64(config.train.seed), threads: threads)
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
            throw CheckpointError.unusable(
                "student.pretrained_weights: \(path) is missing or not HDF5; pass a file written by "
                    + "`dinov2-fsdp checkpoint export`")
        }
        try Self.readOfficialTensors(
            from: file, path: path, into: backbone.student, resampling: positionResampling)
        backbone.copyStudentToTeacher()
    }

    /// Fills this rank's shard of `store` from `file` (named `path` in errors), one dataset per tensor under
    /// `prefix` + its official name and PyTorch shape; a piece of a tensor (a head's last layer cut into
    /// units) reads its range of the whole. A `pos_embed` of another grid is resampled (weights of another
    /// image size); any other shape difference is refused.
    static func readOfficialTensors(
        from file: HDF5File, path: String, prefix: String = "", into store: ShardedParameterStore,
        resampling: PositionResampling
    ) throws {
        for entry in store.table.entries {
            let name = prefix + CheckpointExport.officialName(entry.tensor)
            let shape: [Int]
            do { shape = try file.shape(of: name) } catch {
                throw CheckpointError.mismatch(
                    "\(path) has no tensor \(name) (another architecture? the student.* and head keys must "
                        + "match the file)")
            }
            let shard = store.parametersShard[entry.unit]
            if name == prefix + "pos_embed", let grid = PositionResampling.targetGrid(from: shape, to: entry.shape) {
                // Weights of another image size (e.g. the 518-px hub weights into a 224-px run): resampled once,
                // as the official model would resample them at every forward of this crop size.
                var saved = [Float](repeating: 0, count: shape.reduce(1, *))
                try saved.withUnsafeMutableBufferPointer { try file.read(name, range: 0..<$0.count, into: $0) }
                let values = resampling.resample(saved, channels: shape[2], toGrid: grid)
                if let slice = store.plan.localSlice(of: entry) {
                    for (i, j) in zip(slice.inEntry, slice.inShard) { shard[j] = values[i] }
                }
                continue
            }
            guard shape == entry.tensorShape else {
                throw CheckpointError.mismatch(
                    "\(path): \(name) has shape \(shape), this model's is \(entry.tensorShape)")
            }
            guard let slice = store.plan.localSlice(of: entry) else { continue }
            let first = entry.tensorOffset + slice.inEntry.lowerBound
            try file.read(
                name, range: first..<(first + slice.inEntry.count),
                into: UnsafeMutableBufferPointer(start: shard + slice.inShard.lowerBound, count: slice.inShard.count))
        }
    }
}
