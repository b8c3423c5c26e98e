// One DINOv2 training step on one rank (dinov2/train/ssl_meta_arch.py forward_backward, train.py),
// in the stages `step` calls, each a function below:
//   1. StepCrops: the masked tokens and their iBOT weights; the student's gradients zeroed
//   2. teacherTargets: teacher backbone on the global crops (no masks, no drop path) -> CLS [2B, D]
//      and the patch tokens at the student's masked positions [M, D] (HeadRows) -> teacher head(s)
//      -> targets by softmax centering (center updated one step late) or Sinkhorn-Knopp
//   3. studentForwardAndLoss: student backbone on [global crops with masks, local crops] with
//      stochastic depth -> CLS of every crop and the masked patch tokens (HeadRows) -> student
//      head(s) -> DINO CLS loss, iBOT loss, KoLeo on each view's global CLS -> the heads' backward
//   4. backwardAndReduce: backbone backward from the head rows' gradient, every unit's gradient
//      reduction, the losses and gradient norms reduced over ranks and checked finite
//   5. clipAndAdamW: clipping per sub-module (backbone, DINO head, iBOT head) at optim.clip_grad,
//      AdamW with each tensor's lr and wd multipliers (last layer on its own schedule)
//   6. EMA: teacher <- m teacher + (1 - m) student, every tensor
// StepClock times the stages and collects the communication counters once.
// Distillation (`distillation.enabled`): stage 2 runs the frozen DistillationTeacher instead of the EMA
// teacher; stage 3 runs without masks and stochastic depth, with every patch of the global crops as an
// iBOT token (the masks passed in are all true); stage 6 keeps the EMA, now a spare EMA of the student.
// Crop layout: global images [2B, 3, S, S] view-major (view 1 of every image, then view 2), local
// images [n_local B, 3, s, s] crop-major, masks [2B, N]. Collectives (centering, Sinkhorn) go
// through the communicator, so one rank runs the same code as many.

import DinoConfig
import DinoCore
import DinoEval
import DinoKernels
import DinoModel
import DinoSharding
import Foundation

/// The losses of one step, each as the official code logs it before halving for display.
public struct StepLosses: Sendable, Equatable {
    public var dinoLocal: Double
    public var dinoGlobal: Double
    public var ibot: Double
    public var koleo: Double
    /// The copy-detection loss (`copy_detection.loss_weight` > 0; else 0).
    public var copy: Double
    /// The optimised objective: the sum of the five.
    public var total: Double { dinoLocal + dinoGlobal + ibot + koleo + copy }
    /// The terms in the order of `names`, for the collectives that sum them over ranks.
    public var terms: [Double] { [dinoLocal, dinoGlobal, ibot, koleo, copy] }
    public static let names = [
        "dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss", "koleo_loss", "copy_loss",
    ]
    public init(dinoLocal: Double, dinoGlobal: Double, ibot: Double, koleo: Double, copy: Double = 0) {
        (self.dinoLocal, self.dinoGlobal, self.ibot, self.koleo, self.copy) = (dinoLocal, dinoGlobal, ibot, koleo, copy)
    }
    /// Losses from `terms` (summed over ranks and divided by them, or one rank's).
    public init(terms t: [Double]) {
        self.init(dinoLocal: t[0], dinoGlobal: t[1], ibot: t[2], koleo: t[3], copy: t[4])
    }
}

/// How peaked and how spread the teacher's DINO targets of one step are, over every rank: the
/// collapse diagnostics. Uniform targets give `meanEntropy` = ln K; a collapse onto a few
/// prototypes gives a small `entropyOfMean` and few `prototypesInUse`.
public struct TargetStatistics: Sendable, Equatable {
    /// Mean over rows of each target's entropy (nats).
    public var meanEntropy: Double
    /// Entropy of the batch's mean target distribution (nats); ln K when every prototype is used equally.
    public var entropyOfMean: Double
    /// Prototypes that are the arg-max of at least one row.
    public var prototypesInUse: Int
    /// Mean over channels of the standard deviation over crops of the teacher's CLS token
    /// (x_norm_clstoken, the DINO head's input). Near 0 the CLS does not depend on the image, and
    /// no target can either: the state of a LayerScale-1e-5 ViT early in training.
    public var clsSpread: Double = 0
    /// The same for the DINO head's L2-normalised bottleneck output (unit vectors, so at most ~1/sqrt(dim)):
    /// near 0 with a varying CLS means the head maps every image to the same direction.
    public var headSpread: Double = 0
}

/// Where the time of one step went, in seconds, on this rank.
public struct StepTiming: Sendable, Equatable {
    public var total = 0.0
    /// Waiting in collectives (parameter gathers, gradient reductions, centering, norms).
    public var exposedCommunication = 0.0
    /// From start to completion of every collective, overlapped with compute or not.
    public var totalCommunication = 0.0
    /// The exposed part waiting for parameter all-gathers.
    public var exposedGathers = 0.0
    /// The exposed part starting and waiting for gradient reductions.
    public var exposedReductions = 0.0
    /// The exposed part in the objective's own collectives (centering, Sinkhorn-Knopp, loss and norm
    /// checks); waiting there also absorbs any compute imbalance between ranks.
    public var exposedObjective = 0.0
    /// Wall time of the stages, each including the communication it waited for: teacher forward with
    /// its heads and targets; student forward with heads and losses; backward with gradient reductions.
    public var teacherForward = 0.0
    public var studentForward = 0.0
    public var backward = 0.0
    public var optimizer = 0.0
    public var ema = 0.0
    /// Everything else: forward and backward compute, heads and losses.
    public var compute: Double { Swift.max(0, total - exposedCommunication - optimizer - ema) }
    /// Masked patch tokens of this rank's crops (they set the iBOT head's work).
    public var maskedTokens = 0

