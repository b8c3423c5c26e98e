// The resolved configuration of a run, as typed values. Section and key names are the official
// DINOv2 ones (dinov2/configs/ssl_default_config.yaml), so official train configs load unchanged;
// the defaults below equal that file. `fsdp`, `checkpointing`, `activation_checkpoint`,
// `distillation`, `copy_detection` and `augmentation` are sections of our own.
// Keys of the official file that its training code never reads (MODEL) are not accepted rather than
// silently ignored. `compute_precision` keeps the official per-module mixed-precision keys, flattened
// to dotted names under the section (see ComputePrecisionConfig); its default differs: fp32.

/// Every setting of a training run.
public struct TrainingConfig: Codable, Equatable, Sendable {
    public var dino = DinoHeadConfig()
    public var ibot = IBOTConfig()
    public var train = TrainConfig()
    public var student = StudentConfig()
    public var teacher = TeacherConfig()
    public var optim = OptimConfig()
    public var crops = CropsConfig()
    public var evaluation = EvaluationConfig()
    public var computePrecision = ComputePrecisionConfig()
    public var fsdp = FSDPConfig()
    public var checkpointing = CheckpointingConfig()
    public var activationCheckpoint = ActivationCheckpointConfig()
    public var distillation = DistillationConfig()
    public var copyDetection = CopyDetectionConfig()
    public var augmentation = AugmentationConfig()

    public init() {}

    enum CodingKeys: String, CodingKey {
        case dino, ibot, train, student, teacher, optim, crops, evaluation
        case computePrecision = "compute_precision"
        case fsdp, checkpointing
        case activationCheckpoint = "activation_checkpoint"
        case distillation
        case copyDetection = "copy_detection"
        case augmentation
    }
}

/// `dino.*`: the DINO CLS-token head and loss weights.
public struct DinoHeadConfig: Codable, Equatable, Sendable {
    public init() {}

    public var lossWeight = 1.0
    public var headPrototypes = 65536
    public var headBottleneckDim = 256
    public var headLayers = 3
    public var headHiddenDim = 2048
    public var koleoLossWeight = 0.1

    enum CodingKeys: String, CodingKey {
        case lossWeight = "loss_weight"
        case headPrototypes = "head_n_prototypes"
        case headBottleneckDim = "head_bottleneck_dim"
        case headLayers = "head_nlayers"
        case headHiddenDim = "head_hidden_dim"
        case koleoLossWeight = "koleo_loss_weight"
    }
}

/// `ibot.*`: the masked-patch objective and its (optionally separate) head.
public struct IBOTConfig: Codable, Equatable, Sendable {
    public init() {}

    public var lossWeight = 1.0
    public var maskSampleProbability = 0.5
    public var maskRatioMinMax = [0.1, 0.5]
    public var separateHead = false
    public var headPrototypes = 65536
    public var headBottleneckDim = 256
    public var headLayers = 3
    public var headHiddenDim = 2048

    enum CodingKeys: String, CodingKey {
        case lossWeight = "loss_weight"
        case maskSampleProbability = "mask_sample_probability"
        case maskRatioMinMax = "mask_ratio_min_max"
        case separateHead = "separate_head"
        case headPrototypes = "head_n_prototypes"
        case headBottleneckDim = "head_bottleneck_dim"
        case headLayers = "head_nlayers"
        case headHiddenDim = "head_hidden_dim"
    }
}

/// `train.*`: batch, data, centering and logging.
public struct TrainConfig: Codable, Equatable, Sendable {
    public init() {}

    public var batchSizePerRank = 64
    public var datasetPath = "ImageNet:split=TRAIN"
    public var outputDir = "."
    public var saveCheckpointFrequency = 20
    public var seed = 0
    public var workers = 10
    public var officialEpochLength = 1250
    public var cacheDataset = true
    public var centering = Centering.softmax
    /// Iterations between two records in metrics.jsonl (ours).
    public var logEvery = 10
    /// A checkpoint folder, or a training output folder (its newest complete checkpoint), to start from
    /// when the output folder holds no checkpoint yet: everything carries over (student, teacher, heads,
    /// AdamW moments, centers, iteration and so the schedules); position embeddings of another crop size
    /// are resampled. The high-resolution phase starts this way (ours; "" = a fresh start).
    public var resumeFrom = ""
    /// The iteration at which this run stops with a final checkpoint, evaluation and report, the
    /// schedules still spanning all epochs (ours; 0 = the last iteration). A run that hands over to a
    /// high-resolution phase stops here.
    public var stopIteration = 0
    /// Seconds a rank may wait in one collective before the run checks every rank's heartbeat: ranks
    /// that stopped (killed, SIGSTOPped, hung) are named and the job ends (ours; 0 = wait forever).
    public var collectiveTimeout = 1800.0

