// A communicator that forwards every call to another one and adds up the wall time spent in the
// calls, so a training step can report how long it waited on its own collectives.

/// Forwards to `base` and accumulates the seconds spent in its calls.
public final class TimedCommunicator: Communicator, @unchecked Sendable {
    public let base: any Communicator
    /// Seconds spent inside forwarded calls since the last `reset()`.
    public private(set) var seconds = 0.0

    public init(_ base: any Communicator) { self.base = base }

    public func reset() { seconds = 0 }

    @inline(__always)
    private func timed<R>(_ body: () throws -> R) rethrows -> R {
        let start = MonotonicClock.seconds()
        defer { seconds += MonotonicClock.seconds() - start }
        return try body()
    }

    public var rank: Int { base.rank }
    public var worldSize: Int { base.worldSize }
    public var hostName: String { base.hostName }

    public func barrier() throws { try timed { try base.barrier() } }
    public func broadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        try timed { try base.broadcast(buffer, root: root) }
    }
    public func allReduce<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        try timed { try base.allReduce(buffer, op: op) }
    }
    public func allReduce<T: CommScalar>(
        _ input: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>,
        op: ReduceOp
    ) throws {
        try timed { try base.allReduce(input, into: output, op: op) }
    }
    public func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, into full: UnsafeMutableBufferPointer<T>
    ) throws {
        try timed { try base.allGather(shard, into: full) }
    }
    public func allGather<T: CommScalar>(inPlace full: UnsafeMutableBufferPointer<T>) throws {
        try timed { try base.allGather(inPlace: full) }
    }
    public func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, counts: [Int],
        into full: UnsafeMutableBufferPointer<T>
    ) throws {
        try timed { try base.allGather(shard, counts: counts, into: full) }
    }
    public func reduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>,
        op: ReduceOp
    ) throws {
        try timed { try base.reduceScatter(full, into: shard, op: op) }
    }
    public func reduceScatter<T: CommScalar>(inPlace full: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        try timed { try base.reduceScatter(inPlace: full, op: op) }
    }
    public func startBroadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws -> CommRequest
    {
        try timed { try base.startBroadcast(buffer, root: root) }
    }
    public func startAllReduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws -> CommRequest {
        try timed { try base.startAllReduce(buffer, op: op) }
    }
    public func startAllGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>,
        into full: UnsafeMutableBufferPointer<T>
    ) throws -> CommRequest {
        try timed { try base.startAllGather(shard, into: full) }
    }
    public func startReduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>,
        op: ReduceOp
    ) throws -> CommRequest {
        try timed { try base.startReduceScatter(full, into: shard, op: op) }
    }
    public func progress() throws { try timed { try base.progress() } }
    public func split(color: Int, key: Int) throws -> any Communicator { try base.split(color: color, key: key) }
    public func splitByNode() throws -> any Communicator { try base.splitByNode() }
    public func abort(exitCode: Int32) -> Never { base.abort(exitCode: exitCode) }
}