    public init() {}
}

/// Failures of a training run, each a sentence with what to do about it.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    /// A loss or gradient norm that is not finite (nothing was updated).
    case nonFinite(String)
    /// Training or validation images that cannot be used as given.
    case data(String)
    /// A configuration or saved state that does not fit this run.
    case configuration(String)

    public var description: String {
        switch self {
        case .nonFinite(let text): return "non-finite value: \(text)"
        case .data(let text), .configuration(let text): return text
        }
    }
}

/// One part of the model (backbone or a head): student and teacher parameters as shards, the AdamW
/// moments of the student's shard, and each tensor's optimiser multipliers.
public final class ModelPart {
    public let name: String
    public let table: TensorTable
    public let student: ShardedParameterStore
    public let teacher: ShardedParameterStore
    let firstMoment: UnitBuffers<Float>
    let secondMoment: UnitBuffers<Float>
    let groups: [ParameterGroup]

    init(
        name: String, table: TensorTable, groups: [ParameterGroup], strategy: ShardingStrategy,
        communicator: any Communicator, hybridGroupSize: Int, allGatherBF16: Bool, buffers: SharedBuffers
    ) throws {
        self.name = name
        self.table = table
        self.groups = groups
        let student = try ShardedParameterStore(
            table: table, strategy: strategy, world: communicator,
            hybridGroupSize: hybridGroupSize, allGatherBF16: allGatherBF16, buffers: buffers)
        self.student = student
        teacher = try ShardedParameterStore(
            table: table, strategy: strategy, world: communicator,
            hybridGroupSize: hybridGroupSize, allGatherBF16: allGatherBF16, hasGradients: false, buffers: buffers)
        let counts = table.units.indices.map { student.plan.shardCount($0) }
        firstMoment = UnitBuffers(counts: counts)
        secondMoment = UnitBuffers(counts: counts)
        momentBytes = 2 * counts.reduce(0) { $0 + Swift.max(1, $1) } * MemoryLayout<Float>.stride
    }

    /// Bytes of the two AdamW moment shards.
    let momentBytes: Int

    /// AdamW on this rank's slice of every tensor, with the tensor's lr and wd multipliers.
    func adamW(schedule s: ScheduleValues, beta1: Double, beta2: Double, step: Int, threads: Int) {
        for (index, entry) in table.entries.enumerated() {
            guard let slice = student.plan.localSlice(of: entry) else { continue }
            let group = groups[index]
            let lr = (group.isLastLayer ? s.lastLayerLR : s.lr) * group.lrMultiplier
            let offset = slice.inShard.lowerBound
            AdamW.update(
                parameters: student.parametersShard[entry.unit] + offset,
                gradients: student.gradientsShard[entry.unit] + offset,
                firstMoment: firstMoment[entry.unit] + offset, secondMoment: secondMoment[entry.unit] + offset,
                count: slice.inShard.count, lr: lr, weightDecay: s.weightDecay * group.weightDecayMultiplier,
                beta1: beta1, beta2: beta2, step: step, threads: threads)
        }
    }

    /// teacher <- m teacher + (1 - m) student on the local shards: no communication.
    func updateTeacher(momentum: Double) {
        for u in table.units.indices {
            let count = student.plan.shardCount(u)
            VectorOps.lerp(
                UnsafeMutableBufferPointer(start: teacher.parametersShard[u], count: count),
                toward: UnsafeBufferPointer(start: student.parametersShard[u], count: count),
                momentum: Float(momentum))
        }
    }

    /// Copies the student's shards into the teacher's.
    func copyStudentToTeacher() {
        for u in table.units.indices {
            teacher.parametersShard[u].update(from: student.parametersShard[u], count: student.plan.shardCount(u))
        }
    }
}

/// Student, teacher, heads, centers and optimiser state of a DINOv2 run, stepping on one rank's crops.
public final class SelfDistillation {
    public let config: TrainingConfig
    public let schedules: TrainingSchedules
    public let architecture: ViTArchitecture
    public let backbone: ModelPart
    public let dinoHead: ModelPart
    /// The separate iBOT head (`ibot.separate_head`), or nil when the DINO head is shared.
    public let ibotHead: ModelPart?
    /// AdamW steps taken (restored by a checkpoint).
    public var optimizerSteps = 0
    /// The time split of the last step.
    public private(set) var lastTiming = StepTiming()

    private let studentBackbone: Backbone<Float>, teacherBackbone: Backbone<Float>
    /// Bytes the student backbone holds for backward after its last forward.
    public var studentActivationBytes: Int { studentBackbone.activationBytes }
    /// Whether the student backbone recomputes its blocks in backward (`activation_checkpoint.mode`).
    public var checkpointsActivations: Bool { studentBackbone.checkpointsActivations }
    private let studentDinoHead: DinoHead<Float>, teacherDinoHead: DinoHead<Float>
    private let studentIbotHead: DinoHead<Float>?, teacherIbotHead: DinoHead<Float>?
    public let dinoCenter: SoftmaxCenter<Float>, ibotCenter: SoftmaxCenter<Float>
    /// The step's scratch: grown to the largest step, then reused (no allocation per step).
    private let buffers = StepBuffers()
    /// The free full-unit buffers shared by every parameter store of the model.
    private let unitBuffers: SharedBuffers
    /// The frozen teacher of a distillation run (the targets come from it; `teacher` then holds the
    /// student's spare EMA), nil in self-distillation.
    public let distillationTeacher: DistillationTeacher?

