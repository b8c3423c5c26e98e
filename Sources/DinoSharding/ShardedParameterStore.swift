// FSDP over the Communicator: each unit of a tensor table (the backbone's embed / blocks / norm,
// a head) is one flat buffer, padded to a multiple of the shard count; shard s owns the contiguous
// range [s S, (s + 1) S) of it (S = padded / shards). Parameters, gradients, AdamW moments and the
// teacher live as shards; the model sees full units only through the ParameterStore calls:
//   parameters(unit)      FULL_SHARD / HYBRID_SHARD: all-gather the unit into a gathered buffer
//                         (again in backward); SHARD_GRAD_OP: gather once, keep until endStep();
//                         NO_SHARD: every rank holds the whole unit, nothing to gather
//   release(unit)         FULL_SHARD / HYBRID_SHARD: the gathered buffer returns to the pool, so at
//                         most two units are gathered at any time
//   gradients(unit)       a zeroed full-size gradient buffer for the unit
//   gradientsReady(unit)  starts the unit's gradient reduction and returns: reduce-scatter (sum)
//                         inside the shard group (an all-reduce for units of 16 MiB and more, which
//                         Open MPI 4.1 runs faster), NO_SHARD an all-reduce of the whole unit; it
//                         completes while the next unit computes backward (progress is polled), at
//                         the latest when the next reduction starts or at endStep(); then HYBRID_SHARD
//                         all-reduces the shard across the replica groups, and the sum / ranks is
//                         added to the local gradient shard
//   bf16 all-gathers      (fsdp.allgather_dtype bf16) the shard is rounded to bfloat16, gathered as
//                         16-bit words and expanded into the float32 unit buffer: half the bytes on
//                         the wire; master shards, gradients and optimizer state stay float32. With
//                         one shard the unit is rounded the same way, so 1 rank computes what N do.
// With one rank every strategy degenerates to a local store: the same code path as N ranks.
// Gradient sums are over every rank of the job, so the result is the mean over ranks (each rank's
// loss is a mean over its own crops, as the official recipe).

import DinoConfig  // ShardingStrategy (fsdp.sharding_strategy)
import DinoCore
import DinoKernels
import DinoModel

/// A sharding that cannot be set up for this job, with what to change.
public enum ShardingError: Error, CustomStringConvertible, Equatable {
    case configuration(String)

    public var description: String {
        switch self {
        case .configuration(let text): return text
        }
    }
}

/// Which contiguous range of every unit this rank owns.
public struct ShardPlan: Sendable {
    public let table: TensorTable
    public let shards: Int
    public let shardIndex: Int

    public init(table: TensorTable, shards: Int, shardIndex: Int) {
        precondition(shards >= 1 && (0..<shards).contains(shardIndex), "shard \(shardIndex) of \(shards)")
        self.table = table
        self.shards = shards
        self.shardIndex = shardIndex
    }

    /// Elements of `unit` after padding to a multiple of the shard count.
    public func paddedCount(_ unit: Int) -> Int {
        CollectiveShape.padded(table.units[unit].count, toMultipleOf: shards)
    }
    /// Elements of every shard of `unit`.
    public func shardCount(_ unit: Int) -> Int { paddedCount(unit) / shards }
    /// This rank's range of `unit`, in unit coordinates (may extend into the padding).
    public func shardRange(_ unit: Int) -> Range<Int> {
        let s = shardCount(unit)
        return (shardIndex * s)..<((shardIndex + 1) * s)
    }

    /// The part of `entry` this rank owns: its range inside the entry and inside the local shard.
    public func localSlice(of entry: ParameterEntry) -> (inEntry: Range<Int>, inShard: Range<Int>)? {
        let shard = shardRange(entry.unit)
        let lower = Swift.max(entry.offset, shard.lowerBound),
            upper = Swift.min(entry.offset + entry.count, shard.upperBound)
        guard lower < upper else { return nil }
        return (
            (lower - entry.offset)..<(upper - entry.offset), (lower - shard.lowerBound)..<(upper - shard.lowerBound)
        )
    }
}

