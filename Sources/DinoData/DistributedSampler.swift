// The order images are seen in: an infinite stream of epochs, each a permutation of the dataset
// drawn from the counter-based stream keyed by (seed, epoch). Step s of a run with global batch G
// takes stream positions [s G, (s + 1) G); rank r of W takes its slice [r G / W, (r + 1) G / W) of
// them. The global batch of a step is therefore the same for any rank count, every image appears
// once per epoch (the last batch of an epoch runs into the next one), and the position is just
// the step number: a resumed run gets exactly the next batch.

import DinoCore

/// Deterministic, resumable assignment of dataset indices to steps and ranks.
public final class DistributedSampler {
    public let datasetSize: Int
    public let globalBatch: Int
    public let seed: UInt64
    private var cachedEpoch = -1
    private var permutation: [Int] = []

    public init(datasetSize: Int, globalBatch: Int, seed: UInt64) {
        precondition(datasetSize > 0 && globalBatch > 0, "empty dataset or batch")
        self.datasetSize = datasetSize
        self.globalBatch = globalBatch
        self.seed = seed
    }

    /// The dataset index at stream position `position`.
    public func index(at position: Int) -> Int {
        let epoch = position / datasetSize
        if epoch != cachedEpoch {
            let stream = RandomStream(seed: seed, purpose: .sampler, UInt64(epoch))
            permutation = (0..<datasetSize).sorted { stream.bits(UInt64($0)) < stream.bits(UInt64($1)) }
            cachedEpoch = epoch
        }
        return permutation[position % datasetSize]
    }

    /// The epoch that stream position `position` belongs to.
    public func epoch(at position: Int) -> Int { position / datasetSize }

    /// The dataset indices rank `rank` of `worldSize` loads at `step`, with their stream positions.
    public func batch(step: Int, rank: Int, worldSize: Int) -> [(position: Int, index: Int)] {
        precondition(globalBatch % worldSize == 0, "global batch \(globalBatch) is not divisible by \(worldSize) ranks")
        let perRank = globalBatch / worldSize
        let first = step * globalBatch + rank * perRank
        return (first..<(first + perRank)).map { ($0, index(at: $0)) }
    }
}