    final class StepBuffers {
        /// The head rows of the teacher and of the student (the student's also route the backward).
        let teacherRows = HeadRows(), studentRows = HeadRows()
        let teacherInput = GrowableBuffer<Float>(), dinoTargets = GrowableBuffer<Float>(),
            ibotTargets = GrowableBuffer<Float>()
        let studentInput = GrowableBuffer<Float>(), dInput = GrowableBuffer<Float>(), dLogits = GrowableBuffer<Float>()
        let dIbotLogits = GrowableBuffer<Float>(), scratch = GrowableBuffer<Float>(), dKoleo = GrowableBuffer<Float>()
        let dTokens = GrowableBuffer<Float>(), dCopy = GrowableBuffer<Float>()
        let copyScratch = CopyLossScratch<Float>()
        /// The last step's DINO target sums per prototype [K], arg-max counts [K], then (entropy sum, rows).
        let targetSums = GrowableBuffer<Double>()
        let sinkhornScratch = GrowableBuffer<Double>()

        var bytes: Int {
            [
                teacherInput, dinoTargets, ibotTargets, studentInput, dInput, dLogits, dIbotLogits, scratch, dKoleo,
                dTokens, dCopy,
            ]
            .reduce(0) { $0 + $1.bytes } + targetSums.bytes + sinkhornScratch.bytes + copyScratch.bytes
        }
    }

    /// What this rank holds, by category, in bytes (buffers as grown so far: after a step, the
    /// step's working set). Each figure counts the capacity of the buffers, which the steps touch.
    /// The categories and names are those MemoryModel predicts (without the process's own).
    public var memoryBreakdown: [MemoryCategory] {
        let parts = self.parts
        let heads: [DinoHead<Float>] =
            [studentDinoHead, teacherDinoHead]
            + [studentIbotHead, teacherIbotHead, distillationTeacher?.dinoHead, distillationTeacher?.ibotHead]
            .compactMap { $0 }
        var categories = [
            MemoryCategory(
                name: MemoryCategory.studentShards, bytes: parts.reduce(0) { $0 + $1.student.residentBytes.shards }),
            MemoryCategory(
                name: MemoryCategory.teacherShards,
                bytes: parts.reduce(0) { $0 + $1.teacher.residentBytes.shards } + (distillationTeacher?.shardBytes ?? 0)
            ),
            MemoryCategory(name: MemoryCategory.moments, bytes: parts.reduce(0) { $0 + $1.momentBytes }),
            MemoryCategory(
                name: MemoryCategory.unitBuffers,
                bytes: parts.reduce(0) { $0 + $1.student.residentBytes.gathered + $1.teacher.residentBytes.gathered }
                    + unitBuffers.bytes + (distillationTeacher?.gatheredBytes ?? 0)),
            MemoryCategory(name: MemoryCategory.studentActivations, bytes: studentBackbone.activationBytes),
            MemoryCategory(
                name: MemoryCategory.teacherActivations,
                bytes: teacherBackbone.activationBytes + (distillationTeacher?.backbone.activationBytes ?? 0)),
            MemoryCategory(
                name: MemoryCategory.backboneScratch,
                bytes: studentBackbone.scratchBytes + teacherBackbone.scratchBytes
                    + (distillationTeacher?.backbone.scratchBytes ?? 0)),
            MemoryCategory(name: MemoryCategory.heads, bytes: heads.reduce(0) { $0 + $1.bytes }),
            MemoryCategory(name: MemoryCategory.stepBuffers, bytes: buffers.bytes),
        ]
        let backbones = [studentBackbone, teacherBackbone] + (distillationTeacher.map { [$0.backbone] } ?? [])
        let engines = (backbones as [any BF16Computing] + heads).compactMap(\.bf16)
        if let engine = engines.first {
            // One engine is shared by every bf16 module.
            categories.append(MemoryCategory(name: MemoryCategory.bf16Operands, bytes: engine.bytes))
        }
        return categories
    }
    /// The world, timed: the step's own collectives (targets, loss and norm checks) add up here.
    let communicator: TimedCommunicator
    /// Load checkpoints of another crop size, their position embeddings resampled to this model's grid
    /// (the start of a high-resolution phase, `train.resume_from`); off for resuming a run as it was.
    public var resamplesPositionsOnLoad = false
    /// The objective's collectives, over `communicator` (so they are timed with it).
    private let rowReducer: CommunicatorRowReducer