    enum CodingKeys: String, CodingKey {
        case batchSizePerRank = "batch_size_per_gpu"
        case datasetPath = "dataset_path"
        case outputDir = "output_dir"
        case saveCheckpointFrequency = "saveckp_freq"
        case seed
        case workers = "num_workers"
        case officialEpochLength = "OFFICIAL_EPOCH_LENGTH"
        case cacheDataset = "cache_dataset"
        case centering
        case logEvery = "log_every"
        case resumeFrom = "resume_from"
        case stopIteration = "stop_iteration"
        case collectiveTimeout = "collective_timeout"
    }
}

/// `student.*`: the backbone architecture.
public struct StudentConfig: Codable, Equatable, Sendable {
    public init() {}

    public var arch = Architecture.vitLarge
    public var patchSize = 16
    public var dropPathRate = 0.3
    public var layerScale = 1.0e-05
    public var dropPathUniform = true
    public var pretrainedWeights = ""
    public var ffnLayer = FeedForwardLayer.mlp
    public var blockChunks = 0
    public var qkvBias = true
    public var projBias = true
    public var ffnBias = true
    public var registerTokens = 0
    public var interpolateAntialias = false
    public var interpolateOffset = 0.1
    /// Overrides of the architecture's width, depth and heads for small models (ours; 0 = as `arch`).
    public var embedDim = 0
    public var depth = 0
    public var numHeads = 0

    enum CodingKeys: String, CodingKey {
        case arch
        case patchSize = "patch_size"
        case dropPathRate = "drop_path_rate"
        case layerScale = "layerscale"
        case dropPathUniform = "drop_path_uniform"
        case pretrainedWeights = "pretrained_weights"
        case ffnLayer = "ffn_layer"
        case blockChunks = "block_chunks"
        case qkvBias = "qkv_bias"
        case projBias = "proj_bias"
        case ffnBias = "ffn_bias"
        case registerTokens = "num_register_tokens"
        case interpolateAntialias = "interpolate_antialias"
        case interpolateOffset = "interpolate_offset"
        case embedDim = "embed_dim"
        case depth
        case numHeads = "num_heads"
    }
}

/// `teacher.*`: EMA momentum and teacher temperature schedule.
public struct TeacherConfig: Codable, Equatable, Sendable {
    public init() {}

    public var momentumTeacher = 0.992
    public var finalMomentumTeacher = 1.0
    public var warmupTeacherTemp = 0.04
    public var teacherTemp = 0.07
    public var warmupTeacherTempEpochs = 30

    enum CodingKeys: String, CodingKey {
        case momentumTeacher = "momentum_teacher"
        case finalMomentumTeacher = "final_momentum_teacher"
        case warmupTeacherTemp = "warmup_teacher_temp"
        case teacherTemp = "teacher_temp"
        case warmupTeacherTempEpochs = "warmup_teacher_temp_epochs"
    }
}

/// `optim.*`: AdamW, schedules and the lr scaling rule.
public struct OptimConfig: Codable, Equatable, Sendable {
    public init() {}

    public var epochs = 100
    public var weightDecay = 0.04
    public var weightDecayEnd = 0.4
    public var baseLR = 0.004
    /// Set from `baseLR` by the scaling rule when the run starts (see `resolved(worldSize:)`).
    public var lr = 0.0
    public var warmupEpochs = 10
    public var minLR = 1.0e-06
    public var clipGrad = 3.0
    public var freezeLastLayerEpochs = 1
    public var scalingRule = ScalingRule.sqrtWrt1024
    public var patchEmbedLRMult = 0.2
    public var layerwiseDecay = 0.9
    public var adamwBeta1 = 0.9
    public var adamwBeta2 = 0.999

    enum CodingKeys: String, CodingKey {
        case epochs
        case weightDecay = "weight_decay"
        case weightDecayEnd = "weight_decay_end"
        case baseLR = "base_lr"
        case lr
        case warmupEpochs = "warmup_epochs"
        case minLR = "min_lr"
        case clipGrad = "clip_grad"
        case freezeLastLayerEpochs = "freeze_last_layer_epochs"
        case scalingRule = "scaling_rule"
        case patchEmbedLRMult = "patch_embed_lr_mult"
        case layerwiseDecay = "layerwise_decay"
        case adamwBeta1 = "adamw_beta1"
        case adamwBeta2 = "adamw_beta2"
    }
}

/// `crops.*`: multi-crop sizes and scale ranges.
public struct CropsConfig: Codable, Equatable, Sendable {
    public init() {}

