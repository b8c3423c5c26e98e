// A communicator of one rank: every collective is a copy (or nothing), every nonblocking request is
// complete on return. A 1-rank run uses it through the same Communicator calls as an N-rank run.

import Foundation

/// The communicator of a run with exactly one rank and no MPI.
public final class SingleProcessCommunicator: Communicator, @unchecked Sendable {
    public let rank = 0
    public let worldSize = 1
    public let hostName: String

    public init() {
        hostName = ProcessInfo.processInfo.hostName
    }

    public func barrier() throws {}

    public func broadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        try checkRoot(root)
    }

    public func allReduce<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {}

    public func allReduce<T: CommScalar>(
        _ input: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws {
        precondition(input.count == output.count, "allReduce: input and output counts differ")
        copy(input, to: output)
    }

    public func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, into full: UnsafeMutableBufferPointer<T>
    ) throws {
        _ = CollectiveShape.blockCount(full: full.count, shard: shard.count, worldSize: 1, "allGather")
        copy(shard, to: full)
    }

    public func allGather<T: CommScalar>(inPlace full: UnsafeMutableBufferPointer<T>) throws {}

    public func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, counts: [Int], into full: UnsafeMutableBufferPointer<T>
    ) throws {
        precondition(
            counts == [shard.count] && full.count == shard.count,
            "allGather(counts:): counts \(counts) do not match shard \(shard.count) / full \(full.count)")
        copy(shard, to: full)
    }

    public func reduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws {
        _ = CollectiveShape.blockCount(full: full.count, shard: shard.count, worldSize: 1, "reduceScatter")
        copy(full, to: shard)
    }

    public func reduceScatter<T: CommScalar>(inPlace full: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {}

    public func startBroadcast<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int
    ) throws
        -> CommRequest
    {
        try broadcast(buffer, root: root)
        return CompletedRequest()
    }

    public func startAllReduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws
        -> CommRequest
    {
        CompletedRequest()
    }

    public func startAllGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, into full: UnsafeMutableBufferPointer<T>
    ) throws -> CommRequest {
        try allGather(shard, into: full)
        return CompletedRequest()
    }

    public func startReduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws -> CommRequest {
        try reduceScatter(full, into: shard, op: op)
        return CompletedRequest()
    }

    public func progress() throws {}

    public func split(color: Int, key: Int) throws -> any Communicator { SingleProcessCommunicator() }

    public func splitByNode() throws -> any Communicator { SingleProcessCommunicator() }

    public func abort(exitCode: Int32) -> Never {
        fflush(nil)
        exit(exitCode)
    }

    private func checkRoot(_ root: Int) throws {
        guard root == 0 else {
            throw CommunicatorError.invalidArgument("broadcast root \(root) is not a rank of a 1-rank group")
        }
    }

    private func copy<T>(_ source: UnsafeBufferPointer<T>, to target: UnsafeMutableBufferPointer<T>) {
        guard let from = source.baseAddress, let to = target.baseAddress,
            UnsafeRawPointer(from) != UnsafeRawPointer(to)
        else { return }
        to.update(from: from, count: source.count)
    }
}

/// A request that completed when it was created.
public final class CompletedRequest: CommRequest {
    public init() {}
    public func test() throws -> Bool { true }
    public func wait() throws {}
}