    /// Builds the model for `config` (its `optim.lr` already scaled for the world size) and
    /// initialises the student from `seed`; the teacher starts as a copy of the student.
    /// `headPrototypesPerUnit` cuts the heads' last layers into units of that many prototypes (0: the
    /// default of HeadArchitecture); it changes which collectives run, not the values.
    public init(
        config: TrainingConfig, communicator: any Communicator, seed: UInt64, threads: Int = 1,
        headPrototypesPerUnit: Int = 0
    ) throws {
        self.config = config
        self.communicator = TimedCommunicator(communicator)
        rowReducer = CommunicatorRowReducer(self.communicator)
        schedules = TrainingSchedules(config)
        architecture = try ViTArchitecture(student: config.student, imageSize: config.crops.globalCropsSize)
        let layout = ParameterLayout(architecture)
        let depth = architecture.depth
        let strategy = config.fsdp.shardingStrategy
        // One set of free full-unit buffers for every store: teacher forward, student forward and
        // backward run one after the other, so they never need all their buffers at once.
        let unitBuffers = SharedBuffers()
        self.unitBuffers = unitBuffers
        func part(_ name: String, _ table: TensorTable, _ groups: [ParameterGroup]) throws -> ModelPart {
            try ModelPart(
                name: name, table: table, groups: groups, strategy: strategy, communicator: communicator,
                hybridGroupSize: config.fsdp.hybridGroupSize, allGatherBF16: config.fsdp.allgatherDtype == .bf16,
                buffers: unitBuffers)
        }
        backbone = try part(
            "backbone", layout.table,
            layout.entries.map {
                ParameterGroups.backbone(
                    $0.name, depth: depth, layerwiseDecay: config.optim.layerwiseDecay,
                    patchEmbedMultiplier: config.optim.patchEmbedLRMult)
            })
        let dinoArchitecture = HeadArchitecture(
            inDim: architecture.embedDim, hidden: config.dino.headHiddenDim,
            bottleneck: config.dino.headBottleneckDim, layers: config.dino.headLayers,
            prototypes: config.dino.headPrototypes, prototypesPerUnit: headPrototypesPerUnit)
        studentDinoHead = DinoHead(dinoArchitecture, threads: threads)
        teacherDinoHead = DinoHead(dinoArchitecture, threads: threads)
        dinoHead = try part(
            "dino_head", studentDinoHead.table,
            studentDinoHead.table.entries.map { ParameterGroups.head($0.name) })
        if config.ibot.separateHead {
            let ibotArchitecture = HeadArchitecture(
                inDim: architecture.embedDim, hidden: config.ibot.headHiddenDim,
                bottleneck: config.ibot.headBottleneckDim,
                layers: config.ibot.headLayers, prototypes: config.ibot.headPrototypes,
                prototypesPerUnit: headPrototypesPerUnit)
            let student = DinoHead<Float>(ibotArchitecture, threads: threads)
            studentIbotHead = student
            teacherIbotHead = DinoHead(ibotArchitecture, threads: threads)
            ibotHead = try part("ibot_head", student.table, student.table.entries.map { ParameterGroups.head($0.name) })
        } else {
            studentIbotHead = nil
            teacherIbotHead = nil
            ibotHead = nil
        }
        studentBackbone = Backbone(layout: layout, threads: threads)
        studentBackbone.checkpointsActivations = config.activationCheckpoint.mode.isEnabled(
            embedDim: architecture.embedDim)
        teacherBackbone = Backbone(layout: layout, threads: threads)
        distillationTeacher =
            config.distillation.enabled
            ? try DistillationTeacher(
                student: config, communicator: communicator, threads: threads,
                headPrototypesPerUnit: headPrototypesPerUnit, buffers: unitBuffers) : nil
        let precision = config.computePrecision
        precisionReport = Self.applyComputePrecision(
            threads: threads,
            modules: [
                ("student backbone", studentBackbone, precision.studentBackboneParam),
                ("teacher backbone", teacherBackbone, precision.teacherBackboneParam),
                ("student dino_head", studentDinoHead, precision.studentDinoHeadParam),
                ("teacher dino_head", teacherDinoHead, precision.teacherDinoHeadParam),
                ("student ibot_head", studentIbotHead, precision.studentIbotHeadParam),
                ("teacher ibot_head", teacherIbotHead, precision.teacherIbotHeadParam),
                ("distillation teacher backbone", distillationTeacher?.backbone, precision.teacherBackboneParam),
                ("distillation teacher dino_head", distillationTeacher?.dinoHead, precision.teacherDinoHeadParam),
                ("distillation teacher ibot_head", distillationTeacher?.ibotHead, precision.teacherIbotHeadParam),
            ])
        dinoCenter = SoftmaxCenter(prototypes: config.dino.headPrototypes)
        ibotCenter = SoftmaxCenter(
            prototypes: config.ibot.separateHead ? config.ibot.headPrototypes : config.dino.headPrototypes)
        for (index, part) in parts.enumerated() {
            part.student.initialize(seed: seed &+ UInt64(index) &* 0x1_0000)
            part.copyStudentToTeacher()
        }
        // As the official meta-architecture: the student backbone starts from these weights (the
        // heads stay freshly initialised) and the teacher copies it. A resumed checkpoint overrides it.
        if !config.student.pretrainedWeights.isEmpty { try loadBackboneWeights(from: config.student.pretrainedWeights) }
    }

    /// What `compute_precision` turned into on this CPU, for the run's log: which modules compute in
    /// bf16 and on which instructions, or why bf16 was asked for and fp32 is used (`isFallback`).
    public let precisionReport: (text: String, isFallback: Bool)?

    /// Gives the modules whose `param_dtype` is bf16 one shared bf16 GEMM engine (its compiled shapes
    /// serve student and teacher alike). Without AVX512-BF16 / AMX every module stays fp32. A shared
    /// iBOT head (no separate head) is the DINO head and follows its setting.
    private static func applyComputePrecision(
        threads: Int, modules: [(name: String, module: (any BF16Computing)?, dtype: ComputeDtype)]
    ) -> (text: String, isFallback: Bool)? {
        // A bf16 setting for a module the model does not have (an iBOT head without separate_head)
        // changes nothing.
        let chosen = modules.compactMap { entry in entry.dtype == .bf16 ? entry.module.map { (entry.name, $0) } : nil }
        guard !chosen.isEmpty else { return nil }
        guard BF16GEMM.isSupported else {
            return (
                "compute_precision asks for bf16, but this CPU has no AVX512-BF16 or AMX (oneDNN reports "
                    + "\(BF16GEMM.instructionSet)): computing in fp32", true
            )
        }
        let engine = BF16GEMM(threads: threads)
        for (_, module) in chosen { module.bf16 = engine }
        let names = chosen.map(\.0).joined(separator: ", ")
        return ("compute: bf16 GEMMs, fp32 accumulation (oneDNN \(BF16GEMM.instructionSet)) in " + names, false)
    }

