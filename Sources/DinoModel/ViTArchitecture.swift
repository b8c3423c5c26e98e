// The shape of a DINOv2 ViT backbone, from the official factory names (vision_transformer.py
// vit_small .. vit_giant2) and the student config keys.

import DinoConfig

/// The feed-forward block of every transformer block.
public enum FeedForward: Sendable, Equatable {
    /// fc1 (D -> hidden), exact GELU, fc2 (hidden -> D).
    case mlp(hidden: Int)
    /// w12 (D -> 2 hidden), SiLU(first half) * second half, w3 (hidden -> D).
    case swiglu(hidden: Int)

    public var hidden: Int {
        switch self {
        case .mlp(let hidden), .swiglu(let hidden): return hidden
        }
    }

    /// Outputs of the first layer: fc1's hidden, or w12's two halves.
    public var firstLayerWidth: Int {
        switch self {
        case .mlp(let hidden): return hidden
        case .swiglu(let hidden): return 2 * hidden
        }
    }
}

/// Everything that fixes a backbone's parameters and computation.
public struct ViTArchitecture: Sendable, Equatable {
    public var embedDim: Int
    public var depth: Int
    public var heads: Int
    public var patchSize: Int
    public var feedForward: FeedForward
    public var registers: Int
    /// Crop size the position embedding is built for (its grid is imageSize / patchSize squared).
    public var imageSize: Int
    public var qkvBias = true
    public var projBias = true
    public var ffnBias = true
    public var layerScaleInit: Double = 1e-5
    public var interpolateAntialias = false
    public var interpolateOffset = 0.1
    /// Chunks the official state dict groups blocks into (names `blocks.c.i.*`; 0: `blocks.i.*`). Units
    /// stay one block each (ParameterLayout).
    public var blockChunks = 0

    public var headDim: Int { embedDim / heads }
    /// Side of the position-embedding grid.
    public var gridSize: Int { imageSize / patchSize }
    /// Patch tokens of a crop of `size` pixels.
    public func patches(cropSize: Int) -> Int { (cropSize / patchSize) * (cropSize / patchSize) }
    /// Tokens of a crop: CLS, registers, patches.
    public func tokens(cropSize: Int) -> Int { 1 + registers + patches(cropSize: cropSize) }

    public init(
        embedDim: Int, depth: Int, heads: Int, patchSize: Int, feedForward: FeedForward, registers: Int = 0,
        imageSize: Int = 224
    ) {
        precondition(embedDim % heads == 0, "embed dim \(embedDim) not divisible by \(heads) heads")
        self.embedDim = embedDim
        self.depth = depth
        self.heads = heads
        self.patchSize = patchSize
        self.feedForward = feedForward
        self.registers = registers
        self.imageSize = imageSize
    }

    /// Width, depth and heads of the official factories.
    public static func factory(_ arch: Architecture) -> (embedDim: Int, depth: Int, heads: Int) {
        switch arch {
        case .vitSmall: return (384, 12, 6)
        case .vitBase: return (768, 12, 12)
        case .vitLarge: return (1024, 24, 16)
        case .vitGiant2: return (1536, 40, 24)
        }
    }

    /// The backbone a student config describes, with the position embedding built for `imageSize`
    /// (the global crop size in training, 518 for the released hub models).
    public init(student: StudentConfig, imageSize: Int) throws {
        let base = Self.factory(student.arch)
        let embedDim = student.embedDim > 0 ? student.embedDim : base.embedDim
        let depth = student.depth > 0 ? student.depth : base.depth
        let heads = student.numHeads > 0 ? student.numHeads : base.heads
        guard embedDim % heads == 0 else { throw ArchitectureError.indivisibleHeads(embedDim: embedDim, heads: heads) }
        let feedForward: FeedForward
        switch student.ffnLayer {
        case .mlp: feedForward = .mlp(hidden: embedDim * 4)
        case .swiglu, .swigluFused: feedForward = .swiglu(hidden: SwiGLUWidth.hidden(embedDim: embedDim))
        case .identity: throw ArchitectureError.unsupportedFeedForward(student.ffnLayer.rawValue)
        }
        self.init(
            embedDim: embedDim, depth: depth, heads: heads, patchSize: student.patchSize,
            feedForward: feedForward, registers: student.registerTokens, imageSize: imageSize)
        qkvBias = student.qkvBias
        projBias = student.projBias
        ffnBias = student.ffnBias
        layerScaleInit = student.layerScale
        interpolateAntialias = student.interpolateAntialias
        interpolateOffset = student.interpolateOffset
        blockChunks = student.blockChunks
        if blockChunks > 0 && depth % blockChunks != 0 {
            throw ArchitectureError.indivisibleChunks(depth: depth, chunks: blockChunks)
        }
    }
}

/// The official SwiGLU hidden width (layers/swiglu_ffn.py).
enum SwiGLUWidth {
    static func hidden(embedDim: Int) -> Int {
        let h0 = embedDim * 4
        return (Int(Double(h0) * 2.0 / 3.0) + 7) / 8 * 8
    }
}

/// Configurations that do not describe a backbone we can build.
public enum ArchitectureError: Error, CustomStringConvertible, Equatable {
    case unsupportedFeedForward(String)
    case indivisibleHeads(embedDim: Int, heads: Int)
    case indivisibleChunks(depth: Int, chunks: Int)

    public var description: String {
        switch self {
        case .unsupportedFeedForward(let name):
            return "student.ffn_layer: '\(name)' is not supported (mlp, swiglu, swiglufused)"
        case .indivisibleHeads(let embedDim, let heads):
            return "student.embed_dim \(embedDim) is not divisible by student.num_heads \(heads)"
        case .indivisibleChunks(let depth, let chunks):
            return "student.block_chunks \(chunks) does not divide the depth \(depth)"
        }
    }
}
