// The k-NN evaluation of dinov2/eval/knn.py on the teacher's features: every image through the
// evaluation transform (the central 224/256 of the shorter side, resized to the global crop size,
// normalised), the teacher's normalised CLS token, L2-normalised; each validation image votes with
// its k most similar training images, weight exp(similarity / 0.07) per neighbour, summed per class.
// Features are computed across ranks (each rank its slice, then all-gathered).

import DinoCore
import DinoData
import Foundation

/// k-NN classification accuracy of frozen features.
public enum KNN {
    /// Top-1 and top-5 accuracy (percent) of weighted k-NN with `k` neighbours.
    public static func accuracy(
        train: [Float], trainLabels: [Int], val: [Float], valLabels: [Int], dimension d: Int,
        k: Int, temperature: Double = 0.07
    ) -> (top1: Double, top5: Double) {
        let classes = (trainLabels.max() ?? 0) + 1
        let n = trainLabels.count
        var top1 = 0, top5 = 0
        for v in 0..<valLabels.count {
            var similarities = [(Double, Int)]()
            similarities.reserveCapacity(n)
            for t in 0..<n {
                var dot: Float = 0
                for c in 0..<d { dot += val[v * d + c] * train[t * d + c] }
                similarities.append((Double(dot), trainLabels[t]))
            }
            similarities.sort { $0.0 > $1.0 }
            var votes = [Double](repeating: 0, count: classes)
            for (similarity, label) in similarities.prefix(k) { votes[label] += exp(similarity / temperature) }
            let ranked = votes.indices.sorted { votes[$0] > votes[$1] || (votes[$0] == votes[$1] && $0 < $1) }
            if ranked.first == valLabels[v] { top1 += 1 }
            if ranked.prefix(5).contains(valLabels[v]) { top5 += 1 }
        }
        let count = Double(max(1, valLabels.count))
        return (100 * Double(top1) / count, 100 * Double(top5) / count)
    }

    /// The evaluation view of `image`: the central 224/256 of its shorter side, resized to `size`.
    public static func evaluationView(_ image: RGBImage, size: Int) -> RGBImage {
        let side = Int((Double(min(image.width, image.height)) * 224 / 256).rounded())
        let box = CropBox(top: (image.height - side) / 2, left: (image.width - side) / 2, height: side, width: side)
        return Augment.resizedCrop(image, box: box, size: size)
    }

    /// L2-normalised teacher CLS features of every image of `dataset` (all ranks get all of them), in
    /// dataset order; with several `scales`, the multi-scale descriptor (`TeacherEmbedding.rounds`).
    public static func features(
        of dataset: ImageDataset, model: some FrozenFeatures, communicator comm: any Communicator,
        batch: Int = 16, scales: [Double] = [1]
    ) throws -> [Float] {
        let d = model.featureDimension
        var all = [Float](repeating: 0, count: dataset.count * d)
        try TeacherEmbedding.rounds(
            of: dataset, model: model, communicator: comm, batch: batch, patches: false, scales: scales
        ) { round in
            round.forEachImage { index, row in
                for c in 0..<d { all[index * d + c] = round.cls[row * d + c] }
            }
        }
        UnitRows.normalize(&all, dimension: d)
        return all
    }

    /// k-NN top-1 and top-5 (percent) of `model`'s teacher, trained on `train`, measured on `val`.
    public static func evaluate(
        model: some FrozenFeatures, train: ImageDataset, val: ImageDataset, k: Int = 20,
        communicator comm: any Communicator
    ) throws -> (top1: Double, top5: Double) {
        let result = try evaluate(model: model, train: train, val: val, ks: [k], communicator: comm)[0]
        return (result.top1, result.top5)
    }