    /// Model FLOPs of one step on `b` images per rank with `maskedTokens` masked tokens: student
    /// backbone forward+backward on every crop, teacher backbone forward on the global crops,
    /// student heads forward+backward and teacher heads forward on their rows.
    public func stepFLOPs(images b: Int, maskedTokens m: Int) -> Double {
        let g = config.crops.globalCropsSize, l = config.crops.localCropsSize, n = config.crops.localCropsNumber
        let a = architecture
        var total = a.trainingFLOPs(crops: 2 * b, size: g) + a.trainingFLOPs(crops: n * b, size: l)
        let teacher = (distillationTeacher?.architecture ?? a).forwardFLOPs(crops: 2 * b, size: g)
        total += teacher.linear + teacher.attention + teacher.patch
        let dino = studentDinoHead.architecture.forwardFLOPsPerRow
        let clsRows = Double(2 * b + n * b)
        // Student heads forward + backward (3x), the target network's heads forward (1x).
        let teacherDino = (distillationTeacher?.dinoHead ?? teacherDinoHead).architecture.forwardFLOPsPerRow
        let teacherIbot = (distillationTeacher.map { $0.ibotHead } ?? teacherIbotHead)?.architecture
        total += teacherDino * Double(2 * b) + (teacherIbot?.forwardFLOPsPerRow ?? teacherDino) * Double(m)
        if let ibot = studentIbotHead?.architecture.forwardFLOPsPerRow {
            total += 3 * dino * clsRows + 3 * ibot * Double(m)
        } else {
            total += 3 * dino * (clsRows + Double(m))
        }
        return total
    }

    /// The teacher's final-norm CLS tokens [count, D] and, when `patches`, patch tokens [count, P, D]
    /// of `images` [count, 3, size, size] (the official x_norm_clstoken / x_norm_patchtokens).
    /// Collective in that the teacher's units are gathered.
    public func teacherTokens(
        images: UnsafePointer<Float>, count: Int, size: Int, patches: Bool
    )
        throws -> (cls: [Float], patches: [Float])
    {
        let d = architecture.embedDim, p = architecture.patches(cropSize: size), firstPatch = 1 + architecture.registers
        try teacherBackbone.forward(
            [CropBatch(images: images, count: count, size: size)], store: backbone.teacher,
            keepActivations: false)
        let rows = teacherBackbone.batches[0]
        var cls = [Float](repeating: 0, count: count * d)
        var patchTokens = [Float](repeating: 0, count: patches ? count * p * d : 0)
        for i in 0..<count {
            let output = teacherBackbone.output
            for c in 0..<d { cls[i * d + c] = output[rows.row(crop: i, token: 0) * d + c] }
            guard patches else { continue }
            patchTokens.withUnsafeMutableBufferPointer { target in
                guard let base = target.baseAddress else { return }
                (base + i * p * d).update(from: output + rows.row(crop: i, token: firstPatch) * d, count: p * d)
            }
        }
        try backbone.teacher.endStep()
        return (cls, patchTokens)
    }

    /// Backbone, DINO head and (when separate) iBOT head.
    public var parts: [ModelPart] { [backbone, dinoHead] + (ibotHead.map { [$0] } ?? []) }

    /// One optimisation step on this rank's crops; returns the rank's losses. The stages are the
    /// header's: teacher targets (2), student forward and loss (3, 4), backward with the gradient
    /// reduction and the finite check, then clip / AdamW / EMA (5-7).
    public func step(
        iteration: Int, globalImages: UnsafePointer<Float>, localImages: UnsafePointer<Float>,
        masks: [Bool], images b: Int, schedule: ScheduleValues? = nil
    ) throws -> StepLosses {
        let s = schedule ?? schedules.values(at: iteration)
        var clock = StepClock(parts: parts, communicator: communicator)
        for part in parts { part.student.zeroGradients() }
        let crops = StepCrops(config: config, architecture: architecture, images: b, masks: masks)
        clock.maskedTokens = crops.maskedTokens.count

        let targets = try clock.measure(\.teacherForward) {
            let targets = try teacherTargets(crops, globalImages: globalImages, schedule: s)
            // The teacher is done with its units (SHARD_GRAD_OP kept them gathered): back to the pool
            // for the student.
            for store in targetNetwork.stores { try store.endStep() }
            return targets
        }
        var losses = StepLosses(dinoLocal: 0, dinoGlobal: 0, ibot: 0, koleo: 0)
        let heads = try clock.measure(\.studentForward) {
            try studentForwardAndLoss(
                crops, globalImages: globalImages, localImages: localImages,
                targets: targets, iteration: iteration, losses: &losses)
        }
        let norms = try clock.measure(\.backward) {
            try backwardAndReduce(crops, heads: heads, losses: losses, iteration: iteration)
        }
        clock.measure(\.optimizer) { clipAndAdamW(norms: norms, schedule: s) }
        clock.measure(\.ema) { for part in parts { part.updateTeacher(momentum: s.momentum) } }
        lastTiming = clock.finish()
        return losses
    }