    public var globalCropsScale = [0.32, 1.0]
    public var localCropsNumber = 8
    public var localCropsScale = [0.05, 0.32]
    public var globalCropsSize = 224
    public var localCropsSize = 96

    enum CodingKeys: String, CodingKey {
        case globalCropsScale = "global_crops_scale"
        case localCropsNumber = "local_crops_number"
        case localCropsScale = "local_crops_scale"
        case globalCropsSize = "global_crops_size"
        case localCropsSize = "local_crops_size"
    }
}

/// `evaluation.*`: periodic evaluation.
public struct EvaluationConfig: Codable, Equatable, Sendable {
    public init() {}

    public var evalPeriodIterations = 12500

    enum CodingKeys: String, CodingKey {
        case evalPeriodIterations = "eval_period_iterations"
    }
}

/// `compute_precision.*`: the official FSDP mixed-precision settings per model and module
/// (`student.backbone.mixed_precision.param_dtype` and so on, nested in YAML as in the official file).
/// `param_dtype: bf16` runs that module's GEMMs in bf16 with fp32 accumulation (oneDNN, on CPUs with
/// AVX512-BF16 or AMX; elsewhere fp32 with a log line). The official default is fp16, which CPUs do
/// not compute fast; bf16 takes its place. Master weights, gradient reductions, AdamW and the EMA stay
/// fp32, so `reduce_dtype` and `buffer_dtype` accept only fp32. `compute_precision: bf16` (or fp32)
/// sets every `param_dtype` at once.
public struct ComputePrecisionConfig: Codable, Equatable, Sendable {
    public init() {}

    public var studentBackboneParam = ComputeDtype.fp32
    public var studentBackboneReduce = ComputeDtype.fp32
    public var studentBackboneBuffer = ComputeDtype.fp32
    public var studentDinoHeadParam = ComputeDtype.fp32
    public var studentDinoHeadReduce = ComputeDtype.fp32
    public var studentDinoHeadBuffer = ComputeDtype.fp32
    public var studentIbotHeadParam = ComputeDtype.fp32
    public var studentIbotHeadReduce = ComputeDtype.fp32
    public var studentIbotHeadBuffer = ComputeDtype.fp32
    public var teacherBackboneParam = ComputeDtype.fp32
    public var teacherBackboneReduce = ComputeDtype.fp32
    public var teacherBackboneBuffer = ComputeDtype.fp32
    public var teacherDinoHeadParam = ComputeDtype.fp32
    public var teacherDinoHeadReduce = ComputeDtype.fp32
    public var teacherDinoHeadBuffer = ComputeDtype.fp32
    public var teacherIbotHeadParam = ComputeDtype.fp32
    public var teacherIbotHeadReduce = ComputeDtype.fp32
    public var teacherIbotHeadBuffer = ComputeDtype.fp32

    enum CodingKeys: String, CodingKey, CaseIterable {
        case studentBackboneParam = "student.backbone.mixed_precision.param_dtype"
        case studentBackboneReduce = "student.backbone.mixed_precision.reduce_dtype"
        case studentBackboneBuffer = "student.backbone.mixed_precision.buffer_dtype"
        case studentDinoHeadParam = "student.dino_head.mixed_precision.param_dtype"
        case studentDinoHeadReduce = "student.dino_head.mixed_precision.reduce_dtype"
        case studentDinoHeadBuffer = "student.dino_head.mixed_precision.buffer_dtype"
        case studentIbotHeadParam = "student.ibot_head.mixed_precision.param_dtype"
        case studentIbotHeadReduce = "student.ibot_head.mixed_precision.reduce_dtype"
        case studentIbotHeadBuffer = "student.ibot_head.mixed_precision.buffer_dtype"
        case teacherBackboneParam = "teacher.backbone.mixed_precision.param_dtype"
        case teacherBackboneReduce = "teacher.backbone.mixed_precision.reduce_dtype"
        case teacherBackboneBuffer = "teacher.backbone.mixed_precision.buffer_dtype"
        case teacherDinoHeadParam = "teacher.dino_head.mixed_precision.param_dtype"
        case teacherDinoHeadReduce = "teacher.dino_head.mixed_precision.reduce_dtype"
        case teacherDinoHeadBuffer = "teacher.dino_head.mixed_precision.buffer_dtype"
        case teacherIbotHeadParam = "teacher.ibot_head.mixed_precision.param_dtype"
        case teacherIbotHeadReduce = "teacher.ibot_head.mixed_precision.reduce_dtype"
        case teacherIbotHeadBuffer = "teacher.ibot_head.mixed_precision.buffer_dtype"
    }