/// Parameters and gradients of one model part, sharded over ranks.
public final class ShardedParameterStore: ParameterStore {
    public typealias Scalar = Float
    public let strategy: ShardingStrategy
    public let plan: ShardPlan
    public var table: TensorTable { plan.table }
    /// The ranks that split each unit between them (all ranks, a hybrid group, or this rank alone).
    let shardGroup: any Communicator
    /// For HYBRID_SHARD and NO_SHARD: the ranks holding the same shard, whose gradients are averaged.
    let replicaGroup: (any Communicator)?
    let worldSize: Int
    public let parametersShard: UnitBuffers<Float>
    public let gradientsShard: UnitBuffers<Float>
    private var gathered: [Int: GrowableBuffer<Float>] = [:]
    /// Full-unit buffers (gathered parameters, gradients, bf16 words) when not in use, shared with the
    /// other stores of the model.
    public let buffers: SharedBuffers
    /// The gradient buffer being filled by the unit in backward, and free ones.
    private var currentGradient: GrowableBuffer<Float>? = nil
    private var gradientUnit = -1
    /// Gradient reductions in flight, oldest first (at most `maxReductionsInFlight`).
    private var reducing:
        [(
            unit: Int, buffer: GrowableBuffer<Float>, request: CommRequest, started: Double,
            result: UnsafeMutablePointer<Float>
        )] = []
    /// Where a reduce-scatter leaves this rank's block (MPI forbids it to overlap the input).
    private let scatterResult = GrowableBuffer<Float>()
    /// Overlap gradient reductions with the backward of the following units (off: blocking, for comparison).
    public var overlapReductions = true
    /// One reduction in flight overlaps with the next unit's backward and holds one full-unit gradient
    /// buffer besides the one being filled.
    let maxReductionsInFlight = 1
    /// Units at least this large are all-reduced instead of reduce-scattered (Open MPI 4.1's
    /// reduce-scatter is several times slower there; see Benchmarks/RESULTS.md).
    let allReduceThresholdBytes = 16 << 20
    /// Gathers started ahead of use: the next unit in the direction the pass is moving.
    private struct PendingGather {
        var buffer: GrowableBuffer<Float>
        var request: CommRequest
        var started: Double
        /// bf16 gathers: the shard rounded (the send buffer) and the gathered 16-bit words.
        var wire: (shard: GrowableBuffer<UInt16>, full: GrowableBuffer<UInt16>)?
    }
    private var prefetched: [Int: PendingGather] = [:]
    /// Gather parameters as bfloat16 (fsdp.allgather_dtype bf16).
    public let allGatherBF16: Bool
    private var lastRequested = -1
    private let driver: ProgressDriver
    private let replicaDriver: ProgressDriver?
    /// Start the next unit's all-gather before the current unit computes (FULL_SHARD, HYBRID_SHARD).
    public var prefetch = true
    /// Largest number of units gathered (or being gathered) at the same time.
    public private(set) var peakGatheredUnits = 0
    /// Seconds this rank waited in collectives (not hidden behind compute).
    public var exposedCommunicationSeconds: Double { exposedGatherSeconds + exposedReductionSeconds }
    /// Of those: waiting for parameter all-gathers.
    public private(set) var exposedGatherSeconds = 0.0
    /// Of those: starting and waiting for gradient reductions.
    public private(set) var exposedReductionSeconds = 0.0
    /// Seconds from the start to the observed end of every collective, hidden or not.
    public private(set) var totalCommunicationSeconds = 0.0

    /// Whether this store keeps gradient shards: a model that only runs forward (the EMA teacher) does
    /// not, which saves one float per parameter shard element.
    public let hasGradients: Bool