    /// The network that gives the targets: the EMA teacher, or in distillation the frozen teacher
    /// (its own width and token layout).
    private struct TargetNetwork {
        let backbone: Backbone<Float>
        let backboneStore: ShardedParameterStore
        let dinoHead: (head: DinoHead<Float>, store: ShardedParameterStore)
        let ibotHead: (head: DinoHead<Float>, store: ShardedParameterStore)?
        let width: Int
        let firstPatch: Int
        var stores: [ShardedParameterStore] { [backboneStore, dinoHead.store] + (ibotHead.map { [$0.store] } ?? []) }
    }

    private var targetNetwork: TargetNetwork {
        if let frozen = distillationTeacher {
            return TargetNetwork(
                backbone: frozen.backbone, backboneStore: frozen.backboneStore,
                dinoHead: (frozen.dinoHead, frozen.dinoStore),
                ibotHead: frozen.ibotHead.flatMap { head in frozen.ibotStore.map { (head, $0) } },
                width: frozen.width, firstPatch: frozen.firstPatch)
        }
        return TargetNetwork(
            backbone: teacherBackbone, backboneStore: backbone.teacher, dinoHead: (teacherDinoHead, dinoHead.teacher),
            ibotHead: teacherIbotHead.flatMap { head in ibotHead.map { (head, $0.teacher) } },
            width: architecture.embedDim, firstPatch: 1 + architecture.registers)
    }

    /// The teacher's DINO targets [2B, K] and iBOT targets [M, K] (stage 2), with the collapse
    /// statistics of the DINO targets recorded.
    private func teacherTargets(
        _ crops: StepCrops, globalImages: UnsafePointer<Float>, schedule s: ScheduleValues
    )
        throws -> (dino: UnsafeMutablePointer<Float>, ibot: UnsafeMutablePointer<Float>)
    {
        let b = crops.images, m = crops.maskedTokens.count, network = targetNetwork, d = network.width
        let kDino = crops.dinoPrototypes, kIbot = crops.ibotPrototypes, temperature = s.teacherTemperature
        try network.backbone.forward(
            [CropBatch(images: globalImages, count: 2 * b, size: crops.globalSize)],
            store: network.backboneStore, keepActivations: false)
        let rows = buffers.teacherRows
        rows.set(
            cls: network.backbone.batches.prefix(1), masked: crops.maskedTokens,
            of: network.backbone.batches[0], firstPatch: network.firstPatch)
        let input = buffers.teacherInput.reserve(rows.count * d)
        rows.gather(network.backbone.output, into: input, channels: d)
        let dino = buffers.dinoTargets.reserve(2 * b * kDino)
        let ibot = buffers.ibotTargets.reserve(m * kIbot)
        let dinoHead = network.dinoHead
        if let ibotHead = network.ibotHead {
            try dinoHead.head.forward(input, rows: 2 * b, store: dinoHead.store)
            try targets(
                dino, logits: dinoHead.head.output, rows: 2 * b, k: kDino, center: dinoCenter,
                temperature: temperature, rankMean: false)
            try ibotHead.head.forward(input + 2 * b * d, rows: m, store: ibotHead.store)
            try targets(
                ibot, logits: ibotHead.head.output, rows: m, k: kIbot, center: ibotCenter,
                temperature: temperature, rankMean: true)
        } else {
            // The shared head runs once over the CLS and masked rows.
            try dinoHead.head.forward(input, rows: 2 * b + m, store: dinoHead.store)
            try targets(
                dino, logits: dinoHead.head.output, rows: 2 * b, k: kDino, center: dinoCenter,
                temperature: temperature, rankMean: false)
            try targets(
                ibot, logits: dinoHead.head.output + 2 * b * kDino, rows: m, k: kIbot, center: ibotCenter,
                temperature: temperature, rankMean: true)
        }
        recordTargetStatistics(
            dino, rows: 2 * b, k: kDino, cls: input, channels: d,
            bottleneck: dinoHead.head.normalizedBottleneck,
            bottleneckChannels: dinoHead.head.architecture.bottleneck)
        return (dino, ibot)
    }

