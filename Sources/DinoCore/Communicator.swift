// The collective-communication interface the runtime is written against. One implementation talks
// to MPI (DinoDistributed.MPICommunicator); SingleProcessCommunicator serves a 1-rank run through
// the very same calls, so no caller ever branches on "distributed or not".
//
// Shapes: every collective works on flat buffers of `CommScalar` elements.
//   allGather:     shard [n]           -> full [n * worldSize]   (rank r's block at r * n)
//   reduceScatter: full [n * worldSize] -> shard [n]           (rank r receives reduced block r)
//   allReduce:     buffer [n]          -> buffer [n]             (element-wise reduction)
// Nonblocking forms return a `CommRequest`; the buffers must stay alive and untouched until the
// request completes. Open MPI 4.1 has no progress thread: call `progress()` (or a ProgressDriver)
// from the compute loop so that the transfer advances while the rank computes.

/// Element-wise reduction applied by allReduce and reduceScatter.
public enum ReduceOp: String, Sendable, CaseIterable {
    case sum, max, min
}

/// The element types the collectives carry.
public enum CommElementType: Sendable {
    case float32, float64, int32, int64, uint8, uint16
}

/// A scalar type that can travel through a collective.
public protocol CommScalar: Numeric, Comparable, Sendable {
    static var commElementType: CommElementType { get }
    /// Converts from Double (rounding or truncating as the type's own initialiser does).
    init(_ value: Double)
}

extension Float: CommScalar { public static var commElementType: CommElementType { .float32 } }
extension Double: CommScalar { public static var commElementType: CommElementType { .float64 } }
extension Int32: CommScalar { public static var commElementType: CommElementType { .int32 } }
extension Int64: CommScalar { public static var commElementType: CommElementType { .int64 } }
extension UInt8: CommScalar { public static var commElementType: CommElementType { .uint8 } }
/// bfloat16 bit patterns travel as UInt16 (bf16 all-gathers).
extension UInt16: CommScalar { public static var commElementType: CommElementType { .uint16 } }

/// A collective in flight.
public protocol CommRequest: AnyObject {
    /// Advances the operation and reports whether it has completed; never blocks.
    func test() throws -> Bool
    /// Blocks until the operation has completed.
    func wait() throws
}

/// A group of ranks that run collectives together.
///
/// All methods must be called from the thread that created the communicator (MPI is initialised
/// with MPI_THREAD_FUNNELED), and every rank of the group must call each collective in the same
/// order with matching counts.
public protocol Communicator: AnyObject, Sendable {
    /// This process's index in the group, 0 ..< worldSize.
    var rank: Int { get }
    /// Number of ranks in the group.
    var worldSize: Int { get }
    /// Name of the host this rank runs on.
    var hostName: String { get }

    /// Blocks until every rank has reached the barrier.
    func barrier() throws
    /// Copies `buffer` of rank `root` into `buffer` on every rank.
    func broadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws
    /// Reduces `buffer` element-wise over all ranks, in place.
    func allReduce<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws
    /// Reduces `input` element-wise over all ranks into `output` (same count).
    func allReduce<T: CommScalar>(
        _ input: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws
    /// Gathers every rank's equal-sized `shard` into `full`, rank order.
    func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, into full: UnsafeMutableBufferPointer<T>) throws
    /// All-gather in place: rank r's block already sits at `full[r*n ..< (r+1)*n]`.
    func allGather<T: CommScalar>(inPlace full: UnsafeMutableBufferPointer<T>) throws
    /// Gathers shards of per-rank `counts` into `full` (rank order, no padding).
    func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, counts: [Int], into full: UnsafeMutableBufferPointer<T>
    ) throws
    /// Reduces `full` element-wise over ranks and leaves block `rank` of the result in `shard`.
    func reduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws
    /// Reduce-scatter in place: block `rank` of the reduction is left in `full[rank*n ..< (rank+1)*n]`.
    func reduceScatter<T: CommScalar>(
        inPlace full: UnsafeMutableBufferPointer<T>, op: ReduceOp)
        throws

    /// Starts a broadcast; see `broadcast(_:root:)`.
    func startBroadcast<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int
    ) throws
        -> CommRequest
    /// Starts an in-place all-reduce; see `allReduce(_:op:)`.
    func startAllReduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp
    )
        throws -> CommRequest
    /// Starts an all-gather; see `allGather(_:into:)`.
    func startAllGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, into full: UnsafeMutableBufferPointer<T>
    ) throws -> CommRequest
    /// Starts a reduce-scatter; see `reduceScatter(_:into:op:)`.
    func startReduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws -> CommRequest
    /// Advances every nonblocking collective this communicator has in flight; never blocks.
    func progress() throws

    /// Splits into sub-groups of equal `color`, ranked by `key` (then by current rank).
    func split(color: Int, key: Int) throws -> any Communicator
    /// Splits into one sub-group per shared-memory node.
    func splitByNode() throws -> any Communicator

    /// Ends the whole job from this rank, so a failure on one rank never leaves the others waiting.
    func abort(exitCode: Int32) -> Never
}

