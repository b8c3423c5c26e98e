// The configuration keys whose value is one of a fixed set of names, as typed enums. Each raw value
// is the official DINOv2 spelling (or, for our own sections, the documented one), so YAML files and
// `key=value` overrides keep their strings while the code switches over cases. A name outside the
// set is reported by `ConfigLoader` with its dotted key and the accepted values.

/// A configuration value chosen by name from a closed set.
public protocol ConfigChoice: RawRepresentable, CaseIterable, Codable, Sendable, CustomStringConvertible
where RawValue == String {}

extension ConfigChoice {
    public var description: String { rawValue }

    /// The accepted names, in declaration order.
    public static var names: [String] { allCases.map(\.rawValue) }

    /// Decodes the name, or fails naming the key (from the coding path) and the accepted names.
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(rawValue: text) else {
            let path = decoder.codingPath.map(\.stringValue).joined(separator: ".")
            throw ConfigError.invalid([choiceProblem(path: path, value: text, names: Self.names)])
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// The message for a name outside a choice's set.
func choiceProblem(path: String, value: String, names: [String]) -> String {
    "\(path): '\(value)' is not one of \(names.joined(separator: ", "))"
}

/// `student.arch`: the official backbone sizes (dinov2/models/vision_transformer.py).
public enum Architecture: String, ConfigChoice {
    case vitSmall = "vit_small"
    case vitBase = "vit_base"
    case vitLarge = "vit_large"
    case vitGiant2 = "vit_giant2"
}

/// `student.ffn_layer`: the block's feed-forward network.
public enum FeedForwardLayer: String, ConfigChoice {
    case mlp
    case swiglu
    case swigluFused = "swiglufused"
    case identity
}

/// `train.centering`: how the teacher's outputs become targets.
public enum Centering: String, ConfigChoice {
    /// Softmax after subtracting an EMA center (the official default's spelling).
    case softmax = "centering"
    case sinkhornKnopp = "sinkhorn_knopp"
}

/// `optim.scaling_rule`: how `optim.lr` follows from `optim.base_lr` and the global batch.
public enum ScalingRule: String, ConfigChoice {
    /// base_lr x sqrt(global batch / 1024).
    case sqrtWrt1024 = "sqrt_wrt_1024"
}

/// `fsdp.sharding_strategy` (PyTorch FSDP's names): what each rank keeps of a unit between uses.
public enum ShardingStrategy: String, ConfigChoice {
    /// Parameters, gradients and optimizer state sharded; parameters gathered per use.
    case fullShard = "FULL_SHARD"
    /// Gradients and optimizer state sharded; parameters kept whole after the forward gather.
    case shardGradOp = "SHARD_GRAD_OP"
    /// Everything replicated; gradients all-reduced (DDP).
    case noShard = "NO_SHARD"
    /// FULL_SHARD inside groups of `fsdp.hybrid_group_size` ranks, replicated across groups.
    case hybridShard = "HYBRID_SHARD"
}

/// `fsdp.allgather_dtype`: the precision of parameter all-gathers.
public enum AllGatherPrecision: String, ConfigChoice {
    case fp32
    case bf16
}

/// `activation_checkpoint.mode`: which student blocks recompute their forward in backward.
public enum ActivationCheckpointMode: String, ConfigChoice {
    /// Every block keeps its intermediates (fastest, most memory).
    case none
    /// Every block keeps only its input and recomputes the rest in backward.
    case full
    /// `full` for models of width 1024 and more (ViT-L, ViT-g), where activations dominate memory,
    /// else `none`.
    case auto

    /// Whether a student of width `embedDim` checkpoints its blocks.
    public func isEnabled(embedDim: Int) -> Bool {
        switch self {
        case .none: return false
        case .full: return true
        case .auto: return embedDim >= 1024
        }
    }
}

/// `compute_precision.*.mixed_precision.*_dtype`: the precision a module computes in.
public enum ComputeDtype: String, ConfigChoice {
    case fp32
    case bf16
}

extension TrainingConfig {
    /// Every key whose value is a `ConfigChoice`, with its accepted names (checked before decoding,
    /// so a wrong name is listed with the other problems of the same config).
    static let choiceKeys: [(path: String, names: [String])] =
        [
            ("train.centering", Centering.names),
            ("student.arch", Architecture.names),
            ("student.ffn_layer", FeedForwardLayer.names),
            ("optim.scaling_rule", ScalingRule.names),
            ("fsdp.sharding_strategy", ShardingStrategy.names),
            ("fsdp.allgather_dtype", AllGatherPrecision.names),
            ("activation_checkpoint.mode", ActivationCheckpointMode.names),
        ] + ComputePrecisionConfig.CodingKeys.allCases.map { ("compute_precision." + $0.rawValue, ComputeDtype.names) }
}