    /// The student backbone on every crop, its heads, the DINO, iBOT and KoLeo losses, and the heads'
    /// backward (stages 3, 4): returns the head rows with their gradient [rows, D] in `buffers.dInput`.
    private func studentForwardAndLoss(
        _ crops: StepCrops, globalImages: UnsafePointer<Float>, localImages: UnsafePointer<Float>,
        targets: (dino: UnsafeMutablePointer<Float>, ibot: UnsafeMutablePointer<Float>), iteration: Int,
        losses: inout StepLosses
    ) throws -> HeadRows {
        let b = crops.images, nLocal = crops.localCrops, m = crops.maskedTokens.count, d = architecture.embedDim
        let kDino = crops.dinoPrototypes, kIbot = crops.ibotPrototypes
        let dropPath = DropPath(
            seed: UInt64(config.train.seed), iteration: UInt64(iteration),
            rate: config.student.dropPathRate, depth: architecture.depth,
            uniform: config.student.dropPathUniform)
        // Distillation: no mask tokens (the iBOT tokens are every patch, seen as they are), no drop path.
        let distilling = distillationTeacher != nil
        try crops.masks.withUnsafeBufferPointer { maskPointer in
            guard let maskBase = maskPointer.baseAddress else { return }
            try studentBackbone.forward(
                [
                    CropBatch(
                        images: globalImages, count: 2 * b, size: crops.globalSize, masks: distilling ? nil : maskBase),
                    CropBatch(images: localImages, count: nLocal * b, size: crops.localSize),
                ],
                store: backbone.student, dropPath: config.student.dropPathRate > 0 && !distilling ? dropPath : nil)
        }
        // Head input rows: global CLS, local CLS, masked patch tokens.
        let rows = buffers.studentRows
        rows.set(
            cls: studentBackbone.batches, masked: crops.maskedTokens, of: studentBackbone.batches[0],
            firstPatch: crops.firstPatch)
        let clsRows = rows.count - m
        let input = buffers.studentInput.reserve(rows.count * d)
        rows.gather(studentBackbone.output, into: input, channels: d)
        let dInput = buffers.dInput.reserve(rows.count * d)
        dInput.setToZero(count: rows.count * d)
        let shared = ibotHead == nil
        let dinoRows = shared ? rows.count : clsRows
        try studentDinoHead.forward(input, rows: dinoRows, store: dinoHead.student)
        // Every row of dDino is written (=) by the CLS and patch losses: no zeroing needed.
        let dDino = buffers.dLogits.reserve(dinoRows * kDino)
        let threads = studentBackbone.threads
        let scratch = buffers.scratch.reserve(Swift.max(2 * b * kDino, threads * kIbot))
        let cls = DinoLosses.clsLoss(
            dGlobal: dDino, dLocal: dDino + 2 * b * kDino, studentGlobal: studentDinoHead.output,
            studentLocal: studentDinoHead.output + 2 * b * kDino, teacherTargets: targets.dino,
            images: b, localCrops: nLocal, prototypes: kDino, weight: config.dino.lossWeight,
            scratch: scratch, threads: threads)
        losses.dinoLocal = cls.local
        losses.dinoGlobal = cls.global
        if let studentIbotHead, let ibotHead {
            try studentDinoHead.backward(dDino, dInput: dInput, store: dinoHead.student)
            try studentIbotHead.forward(input + clsRows * d, rows: m, store: ibotHead.student)
            let dIbot = buffers.dIbotLogits.reserve(Swift.max(1, m * kIbot))
            losses.ibot = DinoLosses.patchLoss(
                dStudent: dIbot, student: studentIbotHead.output, teacherTargets: targets.ibot,
                tokenWeights: crops.tokenWeights, globalCrops: 2 * b, prototypes: kIbot,
                weight: config.ibot.lossWeight, scratch: scratch, threads: threads)
            try studentIbotHead.backward(dIbot, dInput: dInput + clsRows * d, store: ibotHead.student)
        } else {
            losses.ibot = DinoLosses.patchLoss(
                dStudent: dDino + clsRows * kDino, student: studentDinoHead.output + clsRows * kDino,
                teacherTargets: targets.ibot, tokenWeights: crops.tokenWeights,
                globalCrops: 2 * b, prototypes: kIbot, weight: config.ibot.lossWeight,
                scratch: scratch, threads: threads)
            try studentDinoHead.backward(dDino, dInput: dInput, store: dinoHead.student)
        }
        // KoLeo on each view's global CLS tokens (head rows [view B, (view + 1) B)), added to their gradient.
        if config.dino.koleoLossWeight > 0 {
            let dKoleo = buffers.dKoleo.reserve(b * d)
            for view in 0..<2 {
                losses.koleo += DinoLosses.koleo(
                    dX: dKoleo, x: input + view * b * d, rows: b, channels: d,
                    weight: config.dino.koleoLossWeight)
                Float.add(dInput + view * b * d, dKoleo, b * d)
            }
        }
        // The copy-detection loss on the same rows, both views at once (positives are across views).
        if config.copyDetection.lossWeight > 0 {
            let dCopy = buffers.dCopy.reserve(2 * b * d)
            losses.copy = try DinoLosses.copyContrastive(
                dX: dCopy, x: input, images: b, channels: d, temperature: config.copyDetection.temperature,
                weight: config.copyDetection.lossWeight, reducer: rowReducer, scratch: buffers.copyScratch)
            Float.add(dInput, dCopy, 2 * b * d)
        }
        return rows
    }

    /// The backbone backward from the head rows' gradient, every unit's gradient reduction, and the
    /// finite check: the losses and gradient norms are reduced over every rank, so a non-finite value
    /// anywhere stops every rank at the same point, before the optimizer touches anything. Returns
    /// each part's gradient norm (over every shard).
    private func backwardAndReduce(
        _ crops: StepCrops, heads: HeadRows, losses: StepLosses, iteration: Int
    )
        throws -> [Double]
    {
        let d = architecture.embedDim
        let dOutput = buffers.dTokens.reserve(studentBackbone.tokenCount * d)
        dOutput.setToZero(count: studentBackbone.tokenCount * d)
        heads.scatterAdd(buffers.dInput.base, into: dOutput, channels: d)
        try studentBackbone.backward(dOutput, store: backbone.student)
        for part in parts { try part.student.endStep() }
        let lossValues = try communicator.allReduce(losses.terms, op: .sum)
        for (value, name) in zip(lossValues, StepLosses.names) where !value.isFinite {
            throw TrainingError.nonFinite(
                "\(name) is \(value) at iteration \(iteration) (summed over ranks); nothing was updated")
        }
        return try parts.map { part in
            let norm = try part.student.gradientSquaredNorm().squareRoot()
            guard norm.isFinite else {
                throw TrainingError.nonFinite(
                    "the \(part.name) gradient norm is \(norm) at iteration \(iteration); "
                        + "nothing was updated")
            }
            return norm
        }
    }