    /// Shards `table` over `world` with `strategy`; `hybridGroupSize` ranks share one copy for HYBRID_SHARD.
    public init(
        table: TensorTable, strategy: ShardingStrategy, world: any Communicator, hybridGroupSize: Int = 0,
        allGatherBF16: Bool = false, hasGradients: Bool = true, buffers: SharedBuffers = SharedBuffers()
    ) throws {
        self.buffers = buffers
        self.strategy = strategy
        self.hasGradients = hasGradients
        self.allGatherBF16 = allGatherBF16
        worldSize = world.worldSize
        switch strategy {
        case .fullShard, .shardGradOp:
            shardGroup = world
            replicaGroup = nil
        case .noShard:
            shardGroup = SingleProcessCommunicator()
            replicaGroup = world.worldSize > 1 ? world : nil
        case .hybridShard:
            let size = hybridGroupSize > 0 ? hybridGroupSize : try world.splitByNode().worldSize
            guard world.worldSize % size == 0 else {
                throw ShardingError.configuration(
                    "fsdp.hybrid_group_size \(size) does not divide the \(world.worldSize) "
                        + "ranks; set it to a divisor of the rank count (0: the ranks of one node)")
            }
            shardGroup = try world.split(groupSize: size)
            replicaGroup = try world.split(color: world.rank % size, key: world.rank)
        }
        let plan = ShardPlan(table: table, shards: shardGroup.worldSize, shardIndex: shardGroup.rank)
        self.plan = plan
        let counts = table.units.indices.map { plan.shardCount($0) }
        parametersShard = UnitBuffers(counts: counts)
        gradientsShard = UnitBuffers(counts: hasGradients ? counts : counts.map { _ in 0 })
        driver = ProgressDriver(shardGroup, intervalMicroseconds: 200)
        replicaDriver = replicaGroup.map { ProgressDriver($0, intervalMicroseconds: 200) }
    }

    /// Clears the communication timers.
    public func resetCommunicationTimers() {
        exposedGatherSeconds = 0
        exposedReductionSeconds = 0
        totalCommunicationSeconds = 0
    }

    // MARK: - ParameterStore

    public func parameters(unit: Int) throws -> UnsafePointer<Float> {
        // One shard (one rank, or NO_SHARD): the shard is the whole unit, nothing to gather or copy
        // (with bf16 gathers: a rounded copy, what the gather would have delivered).
        if plan.shards == 1 {
            guard allGatherBF16 else { return UnsafePointer(parametersShard[unit]) }
            if let buffer = gathered[unit] { return UnsafePointer(buffer.base) }
            let count = plan.paddedCount(unit)
            let buffer = buffers.floats.take(atLeast: count), wire = buffers.words.take(atLeast: count)
            BFloat16.round(parametersShard[unit], into: wire.reserve(count), count: count)
            BFloat16.expand(wire.base, into: buffer.reserve(count), count: count)
            buffers.words.give(wire)
            gathered[unit] = buffer
            peakGatheredUnits = Swift.max(peakGatheredUnits, gathered.count)
            return UnsafePointer(buffer.base)
        }
        defer { prefetchNext(after: unit) }
        if let buffer = gathered[unit] { return UnsafePointer(buffer.base) }
        let start = MonotonicClock.seconds()
        let buffer: GrowableBuffer<Float>
        if let pending = prefetched.removeValue(forKey: unit) {
            try pending.request.wait()
            buffer = pending.buffer
            if let wire = pending.wire {
                BFloat16.expand(wire.full.base, into: buffer.base, count: plan.paddedCount(unit))
                buffers.words.give(wire.shard)
                buffers.words.give(wire.full)
            }
            totalCommunicationSeconds += MonotonicClock.seconds() - pending.started
        } else {
            let padded = plan.paddedCount(unit)
            buffer = buffers.floats.take(atLeast: padded)
            let full = buffer.reserve(padded)
            if allGatherBF16 {
                let wire = buffers.words.take(atLeast: padded)
                let words = wire.reserve(padded)
                BFloat16.round(
                    parametersShard[unit], into: words + plan.shardRange(unit).lowerBound,
                    count: plan.shardCount(unit))
                try shardGroup.allGather(inPlace: UnsafeMutableBufferPointer(start: words, count: padded))
                BFloat16.expand(words, into: full, count: padded)
                buffers.words.give(wire)
            } else {
                (full + plan.shardRange(unit).lowerBound).update(
                    from: parametersShard[unit], count: plan.shardCount(unit))
                try shardGroup.allGather(inPlace: UnsafeMutableBufferPointer(start: full, count: padded))
            }
            totalCommunicationSeconds += MonotonicClock.seconds() - start
        }
        exposedGatherSeconds += MonotonicClock.seconds() - start
        gathered[unit] = buffer
        peakGatheredUnits = Swift.max(peakGatheredUnits, gathered.count + prefetched.count)
        return UnsafePointer(buffer.base)
    }

