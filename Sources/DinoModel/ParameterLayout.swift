// Where every backbone parameter lives: one flat buffer per unit (the patch embedding with the
// cls/pos/register/mask tokens; each block; the final norm), each tensor a contiguous range of its
// unit, in the official state-dict order, under its official name and PyTorch shape. The sharder and
// the checkpoints work from this table. Units are single blocks even when student.block_chunks > 0
// (which then only names the tensors blocks.<chunk>.<block>.*, as the official state dict): the
// sharder gathers one unit at a time, so per-block units (torchtitan's fully_shard per transformer
// block) bound the gathered memory by one block instead of a chunk (ViT-L/14's chunks of 6 blocks
// are 300 MB each); checkpoints map tensors by name, so either layout loads into the other.

/// How a parameter is initialised (vision_transformer.py init_weights and layer defaults).
public enum ParameterInit: Sendable, Equatable {
    case truncatedNormal(std: Double)
    case normal(std: Double)
    case uniform(bound: Double)
    case constant(Double)
}

/// One named tensor.
public struct ParameterEntry: Sendable, Equatable {
    /// Official state-dict name, e.g. `blocks.0.attn.qkv.weight`.
    public let name: String
    /// PyTorch shape, e.g. [1152, 384].
    public let shape: [Int]
    /// Index of the unit that holds it.
    public let unit: Int
    /// First element inside the unit's flat buffer.
    public let offset: Int
    public let initialization: ParameterInit
    /// The tensor this entry is a piece of (elements [tensorOffset, tensorOffset + count) of it,
    /// row-major), under its official name and shape; a whole tensor is its own piece.
    public let tensor: String
    public let tensorShape: [Int]
    public let tensorOffset: Int
    public var count: Int { shape.reduce(1, *) }
    public var isWholeTensor: Bool { tensorOffset == 0 && shape.reduce(1, *) == tensorShape.reduce(1, *) }

    public init(
        name: String, shape: [Int], unit: Int, offset: Int, initialization: ParameterInit, tensor: String? = nil,
        tensorShape: [Int]? = nil, tensorOffset: Int = 0
    ) {
        self.name = name
        self.shape = shape
        self.unit = unit
        self.offset = offset
        self.initialization = initialization
        self.tensor = tensor ?? name
        self.tensorShape = tensorShape ?? shape
        self.tensorOffset = tensorOffset
    }
    /// Weight decay applies to it: dinov2's param_groups exempt names ending in ".bias" or
    /// containing "norm" or "gamma"; tokens, pos_embed and the heads' last layer do decay.
    public var decays: Bool {
        !(name.hasSuffix(".bias") || name.contains("norm") || name.contains("gamma"))
    }
}

/// A flat buffer holding a contiguous group of tensors.
public struct ParameterUnit: Sendable, Equatable {
    public let name: String
    public let count: Int
    /// The blocks computed with this unit's parameters (empty for embed and norm).
    public let blocks: Range<Int>
}

/// Named tensors grouped into units: the table a store, the sharder and checkpoints work from.
public struct TensorTable: Sendable {
    public internal(set) var entries: [ParameterEntry] = []
    public internal(set) var units: [ParameterUnit] = []
    var index: [String: Int] = [:]

    public init() {}

    public var parameterCount: Int { entries.reduce(0) { $0 + $1.count } }

    /// The entry named `name`, if any.
    public func entry(named name: String) -> ParameterEntry? {
        index[name].map { entries[$0] }
    }

    /// The index of the first piece of entry `i`'s tensor: the key of the tensor's initialisation
    /// stream, so a tensor draws the same values however it is cut into pieces.
    public func firstPieceIndex(of i: Int) -> Int { firstPiece[entries[i].tensor] ?? i }
    private var firstPiece: [String: Int] = [:]

    /// Appends a tensor at `offset` of unit `unit`.
    mutating func append(_ entry: ParameterEntry) {
        index[entry.name] = entries.count
        if firstPiece[entry.tensor] == nil { firstPiece[entry.tensor] = entries.count }
        entries.append(entry)
    }
}

/// The parameter table of one backbone.
public struct ParameterLayout: Sendable {
    public let architecture: ViTArchitecture
    public private(set) var table = TensorTable()
    public var entries: [ParameterEntry] { table.entries }
    public var units: [ParameterUnit] { table.units }
    /// Offsets of each block's tensors inside its unit.
    public private(set) var blocks: [BlockOffsets] = []
    public private(set) var embed = EmbedOffsets()
    public private(set) var norm = NormOffsets()

    /// Unit index of the embedding, of block `b`, of the final norm.
    public var embedUnit: Int { 0 }
    public func unit(ofBlock block: Int) -> Int { blocks[block].unit }
    public var normUnit: Int { units.count - 1 }
    public var parameterCount: Int { table.parameterCount }