extension Communicator {
    /// Splits into consecutive groups of `groupSize` ranks (ranks 0..<g, g..<2g, ...).
    public func split(groupSize: Int) throws -> any Communicator {
        guard groupSize > 0, worldSize % groupSize == 0 else {
            throw CommunicatorError.invalidArgument(
                "group size \(groupSize) must be positive and divide the world size \(worldSize)")
        }
        return try split(color: rank / groupSize, key: rank)
    }

    /// All-reduces a small array of values and returns the result.
    public func allReduce<T: CommScalar>(_ values: [T], op: ReduceOp) throws -> [T] {
        var result = values
        try result.withUnsafeMutableBufferPointer { try allReduce($0, op: op) }
        return result
    }

    /// All-reduces one value and returns the result.
    public func allReduce<T: CommScalar>(_ value: T, op: ReduceOp) throws -> T {
        try allReduce([value], op: op)[0]
    }

    /// Broadcasts `bytes` from `root`; other ranks pass anything and receive root's bytes.
    public func broadcast(bytes: [UInt8], root: Int) throws -> [UInt8] {
        var count = Int64(rank == root ? bytes.count : 0)
        try withUnsafeMutablePointer(to: &count) {
            try broadcast(UnsafeMutableBufferPointer(start: $0, count: 1), root: root)
        }
        var buffer = rank == root ? bytes : [UInt8](repeating: 0, count: Int(count))
        try buffer.withUnsafeMutableBufferPointer { try broadcast($0, root: root) }
        return buffer
    }
}

/// Precondition helpers shared by the communicator implementations.
public enum CollectiveShape {
    /// Checks that `full` holds exactly `worldSize` blocks of `shard` and returns the block size.
    @inlinable
    public static func blockCount(full: Int, shard: Int, worldSize: Int, _ call: String) -> Int {
        precondition(
            full == shard * worldSize,
            "\(call): full buffer has \(full) elements, expected shard \(shard) x \(worldSize) ranks")
        return shard
    }

    /// Returns the block size of an in-place collective over `full`.
    @inlinable
    public static func inPlaceBlock(full: Int, worldSize: Int, _ call: String) -> Int {
        precondition(
            full % worldSize == 0,
            "\(call): in-place buffer of \(full) elements is not a multiple of \(worldSize) ranks")
        return full / worldSize
    }

    /// Pads `count` up to a multiple of `worldSize` (the sharder pads every unit this way).
    @inlinable
    public static func padded(_ count: Int, toMultipleOf worldSize: Int) -> Int {
        (count + worldSize - 1) / worldSize * worldSize
    }
}

/// Failures of a communicator, each naming the call and the rank.
public enum CommunicatorError: Error, CustomStringConvertible {
    case mpi(function: String, code: Int32, message: String, rank: Int)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .mpi(let function, let code, let message, let rank):
            return "[rank \(rank)] \(function) failed (MPI error \(code)): \(message)"
        case .invalidArgument(let text):
            return text
        }
    }
}