    /// Starts gathering the unit after `unit` in the direction of the pass (forward: increasing,
    /// backward: decreasing), if no more than two units would then be held. Every rank makes the
    /// same calls in the same order, so every rank starts the same collectives in the same order.
    private func prefetchNext(after unit: Int) {
        let direction = unit >= lastRequested ? 1 : -1
        lastRequested = unit
        guard prefetch, strategy != .noShard else { return }
        let next = unit + direction
        guard table.units.indices.contains(next), gathered[next] == nil, prefetched[next] == nil,
            gathered.count + prefetched.count < 2 || strategy == .shardGradOp
        else { return }
        let padded = plan.paddedCount(next), shardCount = plan.shardCount(next)
        let buffer = buffers.floats.take(atLeast: padded)
        let full = buffer.reserve(padded)
        var wire: (shard: GrowableBuffer<UInt16>, full: GrowableBuffer<UInt16>)? = nil
        do {
            let request: CommRequest
            if allGatherBF16 {
                let pair = (
                    shard: buffers.words.take(atLeast: shardCount),
                    full: buffers.words.take(atLeast: padded)
                )
                wire = pair
                BFloat16.round(parametersShard[next], into: pair.shard.reserve(shardCount), count: shardCount)
                request = try shardGroup.startAllGather(
                    UnsafeBufferPointer(start: pair.shard.base, count: shardCount),
                    into: UnsafeMutableBufferPointer(start: pair.full.reserve(padded), count: padded))
            } else {
                request = try shardGroup.startAllGather(
                    UnsafeBufferPointer(start: parametersShard[next], count: shardCount),
                    into: UnsafeMutableBufferPointer(start: full, count: padded))
            }
            prefetched[next] = PendingGather(
                buffer: buffer, request: request, started: MonotonicClock.seconds(), wire: wire)
            peakGatheredUnits = Swift.max(peakGatheredUnits, gathered.count + prefetched.count)
        } catch {
            // The synchronous gather in parameters(unit:) reports the error.
            buffers.floats.give(buffer)
            if let wire {
                buffers.words.give(wire.shard)
                buffers.words.give(wire.full)
            }
        }
    }

    public func progress() throws {
        if !prefetched.isEmpty || !reducing.isEmpty { try driver.poll() }
        if !reducing.isEmpty { try replicaDriver?.poll() }
    }

    /// Completes every prefetch still in flight (they must finish before their buffers are reused).
    private func finishPrefetches() throws {
        for (_, pending) in prefetched {
            try pending.request.wait()
            buffers.floats.give(pending.buffer)
            if let wire = pending.wire {
                buffers.words.give(wire.shard)
                buffers.words.give(wire.full)
            }
        }
        prefetched.removeAll()
    }

    public func release(unit: Int) throws {
        guard strategy == .fullShard || strategy == .hybridShard || strategy == .noShard else { return }
        if let buffer = gathered.removeValue(forKey: unit) { buffers.floats.give(buffer) }
    }

    /// Releases every unit kept gathered (SHARD_GRAD_OP keeps them from forward to backward) and
    /// completes prefetches still in flight; called once per step after backward.
    public func endStep() throws {
        while !reducing.isEmpty { try completeOldestReduction() }
        try finishPrefetches()
        for (_, buffer) in gathered { buffers.floats.give(buffer) }
        gathered.removeAll()
        lastRequested = -1
    }

