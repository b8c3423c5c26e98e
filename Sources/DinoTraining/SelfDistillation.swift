// One DINOv2 training step on one rank (dinov2/train/ssl_meta_arch.py forward_backward, train.py):
//   1. schedule values for the iteration; zero the student's gradients
//   2. teacher backbone on the global crops (no masks, no drop path) -> CLS [2B, D] and the patch
//      tokens at the student's masked positions [M, D] -> teacher head(s) -> targets by softmax
//      centering (center updated one step late) or Sinkhorn-Knopp
//   3. student backbone on [global crops with masks, local crops] with stochastic depth -> CLS of
//      every crop and the masked patch tokens -> student head(s)
//   4. DINO CLS loss, iBOT loss, KoLeo on each view's global CLS -> one backward through heads and
//      backbone
//   5. gradient clipping per sub-module (backbone, DINO head, iBOT head) at optim.clip_grad
//   6. AdamW with each tensor's lr and wd multipliers (last layer on its own schedule)
//   7. teacher <- m teacher + (1 - m) student, every tensor
// Crop layout: global images [2B, 3, S, S] view-major (view 1 of every image, then view 2), local
// images [n_local B, 3, s, s] crop-major, masks [2B, N]. Collectives (centering, Sinkhorn) go
// through the communicator, so one rank runs the same code as many.

import DinoConfig
import DinoCore
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
    /// The optimised objective: the sum of the four.
    public var total: Double { dinoLocal + dinoGlobal + ibot + koleo }
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
    public var optimizer = 0.0
    public var ema = 0.0
    /// Everything else: forward and backward compute, heads and losses.
    public var compute: Double { Swift.max(0, total - exposedCommunication - optimizer - ema) }
    /// Masked patch tokens of this rank's crops (they set the iBOT head's work).
    public var maskedTokens = 0

    public init() {}
}

