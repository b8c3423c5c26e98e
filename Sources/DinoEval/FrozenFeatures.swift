// What the evaluations read from a model: the final-norm tokens of a frozen backbone (in training,
// the teacher) for a batch of normalised images [count, 3, size, size]: CLS [count, D] and, when
// asked, patch tokens [count, P, D]. The training module's SelfDistillation conforms; the
// evaluations (k-NN, linear probe, PCA pictures, the embedding writer) see nothing else of it.

/// A frozen feature extractor over images at one input size.
public protocol FrozenFeatures: AnyObject {
    /// Channels of a token (D).
    var featureDimension: Int { get }
    /// Side of the square input the features are computed at (the global crop size in training).
    var inputSize: Int { get }
    /// Patch tokens per image at `inputSize` (P).
    var patchesPerImage: Int { get }
    /// Side of a patch in pixels: input sizes are whole multiples of it.
    var patchSize: Int { get }
    /// Worker threads the model computes with; the evaluations prepare images on as many.
    var workerThreads: Int { get }
    /// CLS [count, D] and (when `patches`) patch tokens [count, P, D] of `images`; collective when the
    /// backbone is sharded over ranks (every rank calls it the same number of times).
    func tokens(
        images: UnsafePointer<Float>, count: Int, size: Int, patches: Bool
    ) throws
        -> (cls: [Float], patches: [Float])
}

extension FrozenFeatures {
    /// The input side for `scale` times `inputSize`, rounded to whole patches (at least one).
    public func inputSize(scale: Double) -> Int {
        max(1, Int((scale * Double(inputSize) / Double(patchSize)).rounded())) * patchSize
    }

    /// Patch tokens per image at input side `size`.
    public func patchesPerImage(size: Int) -> Int { (size / patchSize) * (size / patchSize) }
}

/// An evaluation that cannot run on the data it was given, with what to do.
public enum EvaluationError: Error, CustomStringConvertible, Equatable {
    case data(String)

    public var description: String {
        switch self {
        case .data(let text): return text
        }
    }
}