    /// Clips each sub-module at optim.clip_grad (its norm over every shard), then AdamW on the shards.
    private func clipAndAdamW(norms: [Double], schedule s: ScheduleValues) {
        for (part, norm) in zip(parts, norms) {
            let coefficient = AdamW.clipCoefficient(norm: norm, maxNorm: config.optim.clipGrad)
            if coefficient < 1 { part.student.scaleGradients(Float(coefficient)) }
        }
        optimizerSteps += 1
        for part in parts {
            part.adamW(
                schedule: s, beta1: config.optim.adamwBeta1, beta2: config.optim.adamwBeta2, step: optimizerSteps,
                threads: studentBackbone.threads)
        }
    }

    private func targets(
        _ out: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>, rows: Int, k: Int,
        center: SoftmaxCenter<Float>, temperature: Double, rankMean: Bool
    ) throws {
        if config.train.centering == .sinkhornKnopp {
            let total = Int(try rowReducer.sum(Double(rows)))
            try TeacherTargets.sinkhornKnopp(
                out: out, logits: logits, rows: rows, prototypes: k, temperature: temperature,
                totalRows: total, reducer: rowReducer,
                scratch: buffers.sinkhornScratch.reserve(k))
        } else {
            TeacherTargets.centered(
                out: out, logits: logits, rows: rows, prototypes: k, temperature: temperature, center: center,
                threads: studentBackbone.threads)
            try center.recordBatch(logits, rows: rows, rankMean: rankMean, reducer: rowReducer)
        }
    }

    /// Keeps this rank's column sums, arg-max counts and entropy of `rows` targets, and per-channel
    /// sums and squared sums of the rows' teacher CLS tokens `cls` [rows, D] and normalised head
    /// bottlenecks [rows, E], for `targetStatistics()`.
    /// Layout: [K column sums | K arg-max counts | entropy | rows | D sums | D squares | E sums | E squares].
    private func recordTargetStatistics(
        _ targets: UnsafePointer<Float>, rows: Int, k: Int, cls: UnsafePointer<Float>,
        channels d: Int, bottleneck: UnsafePointer<Float>, bottleneckChannels e: Int
    ) {
        let count = 2 * k + 2 + 2 * d + 2 * e
        let sums = buffers.targetSums.reserve(count)
        sums.setToZero(count: count)
        func accumulate(_ x: UnsafePointer<Float>, channels: Int, at start: Int) {
            for row in 0..<rows {
                for c in 0..<channels {
                    let value = Double(x[row * channels + c])
                    sums[start + c] += value
                    sums[start + channels + c] += value * value
                }
            }
        }
        accumulate(cls, channels: d, at: 2 * k + 2)
        accumulate(bottleneck, channels: e, at: 2 * k + 2 + 2 * d)
        var entropy = 0.0
        for row in 0..<rows {
            let q = targets + row * k
            var best = 0
            for j in 0..<k {
                let value = Double(q[j])
                sums[j] += value
                if value > 0 { entropy -= value * Foundation.log(value) }
                if q[j] > q[best] { best = j }
            }
            sums[k + best] += 1
        }
        sums[2 * k] = entropy
        sums[2 * k + 1] = Double(rows)
    }

    /// The collapse diagnostics of the last step's DINO targets over every rank (collective).
    public func targetStatistics() throws -> TargetStatistics {
        let network = targetNetwork
        let k = config.dino.headPrototypes, d = network.width, e = network.dinoHead.head.architecture.bottleneck
        let count = 2 * k + 2 + 2 * d + 2 * e
        guard buffers.targetSums.capacity >= count else {
            return TargetStatistics(meanEntropy: 0, entropyOfMean: 0, prototypesInUse: 0)
        }
        let local = Array(UnsafeBufferPointer(start: buffers.targetSums.base, count: count))
        let total = try communicator.allReduce(local, op: .sum)
        let rows = Swift.max(total[2 * k + 1], 1)
        var entropyOfMean = 0.0
        for j in 0..<k where total[j] > 0 {
            let p = total[j] / rows
            entropyOfMean -= p * Foundation.log(p)
        }
        let inUse = total[k..<(2 * k)].filter { $0 > 0 }.count
        // Mean over channels of the standard deviation over rows.
        func spread(channels: Int, at start: Int) -> Double {
            var sum = 0.0
            for c in 0..<channels {
                let mean = total[start + c] / rows
                sum += Swift.max(0, total[start + channels + c] / rows - mean * mean).squareRoot() / Double(channels)
            }
            return sum
        }
        return TargetStatistics(
            meanEntropy: total[2 * k] / rows, entropyOfMean: entropyOfMean, prototypesInUse: inUse,
            clsSpread: spread(channels: d, at: 2 * k + 2),
            headSpread: spread(channels: e, at: 2 * k + 2 + 2 * d))
    }
}

/// The evaluations read the teacher.
extension SelfDistillation: FrozenFeatures {
    public var featureDimension: Int { architecture.embedDim }
    public var inputSize: Int { config.crops.globalCropsSize }
    public var patchesPerImage: Int { architecture.patches(cropSize: config.crops.globalCropsSize) }
    public var workerThreads: Int { teacherBackbone.threads }
    public var patchSize: Int { architecture.patchSize }

    public func tokens(
        images: UnsafePointer<Float>, count: Int, size: Int, patches: Bool
    ) throws
        -> (cls: [Float], patches: [Float])
    {
        try teacherTokens(images: images, count: count, size: size, patches: patches)
    }
}