    /// k-NN accuracies for every `k` in `ks`, from one pass of feature extraction.
    public static func evaluate(
        model: some FrozenFeatures, train: ImageDataset, val: ImageDataset, ks: [Int],
        communicator comm: any Communicator
    ) throws -> [(k: Int, top1: Double, top5: Double)] {
        guard train.classes == val.classes else {
            throw EvaluationError.data(
                "the classes of the validation set (\(val.classes.count)) differ from the "
                    + "training set's (\(train.classes.count)); k-NN needs the same class folders in both")
        }
        guard let unlabelled = (train.samples + val.samples).first(where: { $0.label < 0 }) else {
            return try labelledEvaluation(model: model, train: train, val: val, ks: ks, communicator: comm)
        }
        throw EvaluationError.data("\(unlabelled.path) has no label; k-NN needs ImageFolders or list files with labels")
    }

    private static func labelledEvaluation(
        model: some FrozenFeatures, train: ImageDataset, val: ImageDataset, ks: [Int],
        communicator comm: any Communicator
    ) throws -> [(k: Int, top1: Double, top5: Double)] {
        let d = model.featureDimension
        let trainFeatures = try features(of: train, model: model, communicator: comm)
        let valFeatures = try features(of: val, model: model, communicator: comm)
        return ks.map { k in
            let result = accuracy(
                train: trainFeatures, trainLabels: train.samples.map(\.label), val: valFeatures,
                valLabels: val.samples.map(\.label), dimension: d, k: min(k, train.count))
            return (k, result.top1, result.top5)
        }
    }
}

/// The teacher run over a whole dataset, spread over the ranks.
public enum TeacherEmbedding {
    /// One round of `rounds`: the dataset indices each rank covered (rank order) and their tokens,
    /// concatenated in the same order: CLS [images, D], patches [images, P, D] (empty unless asked).
    public struct Round {
        public let ranges: [Range<Int>]
        public let cls: [Float]
        public let patches: [Float]
        /// Dataset indices of this round's images that could not be read (only when skipping them; their
        /// tokens are zeros).
        public let unreadable: [Int]

        /// Calls `body(datasetIndex, row)` for every image of the round; `row` indexes `cls` / `patches`.
        public func forEachImage(_ body: (_ index: Int, _ row: Int) throws -> Void) rethrows {
            var row = 0
            for range in ranges {
                for index in range {
                    try body(index, row)
                    row += 1
                }
            }
        }
    }