    public func gradients(unit: Int) -> UnsafeMutablePointer<Float> {
        precondition(hasGradients, "gradients asked of a store made without them (a forward-only model)")
        if let current = currentGradient, gradientUnit == unit { return current.base }
        let padded = plan.paddedCount(unit)
        let buffer = currentGradient ?? buffers.floats.take(atLeast: padded)
        buffer.reserve(padded).setToZero(count: padded)
        currentGradient = buffer
        gradientUnit = unit
        return buffer.base
    }

    /// Every backward pass of a unit gets a fresh zeroed buffer (`gradients(unit:)`).
    public var gradientsStartZeroed: Bool { true }

    public func gradientsReady(unit: Int) throws {
        let padded = plan.paddedCount(unit)
        let full = gradients(unit: unit)
        guard let buffer = currentGradient else { return }
        currentGradient = nil
        gradientUnit = -1
        let communicator = shardGroup.worldSize > 1 ? shardGroup : replicaGroup
        guard let communicator else {
            // One rank: the gradient is already the sum.
            accumulate(full + plan.shardRange(unit).lowerBound, unit: unit)
            buffers.floats.give(buffer)
            return
        }
        if reducing.count >= maxReductionsInFlight { try completeOldestReduction() }
        let start = MonotonicClock.seconds()
        let whole = UnsafeMutableBufferPointer(start: full, count: padded)
        let allReduce = shardGroup.worldSize == 1 || padded * MemoryLayout<Float>.stride >= allReduceThresholdBytes
        let request: CommRequest, result: UnsafeMutablePointer<Float>
        if allReduce {
            request = try communicator.startAllReduce(whole, op: .sum)
            result = full + plan.shardRange(unit).lowerBound
        } else {
            result = scatterResult.reserve(plan.shardCount(unit))
            request = try communicator.startReduceScatter(
                UnsafeBufferPointer(whole),
                into: UnsafeMutableBufferPointer(start: result, count: plan.shardCount(unit)),
                op: .sum)
        }
        exposedReductionSeconds += MonotonicClock.seconds() - start
        reducing.append((unit, buffer, request, start, result))
        if !overlapReductions { try completeOldestReduction() }
    }

    /// Waits for the oldest gradient reduction, finishes it across replicas and adds it to the shard.
    private func completeOldestReduction() throws {
        let entry = reducing.removeFirst()
        let waitStart = MonotonicClock.seconds()
        try entry.request.wait()
        let mine = entry.result
        if shardGroup.worldSize > 1, let replicaGroup {
            try replicaGroup.allReduce(
                UnsafeMutableBufferPointer(start: mine, count: plan.shardCount(entry.unit)), op: .sum)
        }
        let end = MonotonicClock.seconds()
        exposedReductionSeconds += end - waitStart
        totalCommunicationSeconds += end - entry.started
        accumulate(mine, unit: entry.unit)
        buffers.floats.give(entry.buffer)
    }

    /// Adds this rank's reduced range `mine` of `unit`'s gradient sum, divided by the rank count, to its shard.
    private func accumulate(_ mine: UnsafePointer<Float>, unit: Int) {
        let shard = gradientsShard[unit], scale = 1 / Float(worldSize)
        for i in 0..<plan.shardCount(unit) { shard[i] += mine[i] * scale }
    }

    // MARK: - Shards

    /// Sets every local gradient to zero.
    public func zeroGradients() {
        guard hasGradients else { return }
        for u in table.units.indices { gradientsShard[u].setToZero(count: plan.shardCount(u)) }
    }

    /// Squared L2 norm of this model part's whole gradient (padding excluded; one all-reduce).
    public func gradientSquaredNorm() throws -> Double {
        precondition(hasGradients, "gradient norm asked of a store made without gradients")
        var local = 0.0
        for (u, unit) in table.units.enumerated() {
            let range = plan.shardRange(u)
            let real = Swift.max(0, Swift.min(range.upperBound, unit.count) - range.lowerBound)
            local += VectorOps.sumOfSquares(UnsafeBufferPointer(start: gradientsShard[u], count: real))
        }
        return shardGroup.worldSize > 1 ? try shardGroup.allReduce(local, op: .sum) : local
    }

