// The frozen teacher of a distillation run (DINOv2 section 5; `distillation.*`): a model of its own
// architecture (its backbone, DINO head and, when separate, iBOT head), read once from another run's
// checkpoint (its EMA teacher, the model that run evaluates), or from a backbone and a head file written
// by `checkpoint export` (the architecture from the backbone file's config), and never updated. Its parameters are
// sharded like any unit (one store per part, no gradient shards, no optimizer state) and gathered layer
// by layer in its forward. It is not saved with the student's checkpoints: a resumed run reads it
// again from the checkpoint folder its resolved config names, which is why a run folder given as
// `distillation.checkpoint_path` is fixed to its newest complete checkpoint when the run starts.
// Shapes: its backbone reads the student's global crops [2B, 3, S, S] and gives tokens of its own
// width D_t; its heads give [rows, K] logits with the student heads' K.

import DinoCheckpoint
import DinoConfig
import DinoCore
import DinoKernels
import DinoModel
import DinoSharding
import Foundation

/// A frozen teacher model, sharded over the run's ranks, for distillation.
public final class DistillationTeacher {
    /// The teacher run's own configuration (architecture, heads).
    public let config: TrainingConfig
    /// The checkpoint folder (or exported backbone file) it was read from.
    public let source: String
    public let architecture: ViTArchitecture
    let backbone: Backbone<Float>
    let dinoHead: DinoHead<Float>
    let ibotHead: DinoHead<Float>?
    /// The sharded parameters of backbone, DINO head and (separate) iBOT head, in checkpoint part order.
    public let stores: [(name: String, store: ShardedParameterStore)]
    private let communicator: any Communicator
    /// The teacher run's AdamW steps as its manifest says (kept for ShardedTrainingState; not used).
    public var optimizerSteps = 0

    var backboneStore: ShardedParameterStore { stores[0].store }
    var dinoStore: ShardedParameterStore { stores[1].store }
    var ibotStore: ShardedParameterStore? { stores.count > 2 ? stores[2].store : nil }

    /// Builds the teacher that `student.distillation` names (its folder already resolved by
    /// `resolvingDistillation`) and loads it; collective.
    init(
        student: TrainingConfig, communicator: any Communicator, threads: Int, headPrototypesPerUnit: Int,
        buffers: SharedBuffers
    ) throws {
        let (source, config) = try Self.teacherCheckpoint(student.distillation.checkpointPath)
        self.source = source
        self.config = config
        self.communicator = communicator
        try Self.checkCompatible(student: student, teacher: config, source: source)
        let architecture = try ViTArchitecture(student: config.student, imageSize: config.crops.globalCropsSize)
        self.architecture = architecture
        let layout = ParameterLayout(architecture)
        backbone = Backbone(layout: layout, threads: threads)
        let width = architecture.embedDim
        func head(_ hidden: Int, _ bottleneck: Int, _ layers: Int, _ prototypes: Int) -> DinoHead<Float> {
            DinoHead(
                HeadArchitecture(
                    inDim: width, hidden: hidden, bottleneck: bottleneck, layers: layers,
                    prototypes: prototypes, prototypesPerUnit: headPrototypesPerUnit),
                threads: threads)
        }
        dinoHead = head(
            config.dino.headHiddenDim, config.dino.headBottleneckDim, config.dino.headLayers, config.dino.headPrototypes
        )
        ibotHead =
            config.ibot.separateHead
            ? head(
                config.ibot.headHiddenDim, config.ibot.headBottleneckDim, config.ibot.headLayers,
                config.ibot.headPrototypes) : nil
        var tables = [("backbone", layout.table), ("dino_head", dinoHead.table)]
        if let ibotHead { tables.append(("ibot_head", ibotHead.table)) }
        // The student's sharding strategy (the teacher's own may not fit this job's ranks).
        stores = try tables.map { name, table in
            (
                name,
                try ShardedParameterStore(
                    table: table, strategy: student.fsdp.shardingStrategy, world: communicator,
                    hybridGroupSize: student.fsdp.hybridGroupSize,
                    allGatherBF16: student.fsdp.allgatherDtype == .bf16, hasGradients: false, buffers: buffers)
            )
        }
        if source.hasSuffix(".h5") || !Self.isFolder(source) {
            try loadExported(backbone: source, heads: student.distillation.headsPath)
        } else {
            _ = try ShardedCheckpoint.load(into: self, from: source)
        }
    }

    /// Reads the backbone from `backbone` and the heads from `heads`, files of `checkpoint export` (without
    /// and with --heads), each rank its shards' ranges.
    private func loadExported(backbone path: String, heads headsPath: String) throws {
        guard !headsPath.isEmpty else {
            throw TrainingError.configuration(
                "distillation.checkpoint_path \(path) is an exported backbone: set distillation.heads_path to the "
                    + "teacher's heads (`dinov2-fsdp checkpoint export CHECKPOINT --heads --output FILE`)")
        }
        let resampling = PositionResampling(
            offset: config.student.interpolateOffset, antialias: config.student.interpolateAntialias)
        try SelfDistillation.readOfficialTensors(
            from: try HDF5File.open(path), path: path, into: backboneStore, resampling: resampling)
        let heads: HDF5File
        do { heads = try HDF5File.open(headsPath) } catch {
            throw TrainingError.configuration(
                "distillation.heads_path \(headsPath) is missing or not HDF5; pass a file written by "
                    + "`dinov2-fsdp checkpoint export CHECKPOINT --heads --output FILE`")
        }
        for (name, store) in stores.dropFirst() {
            try SelfDistillation.readOfficialTensors(
                from: heads, path: headsPath, prefix: name + ".", into: store, resampling: resampling)
        }
    }

