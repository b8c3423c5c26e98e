// Background loading of a rank's multi-crop batches. A producer thread prepares the batches of the
// next steps in order (up to `prefetch` ahead); the images of a batch are decoded and augmented
// by `workers` threads. Every crop's random draws are keyed by (seed, epoch, dataset index, crop),
// so the crops of an image do not depend on the rank count, the worker count or timing.
// Output layout (what the training step expects): global crops [2B, 3, G, G], view 1 of every image
// then view 2; local crops [n B, 3, L, L], crop-major; float32, normalised.
// An unreadable image is replaced by the next readable one in dataset order (deterministic), with
// one warning per file, and counted.

import DinoCore
import Foundation

/// One rank's crops for one step.
public struct CropBatchData: @unchecked Sendable {
    public var step: Int
    public var globalCrops: [Float]
    public var localCrops: [Float]
    /// Dataset indices of the images (after replacing unreadable ones) and their labels.
    public var indices: [Int]
    public var labels: [Int]
    /// Unreadable files met while building this batch.
    public var skipped: Int
}

/// Prefetching multi-crop loader of one rank.
public final class CropLoader: @unchecked Sendable {
    public let dataset: ImageDataset
    public let sampler: DistributedSampler
    public let pipeline: MultiCrop
    public let rank: Int, worldSize: Int, seed: UInt64, workers: Int, prefetch: Int
    /// Seconds the consumer spent waiting for batches since the last `takeWaitSeconds()`.
    private var waitSeconds = 0.0
    private var ready: [Int: CropBatchData] = [:]
    private var nextToProduce: Int
    private var stopping = false
    private var failure: Error? = nil
    private let condition = NSCondition()
    private var warned: Set<String> = []
    private var unreadable: Set<Int> = []
    private var thread: Thread? = nil

    /// Starts producing from `firstStep` (the resume position).
    public init(
        dataset: ImageDataset, sampler: DistributedSampler, pipeline: MultiCrop, rank: Int, worldSize: Int,
        seed: UInt64, firstStep: Int, workers: Int = 1, prefetch: Int = 2
    ) {
        self.dataset = dataset
        self.sampler = sampler
        self.pipeline = pipeline
        self.rank = rank
        self.worldSize = worldSize
        self.seed = seed
        self.workers = max(1, workers)
        self.prefetch = max(1, prefetch)
        nextToProduce = firstStep
        let thread = Thread { [unowned self] in self.produce() }
        thread.name = "dino-data"
        self.thread = thread
        thread.start()
    }

    deinit { stop() }

    /// Stops the producer after the batch it is working on.
    public func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    /// The batch of `step` (steps must be requested in order), waiting for it if needed.
    public func batch(step: Int) throws -> CropBatchData {
        let start = MonotonicClock.seconds()
        condition.lock()
        defer { condition.unlock() }
        while ready[step] == nil && failure == nil { condition.wait() }
        if let failure { throw failure }
        waitSeconds += MonotonicClock.seconds() - start
        guard let batch = ready.removeValue(forKey: step) else { throw DatasetError.missing("batch of step \(step)") }
        condition.broadcast()
        return batch
    }

    /// Returns and resets the accumulated wait time.
    public func takeWaitSeconds() -> Double {
        condition.lock()
        defer { condition.unlock() }
        let value = waitSeconds
        waitSeconds = 0
        return value
    }

    private func produce() {
        while true {
            condition.lock()
            while ready.count >= prefetch && !stopping { condition.wait() }
            if stopping {
                condition.unlock()
                return
            }
            let step = nextToProduce
            nextToProduce += 1
            condition.unlock()
            let batch = make(step: step)
            condition.lock()
            ready[step] = batch
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Decodes and augments the images of `step` for this rank.
    public func make(step: Int) -> CropBatchData {
        let slots = sampler.batch(step: step, rank: rank, worldSize: worldSize)
        let b = slots.count, g = pipeline.globalSize, l = pipeline.localSize, n = pipeline.localCrops
        let globalCount = 2 * b * 3 * g * g, localCount = n * b * 3 * l * l
        let global = UnsafeMutablePointer<Float>.allocate(capacity: max(1, globalCount))
        let local = UnsafeMutablePointer<Float>.allocate(capacity: max(1, localCount))
        defer {
            global.deallocate()
            local.deallocate()
        }
        var indices = [Int](repeating: 0, count: b), skipped = [Int](repeating: 0, count: b)
        let outputs = UncheckedSendable((global, local))
        indices.withUnsafeMutableBufferPointer { indexBuffer in
            skipped.withUnsafeMutableBufferPointer { skipBuffer in
                WorkQueue.run(count: b, threads: workers) { i, _ in
                    let (image, index, misses) = self.load(startingAt: slots[i].index)
                    indexBuffer[i] = index
                    skipBuffer[i] = misses
                    let epoch = UInt64(self.sampler.epoch(at: slots[i].position))
                    self.pipeline.normalizedCrops(of: image, seed: self.seed, epoch: epoch, index: index) { crop in
                        crop < 2
                            ? outputs.value.0 + (crop * b + i) * 3 * g * g
                            : outputs.value.1 + ((crop - 2) * b + i) * 3 * l * l
                    }
                }
            }
        }
        return CropBatchData(
            step: step, globalCrops: Array(UnsafeBufferPointer(start: global, count: globalCount)),
            localCrops: Array(UnsafeBufferPointer(start: local, count: localCount)), indices: indices,
            labels: indices.map { dataset.samples[$0].label }, skipped: skipped.reduce(0, +))
    }

    /// Dataset indices of the unreadable files this loader has met so far, ascending.
    public var unreadableIndices: [Int] {
        condition.lock()
        defer { condition.unlock() }
        return unreadable.sorted()
    }

    /// The first readable image at or after `index` (wrapping), and how many were skipped.
    func load(startingAt index: Int) -> (RGBImage, Int, Int) {
        var misses = 0
        for offset in 0..<dataset.count {
            let candidate = (index + offset) % dataset.count
            let path = dataset.samples[candidate].path
            do {
                let image = try ImageCodec.decode(Data(contentsOf: URL(fileURLWithPath: path)))
                return (image, candidate, misses)
            } catch {
                misses += 1
                condition.lock()
                let first = warned.insert(path).inserted
                unreadable.insert(candidate)
                condition.unlock()
                if first { Console.write("warning: skipping \(path): \(fileProblem(error))\n", to: 2) }
            }
        }
        // No readable image at all: a blank one keeps the run going and the count says why.
        return (RGBImage(width: 1, height: 1, pixels: [0, 0, 0]), index, misses)
    }
}