    public init(_ a: ViTArchitecture) {
        architecture = a
        let d = a.embedDim
        // Unit 0: tokens and patch embedding.
        var cursor = 0
        func add(_ name: String, _ shape: [Int], _ initialization: ParameterInit) -> Int {
            let entry = ParameterEntry(
                name: name, shape: shape, unit: table.units.count, offset: cursor,
                initialization: initialization)
            table.append(entry)
            cursor += entry.count
            return entry.offset
        }
        embed.clsToken = add("cls_token", [1, 1, d], .normal(std: 1e-6))
        embed.positionEmbedding = add("pos_embed", [1, 1 + a.gridSize * a.gridSize, d], .truncatedNormal(std: 0.02))
        if a.registers > 0 { embed.registerTokens = add("register_tokens", [1, a.registers, d], .normal(std: 1e-6)) }
        embed.maskToken = add("mask_token", [1, d], .constant(0))
        let fanIn = 3 * a.patchSize * a.patchSize
        let bound = 1 / Double(fanIn).squareRoot()
        embed.patchWeight = add("patch_embed.proj.weight", [d, 3, a.patchSize, a.patchSize], .uniform(bound: bound))
        embed.patchBias = add("patch_embed.proj.bias", [d], .uniform(bound: bound))
        table.units.append(ParameterUnit(name: "embed", count: cursor, blocks: 0..<0))

        // Blocks, one unit each.
        let perChunk = a.blockChunks > 0 ? a.depth / a.blockChunks : 1
        let linear = ParameterInit.truncatedNormal(std: 0.02), zero = ParameterInit.constant(0)
        for b in 0..<a.depth {
            cursor = 0
            let name = a.blockChunks > 0 ? "blocks.\(b / perChunk).\(b)" : "blocks.\(b)"
            let prefix = name + "."
            var o = BlockOffsets(unit: table.units.count)
            o.norm1Weight = add(prefix + "norm1.weight", [d], .constant(1))
            o.norm1Bias = add(prefix + "norm1.bias", [d], .constant(0))
            o.qkvWeight = add(prefix + "attn.qkv.weight", [3 * d, d], linear)
            if a.qkvBias { o.qkvBias = add(prefix + "attn.qkv.bias", [3 * d], zero) }
            o.projWeight = add(prefix + "attn.proj.weight", [d, d], linear)
            if a.projBias { o.projBias = add(prefix + "attn.proj.bias", [d], zero) }
            o.layerScale1 = add(prefix + "ls1.gamma", [d], .constant(a.layerScaleInit))
            o.norm2Weight = add(prefix + "norm2.weight", [d], .constant(1))
            o.norm2Bias = add(prefix + "norm2.bias", [d], .constant(0))
            let h = a.feedForward.hidden
            switch a.feedForward {
            case .mlp:
                o.fc1Weight = add(prefix + "mlp.fc1.weight", [h, d], linear)
                if a.ffnBias { o.fc1Bias = add(prefix + "mlp.fc1.bias", [h], zero) }
                o.fc2Weight = add(prefix + "mlp.fc2.weight", [d, h], linear)
                if a.ffnBias { o.fc2Bias = add(prefix + "mlp.fc2.bias", [d], zero) }
            case .swiglu:
                o.fc1Weight = add(prefix + "mlp.w12.weight", [2 * h, d], linear)
                if a.ffnBias { o.fc1Bias = add(prefix + "mlp.w12.bias", [2 * h], zero) }
                o.fc2Weight = add(prefix + "mlp.w3.weight", [d, h], linear)
                if a.ffnBias { o.fc2Bias = add(prefix + "mlp.w3.bias", [d], zero) }
            }
            o.layerScale2 = add(prefix + "ls2.gamma", [d], .constant(a.layerScaleInit))
            blocks.append(o)
            table.units.append(ParameterUnit(name: name, count: cursor, blocks: b..<(b + 1)))
        }

        // The final norm.
        cursor = 0
        norm.weight = add("norm.weight", [d], .constant(1))
        norm.bias = add("norm.bias", [d], .constant(0))
        table.units.append(ParameterUnit(name: "norm", count: cursor, blocks: 0..<0))
    }

    /// The entry named `name`, if any.
    public func entry(named name: String) -> ParameterEntry? { table.entry(named: name) }
}

/// Offsets of the embedding tensors in unit 0 (register tokens: -1 when there are none).
public struct EmbedOffsets: Sendable, Equatable {
    public var clsToken = 0, positionEmbedding = 0, registerTokens = -1, maskToken = 0, patchWeight = 0, patchBias = 0
}

/// Offsets of one block's tensors inside its unit (optional biases: -1 when absent).
public struct BlockOffsets: Sendable, Equatable {
    public var unit: Int
    public var norm1Weight = 0, norm1Bias = 0, qkvWeight = 0, qkvBias = -1, projWeight = 0, projBias = -1
    public var layerScale1 = 0, norm2Weight = 0, norm2Bias = 0, fc1Weight = 0, fc1Bias = -1, fc2Weight = 0
    public var fc2Bias = -1, layerScale2 = 0

    init(unit: Int) { self.unit = unit }
}

/// Offsets of the final norm in the last unit.
public struct NormOffsets: Sendable, Equatable {
    public var weight = 0, bias = 0
}