    private static func isFolder(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// The teacher's backbone width.
    var width: Int { architecture.embedDim }
    /// Token index of the teacher's first patch (after its CLS and registers).
    var firstPatch: Int { 1 + architecture.registers }
    /// Prototypes of the teacher's iBOT targets: its separate iBOT head's, else its DINO head's.
    var ibotPrototypes: Int { config.ibot.separateHead ? config.ibot.headPrototypes : config.dino.headPrototypes }

    /// Bytes of its parameter shards on this rank.
    var shardBytes: Int { stores.reduce(0) { $0 + $1.store.residentBytes.shards } }
    var gatheredBytes: Int { stores.reduce(0) { $0 + $1.store.residentBytes.gathered } }

    /// The checkpoint folder `path` names (itself, or a run folder's newest complete checkpoint) or the
    /// exported backbone file it is, and the configuration the teacher was trained with.
    static func teacherCheckpoint(_ path: String) throws -> (source: String, config: TrainingConfig) {
        if FileManager.default.fileExists(atPath: path), !isFolder(path) {
            guard let text = try? HDF5File.open(path).stringAttribute("config") else {
                throw TrainingError.configuration(
                    "distillation.checkpoint_path \(path) is a file without a `config` attribute; pass a checkpoint "
                        + "or run folder, or a backbone written by `dinov2-fsdp checkpoint export`")
            }
            return (path, try ConfigLoader.load(yaml: text, source: path))
        }
        guard isFolder(path) else {
            throw TrainingError.configuration(
                "distillation.checkpoint_path \(path) does not exist; pass a checkpoint folder (holding "
                    + "manifest.json), a training output folder of this project, or an exported backbone")
        }
        let candidates =
            FileManager.default.fileExists(atPath: path + "/manifest.json")
            ? [path] : Trainer.checkpoints(in: path).reversed()
        for folder in candidates {
            guard let manifest = try? ShardedCheckpoint.readManifest(folder) else { continue }
            do {
                return (folder, try ConfigLoader.load(yaml: manifest.config, source: folder + "/manifest.json"))
            } catch {
                throw TrainingError.configuration(
                    "distillation.checkpoint_path: the configuration in \(folder)/manifest.json does not load "
                        + "(\(error)); pass another checkpoint")
            }
        }
        throw TrainingError.configuration(
            "distillation.checkpoint_path \(path) holds no complete checkpoint (no manifest.json in it or in "
                + "\(path)/checkpoints/*); pass a checkpoint folder or a run folder with a finished save")
    }

    /// What a student must share with the teacher: the patch size (the iBOT loss pairs their patch
    /// tokens position by position) and the heads' prototypes.
    static func checkCompatible(student: TrainingConfig, teacher: TrainingConfig, source: String) throws {
        guard student.student.patchSize == teacher.student.patchSize else {
            throw TrainingError.configuration(
                "student.patch_size \(student.student.patchSize) differs from the teacher's "
                    + "\(teacher.student.patchSize) (\(source)): the iBOT loss pairs their patch tokens, so "
                    + "set student.patch_size=\(teacher.student.patchSize)")
        }
        let teacherIbot = teacher.ibot.separateHead ? teacher.ibot.headPrototypes : teacher.dino.headPrototypes
        let studentIbot = student.ibot.separateHead ? student.ibot.headPrototypes : student.dino.headPrototypes
        guard student.dino.headPrototypes == teacher.dino.headPrototypes, studentIbot == teacherIbot else {
            throw TrainingError.configuration(
                "the student's heads have \(student.dino.headPrototypes) DINO / \(studentIbot) iBOT prototypes, "
                    + "the teacher's (\(source)) \(teacher.dino.headPrototypes) / \(teacherIbot); "
                    + "a distillation run sizes them from the teacher: start it through `train`, or set "
                    + "dino.head_n_prototypes and ibot.head_n_prototypes to the teacher's")
        }
    }
}

extension TrainingConfig {
    /// For a distillation run: `distillation.checkpoint_path` fixed to the exact checkpoint folder (a run
    /// folder's newest complete one, so that a resumed run reads the same teacher), and the student's
    /// heads sized to the teacher's prototypes (a student sharing one head for DINO and iBOT gets the
    /// teacher's DINO prototypes for both, and needs a teacher whose two kinds agree). Reads the
    /// teacher's manifest; unchanged when distillation is off.
    public func resolvingDistillation() throws -> TrainingConfig {
        guard distillation.enabled else { return self }
        var copy = self
        let (folder, teacher) = try DistillationTeacher.teacherCheckpoint(distillation.checkpointPath)
        copy.distillation.checkpointPath = folder
        copy.dino.headPrototypes = teacher.dino.headPrototypes
        let teacherIbot = teacher.ibot.separateHead ? teacher.ibot.headPrototypes : teacher.dino.headPrototypes
        copy.ibot.headPrototypes = teacherIbot
        try DistillationTeacher.checkCompatible(student: copy, teacher: teacher, source: folder)
        return copy
    }
}

/// The teacher loads through the sharded-checkpoint reader: every part's `teacher` buffers (the EMA
/// teacher of the run that saved it), resharded to this job's ranks. Nothing of it is ever saved.
extension DistillationTeacher: ShardedTrainingState {
    public var checkpointParts: [CheckpointPart] {
        stores.map { name, store in
            CheckpointPart(name: name, table: store.table, plan: store.plan) { u in
                [("teacher", store.parametersShard[u])]
            }
        }
    }
    public var checkpointCenters: [(label: String, center: SoftmaxCenter<Float>)] { [] }
    public var checkpointConfig: String { ConfigLoader.yaml(config) }
    public var checkpointStrategy: String { stores[0].store.strategy.rawValue }
    public var checkpointCommunicator: any Communicator { communicator }
}