    /// Multiplies every local gradient by `factor`.
    public func scaleGradients(_ factor: Float) {
        precondition(hasGradients, "gradients scaled in a store made without them")
        for u in table.units.indices {
            let g = gradientsShard[u]
            for i in 0..<plan.shardCount(u) { g[i] *= factor }
        }
    }

    /// Writes tensor `name` (its full values, identical on every rank) into the local shards.
    public func setTensor(_ name: String, _ values: [Float]) {
        guard let entry = table.entry(named: name) else { preconditionFailure("no parameter named \(name)") }
        precondition(values.count == entry.count, "\(name): \(values.count) values for \(entry.count)")
        guard let slice = plan.localSlice(of: entry) else { return }
        let shard = parametersShard[entry.unit]
        for (i, j) in zip(slice.inEntry, slice.inShard) { shard[j] = values[i] }
    }

    /// The full values of tensor `name`, gathered from every shard (collective: call on every rank).
    public func gatherTensor(_ name: String) throws -> [Float] {
        guard let entry = table.entry(named: name) else { preconditionFailure("no parameter named \(name)") }
        let full = try parameters(unit: entry.unit)
        let values = Array(UnsafeBufferPointer(start: full + entry.offset, count: entry.count))
        try endStep()
        return values
    }

    /// The full gradient of tensor `name`, gathered from every shard (collective: call on every rank).
    public func gatherGradient(_ name: String) throws -> [Float] {
        guard let entry = table.entry(named: name) else { preconditionFailure("no parameter named \(name)") }
        let padded = plan.paddedCount(entry.unit), s = plan.shardCount(entry.unit)
        var full = [Float](repeating: 0, count: padded)
        try full.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            (base + plan.shardRange(entry.unit).lowerBound).update(from: gradientsShard[entry.unit], count: s)
            try shardGroup.allGather(inPlace: buffer)
        }
        return Array(full[entry.offset..<(entry.offset + entry.count)])
    }

    /// Fills this rank's shards with the official initialisation: each element is drawn by its
    /// index, so the values equal `LocalParameters.initialize` with the same seed, for any rank count.
    public func initialize(seed: UInt64) {
        for (index, entry) in table.entries.enumerated() {
            guard let slice = plan.localSlice(of: entry) else { continue }
            ParameterInitializer.fill(
                parametersShard[entry.unit] + slice.inShard.lowerBound, entry: entry,
                index: table.firstPieceIndex(of: index), range: slice.inEntry, seed: seed)
        }
    }

    /// Bytes of this rank's parameter (and gradient) shards, and of the full-unit buffers it holds in
    /// use (gathered parameters, gradients being filled or reduced); free buffers are `buffers.bytes`.
    public var residentBytes: (shards: Int, gathered: Int) {
        let copies = hasGradients ? 2 : 1
        let shards = table.units.indices.reduce(0) { $0 + copies * plan.shardCount($1) } * MemoryLayout<Float>.stride
        let inUse =
            Array(gathered.values) + prefetched.values.map(\.buffer) + reducing.map(\.buffer)
            + (currentGradient.map { [$0] } ?? []) + [scatterResult]
        let words = prefetched.values.flatMap { $0.wire.map { [$0.shard, $0.full] } ?? [] }
        return (shards, inUse.reduce(0) { $0 + $1.bytes } + words.reduce(0) { $0 + $1.bytes })
    }
}

/// The free full-unit buffers of the parameter stores of one model (see BufferPool).
public final class SharedBuffers: @unchecked Sendable {
    public let floats = BufferPool<Float>()
    public let words = BufferPool<UInt16>()

    public init() {}

    /// Bytes of the free buffers.
    public var bytes: Int { floats.bytes + words.bytes }
}