    /// Sets every module's `param_dtype`.
    public mutating func setAllParameters(_ dtype: ComputeDtype) {
        studentBackboneParam = dtype
        studentDinoHeadParam = dtype
        studentIbotHeadParam = dtype
        teacherBackboneParam = dtype
        teacherDinoHeadParam = dtype
        teacherIbotHeadParam = dtype
    }
}

/// `fsdp.*` (ours): how parameters, gradients and optimizer state are sharded over ranks.
public struct FSDPConfig: Codable, Equatable, Sendable {
    public init() {}

    public var shardingStrategy = ShardingStrategy.fullShard
    /// Ranks per sharding group for HYBRID_SHARD; 0 means the ranks of one node.
    public var hybridGroupSize = 0
    public var allgatherDtype = AllGatherPrecision.fp32

    enum CodingKeys: String, CodingKey {
        case shardingStrategy = "sharding_strategy"
        case hybridGroupSize = "hybrid_group_size"
        case allgatherDtype = "allgather_dtype"
    }
}

/// `activation_checkpoint.*` (ours, torchtitan's section and names): whether the student backbone keeps
/// every block's intermediates for backward or only each block's input, recomputing the block's
/// forward in backward (about one more student forward per step; the results are bitwise the same).
public struct ActivationCheckpointConfig: Codable, Equatable, Sendable {
    public init() {}

    public var mode = ActivationCheckpointMode.auto

    enum CodingKeys: String, CodingKey {
        case mode
    }
}

/// `distillation.*` (ours; DINOv3's section and key names): the paper's knowledge distillation
/// (DINOv2 section 5). A frozen teacher, read from `checkpoint_path`, gives the targets; the student
/// (any architecture, its heads sized to the teacher's prototypes) learns with the same objective,
/// without masking or stochastic depth, the iBOT loss over every patch of the two global crops; the
/// `teacher.*` momentum keeps a spare EMA of the student, the model `eval`, `embed` and `export` read.
public struct DistillationConfig: Codable, Equatable, Sendable {
    public init() {}

    public var enabled = false
    /// The teacher: a checkpoint folder of this project, a run folder (its newest complete checkpoint,
    /// fixed in the resolved config when the run starts), or a backbone file from `checkpoint export`
    /// together with `heads_path`.
    public var checkpointPath = ""
    /// With an exported backbone: the teacher's heads, a file from `checkpoint export --heads`.
    public var headsPath = ""

    enum CodingKeys: String, CodingKey {
        case enabled
        case checkpointPath = "checkpoint_path"
        case headsPath = "heads_path"
    }
}

/// `copy_detection.*` (ours): SSCD's contrastive loss (Pizzi et al. 2022) added to the objective, for a
/// model whose features find copies (the descriptor curation's copy rule reads, DINOv2 section 3). On
/// the student's global CLS tokens: the two global crops of an image are a positive pair, every other
/// crop of every rank a negative; `temperature` scales the cosine similarities. Off at weight 0.
public struct CopyDetectionConfig: Codable, Equatable, Sendable {
    public init() {}

    public var lossWeight = 0.0
    public var temperature = 0.05

    enum CodingKeys: String, CodingKey {
        case lossWeight = "loss_weight"
        case temperature
    }
}

/// `augmentation.*` (ours): the colour side of the crops' augmentations; the defaults are the official
/// pipeline's. A copy-detection model (Configs/copy-detection.yaml) needs weaker colour changes than
/// self-distillation: what tells one image from another of the same kind may be its colours.
public struct AugmentationConfig: Codable, Equatable, Sendable {
    public init() {}

    /// The colour jitter's ranges (applied with probability 0.8): factors in [1 - x, 1 + x], hue in [-x, x].
    public var brightness = 0.4
    public var contrast = 0.4
    public var saturation = 0.2
    public var hue = 0.1
    public var grayscaleProbability = 0.2
    /// Of the second global crop, as the official pipeline.
    public var solarizeProbability = 0.2

    enum CodingKeys: String, CodingKey {
        case brightness, contrast, saturation, hue
        case grayscaleProbability = "grayscale_probability"
        case solarizeProbability = "solarize_probability"
    }
}

/// `checkpointing.*` (ours): how often to save and what to keep.
public struct CheckpointingConfig: Codable, Equatable, Sendable {
    public init() {}

    public var period = 3750
    public var maxToKeep = 3
    /// Keep every M-th save for good (0 = none).
    public var keepEvery = 0

    enum CodingKeys: String, CodingKey {
        case period
        case maxToKeep = "max_to_keep"
        case keepEvery = "keep_every"
    }
}