    /// Runs the teacher over every image of `dataset` through the evaluation view, each rank a contiguous
    /// slice in batches of `batch`; after each round every rank gets all ranks' tokens in `body`.
    /// Every rank runs the same number of rounds (the teacher's gathers are collective). An image that
    /// cannot be read stops the run with its path, or with `skipUnreadable` gets zero tokens and is listed
    /// in its round's `unreadable`. With one scale (`[1]`: the model's input size) `cls` is the model's CLS
    /// token at `model.inputSize(scale:)`; with several, the multi-scale descriptor: the L2-normalised sum of
    /// the L2-normalised CLS tokens at every scale's input size (patch tokens need a single scale).
    public static func rounds(
        of dataset: ImageDataset, model: some FrozenFeatures, communicator comm: any Communicator,
        batch: Int = 16, patches: Bool, scales: [Double] = [1], skipUnreadable: Bool = false,
        _ body: (Round) throws -> Void
    ) throws {
        precondition(!scales.isEmpty && (!patches || scales.count == 1), "patch tokens need a single scale")
        let sizes = scales.map { model.inputSize(scale: $0) }, largest = sizes.max() ?? model.inputSize
        let d = model.featureDimension
        let p = patches ? model.patchesPerImage(size: sizes[0]) : 0
        let perRank = (dataset.count + comm.worldSize - 1) / comm.worldSize
        func slice(_ rank: Int) -> Range<Int> {
            min(dataset.count, rank * perRank)..<min(dataset.count, rank * perRank + perRank)
        }
        let mine = slice(comm.rank)
        var pixels = [Float](repeating: 0, count: batch * 3 * largest * largest)
        for round in 0..<((perRank + batch - 1) / batch) {
            let ranges = (0..<comm.worldSize).map { rank in
                let owned = slice(rank)
                return min(
                    owned.upperBound, owned.lowerBound + round * batch)..<min(
                        owned.upperBound,
                        owned.lowerBound + (round + 1) * batch)
            }
            let local = ranges[comm.rank]
            precondition(local.lowerBound >= mine.lowerBound && local.upperBound <= mine.upperBound)
            // Decoding and the evaluation views run on the model's workers, one image each (the model's
            // forward would otherwise wait for them on one core); errors are read in image order after.
            let images = UnsafeMutableBufferPointer<RGBImage?>.allocate(capacity: local.count)
            let errors = UnsafeMutableBufferPointer<String?>.allocate(capacity: local.count)
            images.initialize(repeating: nil)
            errors.initialize(repeating: nil)
            defer {
                images.deinitialize()
                images.deallocate()
                errors.deinitialize()
                errors.deallocate()
            }
            WorkQueue.run(count: local.count, threads: model.workerThreads) { j, _ in
                let path = dataset.samples[local.lowerBound + j].path
                guard let data = FileManager.default.contents(atPath: path) else {
                    errors[j] = "no such file, or it cannot be opened"
                    return
                }
                do { images[j] = try ImageCodec.decode(data) } catch { errors[j] = "\(error)" }
            }
            var failed = [Float](repeating: 0, count: local.count)
            for (j, index) in local.enumerated() {
                guard let error = errors[j] else { continue }
                guard skipUnreadable else {
                    throw EvaluationError.data(
                        "cannot read \(dataset.samples[index].path): \(error); fix or remove the file")
                }
                failed[j] = 1
            }
            var tokens: (cls: [Float], patches: [Float]) = (
                sizes.count > 1 ? [Float](repeating: 0, count: max(1, local.count) * d) : [], []
            )
            for size in sizes {
                pixels.withUnsafeMutableBufferPointer { buffer in
                    guard let base = buffer.baseAddress else { return }
                    WorkQueue.run(count: local.count, threads: model.workerThreads) { j, _ in
                        let pixels = 3 * size * size
                        if let image = images[j] {
                            Augment.normalize(KNN.evaluationView(image, size: size), into: base + j * pixels)
                        } else {
                            (base + j * pixels).update(repeating: 0, count: pixels)
                        }
                    }
                }
                let scaled = try withBase(pixels) {
                    try model.tokens(images: $0, count: max(1, local.count), size: size, patches: patches)
                }
                if sizes.count == 1 {
                    tokens = scaled
                } else {
                    UnitRows.accumulate(scaled.cls, into: &tokens.cls, dimension: d)
                }
            }
            if sizes.count > 1 { UnitRows.normalize(&tokens.cls, dimension: d) }
            for j in failed.indices where failed[j] != 0 {
                for c in 0..<d { tokens.cls[j * d + c] = 0 }
                if patches { for i in (j * p * d)..<((j + 1) * p * d) { tokens.patches[i] = 0 } }
            }
            let cls = try gather(Array(tokens.cls.prefix(local.count * d)), ranges: ranges, width: d, comm)
            let patchTokens =
                patches
                ? try gather(Array(tokens.patches.prefix(local.count * p * d)), ranges: ranges, width: p * d, comm) : []
            var unreadable: [Int] = []
            if skipUnreadable {
                let flags = try gather(failed, ranges: ranges, width: 1, comm)
                var row = 0
                for range in ranges {
                    for index in range {
                        if flags[row] != 0 { unreadable.append(index) }
                        row += 1
                    }
                }
            }
            try body(Round(ranges: ranges, cls: cls, patches: patchTokens, unreadable: unreadable))
        }
    }

    private static func gather(
        _ mine: [Float], ranges: [Range<Int>], width: Int, _ comm: any Communicator
    ) throws -> [Float] {
        let counts = ranges.map { $0.count * width }
        var all = [Float](repeating: 0, count: counts.reduce(0, +))
        try mine.withUnsafeBufferPointer { m in
            try all.withUnsafeMutableBufferPointer { try comm.allGather(m, counts: counts, into: $0) }
        }
        return all
    }
}
