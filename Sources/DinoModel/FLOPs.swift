// Model FLOPs of the backbone and heads (multiply-add = 2 FLOPs), counted from the architecture:
//   linear layers per token and block: qkv 2*3D^2, proj 2*D^2, FFN 2*2*D*h (MLP) or 2*3*D*h (SwiGLU)
//   attention per crop and block: 4 L^2 D (Q K^T and P V over all heads)
//   patch embedding per patch: 2 * 3 P^2 * D
//   forward+backward: 3x linear layers (dInput and dWeight), 3.5x attention (backward recomputes
//   the scores: 2.5x), 2x patch embedding (no input gradient)
//   head per row: 2 * (sum of MLP in*out + bottleneck * K); forward+backward 3x.
// LayerNorm, activations, softmax and the losses are not counted (the usual MFU convention).

extension ViTArchitecture {
    private var linearFLOPsPerToken: Double {
        let d = Double(embedDim), h = Double(feedForward.hidden)
        let ffn: Double
        switch feedForward {
        case .mlp: ffn = 2 * d * h
        case .swiglu: ffn = 3 * d * h
        }
        return 2 * (4 * d * d + ffn) * Double(depth)
    }

    /// Forward FLOPs of `count` crops of `size` pixels: (linear, attention, patch embedding).
    public func forwardFLOPs(crops count: Int, size: Int) -> (linear: Double, attention: Double, patch: Double) {
        let l = Double(tokens(cropSize: size)), n = Double(count)
        let linear = linearFLOPsPerToken * l * n
        let attention = 4 * l * l * Double(embedDim) * Double(depth) * n
        let patch = 2 * Double(patches(cropSize: size)) * n * Double(3 * patchSize * patchSize) * Double(embedDim)
        return (linear, attention, patch)
    }

    /// Forward+backward FLOPs of `count` crops of `size` pixels.
    public func trainingFLOPs(crops count: Int, size: Int) -> Double {
        let f = forwardFLOPs(crops: count, size: size)
        return 3 * f.linear + 3.5 * f.attention + 2 * f.patch
    }
}

extension HeadArchitecture {
    /// Forward FLOPs of one row.
    public var forwardFLOPsPerRow: Double {
        2 * (mlpShapes.reduce(0.0) { $0 + Double($1.inF * $1.outF) } + Double(bottleneck * prototypes))
    }
}