/// Failures of a training step, each with what to do about it.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case nonFinite(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .nonFinite(let text): return "non-finite value: \(text)"
        case .unsupported(let text): return text
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

    init(name: String, table: TensorTable, groups: [ParameterGroup], strategy: ShardingStrategy,
         communicator: any Communicator, hybridGroupSize: Int, allGatherBF16: Bool) throws {
        self.name = name
        self.table = table
        self.groups = groups
        let student = try ShardedParameterStore(table: table, strategy: strategy, world: communicator,
                                                hybridGroupSize: hybridGroupSize, allGatherBF16: allGatherBF16)
        self.student = student
        teacher = try ShardedParameterStore(table: table, strategy: strategy, world: communicator,
                                            hybridGroupSize: hybridGroupSize, allGatherBF16: allGatherBF16)
        let counts = table.units.indices.map { student.plan.shardCount($0) }
        firstMoment = UnitBuffers(counts: counts)
        secondMoment = UnitBuffers(counts: counts)
    }

    /// AdamW on this rank's slice of every tensor, with the tensor's lr and wd multipliers.
    func adamW(schedule s: ScheduleValues, beta1: Double, beta2: Double, step: Int, threads: Int) {
        for (index, entry) in table.entries.enumerated() {
            guard let slice = student.plan.localSlice(of: entry) else { continue }
            let group = groups[index]
            let lr = (group.isLastLayer ? s.lastLayerLR : s.lr) * group.lrMultiplier
            let offset = slice.inShard.lowerBound
            AdamW.update(parameters: student.parametersShard[entry.unit] + offset,
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
            VectorOps.lerp(UnsafeMutableBufferPointer(start: teacher.parametersShard[u], count: count),
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
    public internal(set) var optimizerSteps = 0
    /// The time split of the last step.
    public private(set) var lastTiming = StepTiming()

    private let studentBackbone: Backbone<Float>, teacherBackbone: Backbone<Float>
    private let studentDinoHead: DinoHead<Float>, teacherDinoHead: DinoHead<Float>
    private let studentIbotHead: DinoHead<Float>?, teacherIbotHead: DinoHead<Float>?
    public let dinoCenter: SoftmaxCenter<Float>, ibotCenter: SoftmaxCenter<Float>
    /// The step's scratch: grown to the largest step, then reused (no allocation per step).
    private let buffers = StepBuffers()

    final class StepBuffers {
        let teacherInput = GrowableBuffer<Float>(), dinoTargets = GrowableBuffer<Float>(), ibotTargets = GrowableBuffer<Float>()
        let studentInput = GrowableBuffer<Float>(), dInput = GrowableBuffer<Float>(), dLogits = GrowableBuffer<Float>()
        let dIbotLogits = GrowableBuffer<Float>(), scratch = GrowableBuffer<Float>(), dKoleo = GrowableBuffer<Float>()
        let dTokens = GrowableBuffer<Float>()
        /// The last step's DINO target sums per prototype [K], arg-max counts [K], then (entropy sum, rows).
        let targetSums = GrowableBuffer<Double>()
        let sinkhornScratch = GrowableBuffer<Double>()
    }
    /// The world, timed: the step's own collectives (targets, loss and norm checks) add up here.
    let communicator: TimedCommunicator

    /// Builds the model for `config` (its `optim.lr` already scaled for the world size) and
    /// initialises the student from `seed`; the teacher starts as a copy of the student.
    public init(config: TrainingConfig, communicator: any Communicator, seed: UInt64, threads: Int = 1) throws {
        self.config = config
        self.communicator = TimedCommunicator(communicator)
        schedules = TrainingSchedules(config)
        architecture = try ViTArchitecture(student: config.student, imageSize: config.crops.globalCropsSize)
        let layout = ParameterLayout(architecture)
        let depth = architecture.depth
        guard let strategy = ShardingStrategy(rawValue: config.fsdp.shardingStrategy) else {
            throw CommunicatorError.invalidArgument("fsdp.sharding_strategy '\(config.fsdp.shardingStrategy)' is unknown")
        }
        func part(_ name: String, _ table: TensorTable, _ groups: [ParameterGroup]) throws -> ModelPart {
            try ModelPart(name: name, table: table, groups: groups, strategy: strategy, communicator: communicator,
                          hybridGroupSize: config.fsdp.hybridGroupSize, allGatherBF16: config.fsdp.allgatherDtype == "bf16")
        }
        backbone = try part("backbone", layout.table, layout.entries.map {
            ParameterGroups.backbone($0.name, depth: depth, layerwiseDecay: config.optim.layerwiseDecay,
                                     patchEmbedMultiplier: config.optim.patchEmbedLRMult)
        })
        let dinoArchitecture = HeadArchitecture(inDim: architecture.embedDim, hidden: config.dino.headHiddenDim,
                                                bottleneck: config.dino.headBottleneckDim, layers: config.dino.headLayers,
                                                prototypes: config.dino.headPrototypes)
        studentDinoHead = DinoHead(dinoArchitecture)
        teacherDinoHead = DinoHead(dinoArchitecture)
        dinoHead = try part("dino_head", studentDinoHead.table,
                            studentDinoHead.table.entries.map { ParameterGroups.head($0.name) })
        if config.ibot.separateHead {
            let ibotArchitecture = HeadArchitecture(inDim: architecture.embedDim, hidden: config.ibot.headHiddenDim,
                                                    bottleneck: config.ibot.headBottleneckDim,
                                                    layers: config.ibot.headLayers, prototypes: config.ibot.headPrototypes)
            let student = DinoHead<Float>(ibotArchitecture)
            studentIbotHead = student
            teacherIbotHead = DinoHead(ibotArchitecture)
            ibotHead = try part("ibot_head", student.table, student.table.entries.map { ParameterGroups.head($0.name) })
        } else {
            studentIbotHead = nil
            teacherIbotHead = nil
            ibotHead = nil
        }
        studentBackbone = Backbone(layout: layout, threads: threads)
        teacherBackbone = Backbone(layout: layout, threads: threads)
        dinoCenter = SoftmaxCenter(prototypes: config.dino.headPrototypes)
        ibotCenter = SoftmaxCenter(prototypes: config.ibot.separateHead ? config.ibot.headPrototypes : config.dino.headPrototypes)
        for (index, part) in parts.enumerated() {
            part.student.initialize(seed: seed &+ UInt64(index) &* 0x1_0000)
            part.copyStudentToTeacher()
        }
        // As the official meta-architecture: the student backbone starts from these weights (the
        // heads stay freshly initialised) and the teacher copies it. A resumed checkpoint overrides it.
        if !config.student.pretrainedWeights.isEmpty { try loadBackboneWeights(from: config.student.pretrainedWeights) }
    }

    /// Model FLOPs of one step on `b` images per rank with `maskedTokens` masked tokens: student
    /// backbone forward+backward on every crop, teacher backbone forward on the global crops,
    /// student heads forward+backward and teacher heads forward on their rows.
    public func stepFLOPs(images b: Int, maskedTokens m: Int) -> Double {
        let g = config.crops.globalCropsSize, l = config.crops.localCropsSize, n = config.crops.localCropsNumber
        let a = architecture
        var total = a.trainingFLOPs(crops: 2 * b, size: g) + a.trainingFLOPs(crops: n * b, size: l)
        let teacher = a.forwardFLOPs(crops: 2 * b, size: g)
        total += teacher.linear + teacher.attention + teacher.patch
        let dino = studentDinoHead.architecture.forwardFLOPsPerRow
        let clsRows = Double(2 * b + n * b)
        if let ibot = studentIbotHead?.architecture.forwardFLOPsPerRow {
            total += 3 * dino * clsRows + dino * Double(2 * b) + 4 * ibot * Double(m)
        } else {
            total += 3 * dino * (clsRows + Double(m)) + dino * Double(2 * b + m)
        }
        return total
    }

    /// The teacher's final-norm CLS tokens [count, D] and, when `patches`, patch tokens [count, P, D]
    /// of `images` [count, 3, size, size] (the official x_norm_clstoken / x_norm_patchtokens).
    /// Collective in that the teacher's units are gathered.
    public func teacherTokens(images: UnsafePointer<Float>, count: Int, size: Int, patches: Bool)
        throws -> (cls: [Float], patches: [Float])
    {
        let d = architecture.embedDim, p = architecture.patches(cropSize: size), firstPatch = 1 + architecture.registers
        try teacherBackbone.forward([CropBatch(images: images, count: count, size: size)], store: backbone.teacher,
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

    /// One optimisation step on this rank's crops; returns the rank's losses.
    public func step(iteration: Int, globalImages: UnsafePointer<Float>, localImages: UnsafePointer<Float>,
                     masks: [Bool], images b: Int, schedule: ScheduleValues? = nil) throws -> StepLosses {
        let s = schedule ?? schedules.values(at: iteration)
        let stepStart = MonotonicClock.seconds()
        var timing = StepTiming()
        communicator.reset()
        for part in parts {
            part.student.resetCommunicationTimers()
            part.teacher.resetCommunicationTimers()
        }
        let a = architecture, d = a.embedDim
        let nLocal = config.crops.localCropsNumber
        let globalSize = config.crops.globalCropsSize, localSize = config.crops.localCropsSize
        let patches = a.patches(cropSize: globalSize)
        precondition(masks.count == 2 * b * patches, "masks: \(masks.count) values for \(2 * b) crops of \(patches) patches")
        for part in parts { part.student.zeroGradients() }

        // Masked tokens: (crop, patch) in crop order, and each token's iBOT weight 1 / m_crop.
        var maskedTokens: [(crop: Int, patch: Int)] = []
        var tokenWeights: [Double] = []
        for crop in 0..<(2 * b) {
            let count = (0..<patches).filter { masks[crop * patches + $0] }.count
            for patch in 0..<patches where masks[crop * patches + patch] {
                maskedTokens.append((crop, patch))
                tokenWeights.append(1 / Double(Swift.max(count, 1)))
            }
        }
        let m = maskedTokens.count
        timing.maskedTokens = m
        let shared = ibotHead == nil
        let kDino = config.dino.headPrototypes
        let kIbot = shared ? kDino : config.ibot.headPrototypes

        // Teacher.
        try teacherBackbone.forward([CropBatch(images: globalImages, count: 2 * b, size: globalSize)],
                                    store: backbone.teacher, keepActivations: false)
        let teacherRows = teacherBackbone.batches[0]
        let teacherInput = buffers.teacherInput.reserve((2 * b + m) * d)
        for crop in 0..<(2 * b) { copyRow(teacherBackbone.output, teacherRows.row(crop: crop, token: 0), into: teacherInput, at: crop, d) }
        for (j, token) in maskedTokens.enumerated() {
            copyRow(teacherBackbone.output, teacherRows.row(crop: token.crop, token: 1 + a.registers + token.patch),
                    into: teacherInput, at: 2 * b + j, d)
        }
        let dinoTargets = buffers.dinoTargets.reserve(2 * b * kDino)
        let ibotTargets = buffers.ibotTargets.reserve(m * kIbot)
        if shared {
            try teacherDinoHead.forward(teacherInput, rows: 2 * b + m, store: dinoHead.teacher)
            try targets(dinoTargets, logits: teacherDinoHead.output, rows: 2 * b, k: kDino, center: dinoCenter,
                        temperature: s.teacherTemperature, rankMean: false)
            try targets(ibotTargets, logits: teacherDinoHead.output + 2 * b * kDino, rows: m, k: kIbot,
                        center: ibotCenter, temperature: s.teacherTemperature, rankMean: true)
        } else if let teacherIbotHead, let ibotHead {
            try teacherDinoHead.forward(teacherInput, rows: 2 * b, store: dinoHead.teacher)
            try targets(dinoTargets, logits: teacherDinoHead.output, rows: 2 * b, k: kDino, center: dinoCenter,
                        temperature: s.teacherTemperature, rankMean: false)
            try teacherIbotHead.forward(teacherInput + 2 * b * d, rows: m, store: ibotHead.teacher)
            try targets(ibotTargets, logits: teacherIbotHead.output, rows: m, k: kIbot, center: ibotCenter,
                        temperature: s.teacherTemperature, rankMean: true)
        }

        recordTargetStatistics(dinoTargets, rows: 2 * b, k: kDino, cls: teacherInput, channels: d,
                               bottleneck: teacherDinoHead.normalizedBottleneck, bottleneckChannels: teacherDinoHead.architecture.bottleneck)

        // Student.
        let dropPath = DropPath(seed: UInt64(config.train.seed), iteration: UInt64(iteration),
                                rate: config.student.dropPathRate, depth: a.depth, uniform: config.student.dropPathUniform)
        var losses = StepLosses(dinoLocal: 0, dinoGlobal: 0, ibot: 0, koleo: 0)
        try masks.withUnsafeBufferPointer { maskPointer in
            guard let maskBase = maskPointer.baseAddress else { return }
            try studentBackbone.forward([CropBatch(images: globalImages, count: 2 * b, size: globalSize, masks: maskBase),
                                         CropBatch(images: localImages, count: nLocal * b, size: localSize)],
                                        store: backbone.student, dropPath: config.student.dropPathRate > 0 ? dropPath : nil)
        }
        let globalRows = studentBackbone.batches[0], localRows = studentBackbone.batches[1]
        let clsRows = 2 * b + nLocal * b
        // Head input rows: global CLS, local CLS, masked patch tokens.
        let input = buffers.studentInput.reserve((clsRows + m) * d)
        for crop in 0..<(2 * b) { copyRow(studentBackbone.output, globalRows.row(crop: crop, token: 0), into: input, at: crop, d) }
        for crop in 0..<(nLocal * b) {
            copyRow(studentBackbone.output, localRows.row(crop: crop, token: 0), into: input, at: 2 * b + crop, d)
        }
        for (j, token) in maskedTokens.enumerated() {
            copyRow(studentBackbone.output, globalRows.row(crop: token.crop, token: 1 + a.registers + token.patch),
                    into: input, at: clsRows + j, d)
        }
        let dInput = buffers.dInput.reserve((clsRows + m) * d)
        dInput.setToZero(count: (clsRows + m) * d)
        let dinoRows = shared ? clsRows + m : clsRows
        try studentDinoHead.forward(input, rows: dinoRows, store: dinoHead.student)
        // Every row of dDino is written (=) by the CLS and patch losses: no zeroing needed.
        let dDino = buffers.dLogits.reserve(dinoRows * kDino)
        let threads = studentBackbone.threads
        let scratch = buffers.scratch.reserve(Swift.max(2 * b * kDino, threads * kIbot))
        let cls = DinoLosses.clsLoss(dGlobal: dDino, dLocal: dDino + 2 * b * kDino, studentGlobal: studentDinoHead.output,
                                     studentLocal: studentDinoHead.output + 2 * b * kDino, teacherTargets: dinoTargets,
                                     images: b, localCrops: nLocal, prototypes: kDino, weight: config.dino.lossWeight,
                                     scratch: scratch, threads: threads)
        losses.dinoLocal = cls.local
        losses.dinoGlobal = cls.global
        if shared {
            losses.ibot = DinoLosses.patchLoss(dStudent: dDino + clsRows * kDino, student: studentDinoHead.output + clsRows * kDino,
                                               teacherTargets: ibotTargets, tokenWeights: tokenWeights, globalCrops: 2 * b,
                                               prototypes: kIbot, weight: config.ibot.lossWeight, scratch: scratch,
                                               threads: threads)
            try studentDinoHead.backward(dDino, dInput: dInput, store: dinoHead.student)
        } else if let studentIbotHead, let ibotHead {
            try studentDinoHead.backward(dDino, dInput: dInput, store: dinoHead.student)
            try studentIbotHead.forward(input + clsRows * d, rows: m, store: ibotHead.student)
            let dIbot = buffers.dIbotLogits.reserve(Swift.max(1, m * kIbot))
            losses.ibot = DinoLosses.patchLoss(dStudent: dIbot, student: studentIbotHead.output, teacherTargets: ibotTargets,
                                               tokenWeights: tokenWeights, globalCrops: 2 * b, prototypes: kIbot,
                                               weight: config.ibot.lossWeight, scratch: scratch, threads: threads)
            try studentIbotHead.backward(dIbot, dInput: dInput + clsRows * d, store: ibotHead.student)
        }
        // KoLeo on each view's global CLS tokens, added to their gradient.
        if config.dino.koleoLossWeight > 0 {
            let dKoleo = buffers.dKoleo.reserve(b * d)
            for view in 0..<2 {
                losses.koleo += DinoLosses.koleo(dX: dKoleo, x: input + view * b * d, rows: b, channels: d,
                                                 weight: config.dino.koleoLossWeight)
                Float.add(dInput + view * b * d, dKoleo, b * d)
            }
        }

        // Backbone backward from the rows the heads and KoLeo read.
        let dOutput = buffers.dTokens.reserve(studentBackbone.tokenCount * d)
        dOutput.setToZero(count: studentBackbone.tokenCount * d)
        for crop in 0..<(2 * b) { addRow(dInput, at: crop, into: dOutput, row: globalRows.row(crop: crop, token: 0), d) }
        for crop in 0..<(nLocal * b) { addRow(dInput, at: 2 * b + crop, into: dOutput, row: localRows.row(crop: crop, token: 0), d) }
        for (j, token) in maskedTokens.enumerated() {
            addRow(dInput, at: clsRows + j, into: dOutput, row: globalRows.row(crop: token.crop, token: 1 + a.registers + token.patch), d)
        }
        try studentBackbone.backward(dOutput, store: backbone.student)

        for part in parts {
            try part.student.endStep()
            try part.teacher.endStep()
        }

        // The losses and gradient norms are reduced over every rank, so a non-finite value anywhere
        // stops every rank at the same point, before the optimizer touches anything.
        let lossValues = try communicator.allReduce([losses.dinoLocal, losses.dinoGlobal, losses.ibot, losses.koleo], op: .sum)
        for (value, name) in zip(lossValues, ["dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss", "koleo_loss"])
        where !value.isFinite {
            throw TrainingError.nonFinite("\(name) is \(value) at iteration \(iteration) (summed over ranks); nothing was updated")
        }
        var norms: [Double] = []
        for part in parts {
            let norm = try part.student.gradientSquaredNorm().squareRoot()
            guard norm.isFinite else {
                throw TrainingError.nonFinite("the \(part.name) gradient norm is \(norm) at iteration \(iteration); nothing was updated")
            }
            norms.append(norm)
        }


        // Clip each sub-module (norms over every shard), AdamW on the shards, teacher EMA.
        let optimizerStart = MonotonicClock.seconds()
        for (part, norm) in zip(parts, norms) {
            let coefficient = AdamW.clipCoefficient(norm: norm, maxNorm: config.optim.clipGrad)
            if coefficient < 1 { part.student.scaleGradients(Float(coefficient)) }
        }
        optimizerSteps += 1
        for part in parts {
            part.adamW(schedule: s, beta1: config.optim.adamwBeta1, beta2: config.optim.adamwBeta2, step: optimizerSteps,
                       threads: studentBackbone.threads)
        }
        let emaStart = MonotonicClock.seconds()
        timing.optimizer = emaStart - optimizerStart
        for part in parts { part.updateTeacher(momentum: s.momentum) }
        timing.ema = MonotonicClock.seconds() - emaStart
        // Communication: the stores' gathers and reductions, the targets' and norms' all-reduces.
        for part in parts {
            timing.exposedCommunication += part.student.exposedCommunicationSeconds + part.teacher.exposedCommunicationSeconds
            timing.exposedGathers += part.student.exposedGatherSeconds + part.teacher.exposedGatherSeconds
            timing.exposedReductions += part.student.exposedReductionSeconds + part.teacher.exposedReductionSeconds
            timing.totalCommunication += part.student.totalCommunicationSeconds + part.teacher.totalCommunicationSeconds
        }
        timing.exposedCommunication += communicator.seconds
        timing.exposedObjective = communicator.seconds
        timing.totalCommunication += communicator.seconds
        timing.total = MonotonicClock.seconds() - stepStart
        lastTiming = timing
        return losses
    }

    private func targets(_ out: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>, rows: Int, k: Int,
                         center: SoftmaxCenter<Float>, temperature: Double, rankMean: Bool) throws {
        if config.train.centering == "sinkhorn_knopp" {
            let total = Int(try communicator.allReduce(Int64(rows), op: .sum))
            try TeacherTargets.sinkhornKnopp(out: out, logits: logits, rows: rows, prototypes: k, temperature: temperature,
                                             totalRows: total, communicator: communicator,
                                             scratch: buffers.sinkhornScratch.reserve(k))
        } else {
            TeacherTargets.centered(out: out, logits: logits, rows: rows, prototypes: k, temperature: temperature, center: center,
                                    threads: studentBackbone.threads)
            try center.recordBatch(logits, rows: rows, rankMean: rankMean, communicator: communicator)
        }
    }

    /// Keeps this rank's column sums, arg-max counts and entropy of `rows` targets, and per-channel
    /// sums and squared sums of the rows' teacher CLS tokens `cls` [rows, D] and normalised head
    /// bottlenecks [rows, E], for `targetStatistics()`.
    /// Layout: [K column sums | K arg-max counts | entropy | rows | D sums | D squares | E sums | E squares].
    private func recordTargetStatistics(_ targets: UnsafePointer<Float>, rows: Int, k: Int, cls: UnsafePointer<Float>,
                                        channels d: Int, bottleneck: UnsafePointer<Float>, bottleneckChannels e: Int) {
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
        let k = config.dino.headPrototypes, d = architecture.embedDim, e = config.dino.headBottleneckDim
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
        return TargetStatistics(meanEntropy: total[2 * k] / rows, entropyOfMean: entropyOfMean, prototypesInUse: inUse,
                                clsSpread: spread(channels: d, at: 2 * k + 2),
                                headSpread: spread(channels: e, at: 2 * k + 2 + 2 * d))
    }

    private func copyRow(_ source: UnsafePointer<Float>, _ row: Int, into target: UnsafeMutablePointer<Float>, at index: Int,
                         _ d: Int) {
        (target + index * d).update(from: source + row * d, count: d)
    }

    private func addRow(_ source: UnsafePointer<Float>, at index: Int, into target: UnsafeMutablePointer<Float>, row: Int,
                        _ d: Int) {
        Float.add(target + row * d, source + index * d, d)
    }
}
