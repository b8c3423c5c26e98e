// Communicator over Open MPI. Every call's return code is checked (the world communicator is set to
// MPI_ERRORS_RETURN, so errors come back instead of killing the process silently) and turned into a
// CommunicatorError naming the MPI function and the rank. `abort` ends every rank of the job.
//
// Threading: MPI is initialised with MPI_THREAD_FUNNELED; only the thread that initialised MPI may
// call these methods. Data-loading and compute threads never touch MPI.

import CMPI
import DinoCore
import Foundation

/// A communicator backed by an MPI communicator handle.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public let worldSize: Int
    public let hostName: String

    private let handle: MPI_Comm?
    private let ownsHandle: Bool
    private var pending: [MPIRequest] = []

    // MARK: - Life cycle

    /// Initialises MPI (once per process) and returns the world communicator.
    public static func initializeWorld() throws -> MPICommunicator {
        var initialized: Int32 = 0
        try check(MPI_Initialized(&initialized), "MPI_Initialized", rank: -1)
        if initialized == 0 {
            var provided: Int32 = 0
            try check(
                MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided),
                "MPI_Init_thread", rank: -1)
        }
        let world = dino_mpi_comm_world()
        try check(
            MPI_Comm_set_errhandler(world, dino_mpi_errors_return()),
            "MPI_Comm_set_errhandler", rank: -1)
        return try MPICommunicator(handle: world, ownsHandle: false)
    }

    /// Finalises MPI; call once at the very end, after every rank is done communicating.
    public static func finalize() {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 { MPI_Finalize() }
    }

    private init(handle: MPI_Comm?, ownsHandle: Bool) throws {
        self.handle = handle
        self.ownsHandle = ownsHandle
        var rank: Int32 = 0
        var size: Int32 = 0
        try Self.check(MPI_Comm_rank(handle, &rank), "MPI_Comm_rank", rank: -1)
        try Self.check(MPI_Comm_size(handle, &size), "MPI_Comm_size", rank: Int(rank))
        self.rank = Int(rank)
        self.worldSize = Int(size)
        var name = [CChar](repeating: 0, count: Int(dino_mpi_max_processor_name()) + 1)
        var length: Int32 = 0
        try Self.check(MPI_Get_processor_name(&name, &length), "MPI_Get_processor_name", rank: Int(rank))
        self.hostName = String(decoding: name.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit {
        guard ownsHandle else { return }
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 {
            var comm: MPI_Comm? = handle
            MPI_Comm_free(&comm)
        }
    }

    // MARK: - Blocking collectives

    public func barrier() throws {
        try check(MPI_Barrier(handle), "MPI_Barrier")
    }

    public func broadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        try checkRoot(root, "MPI_Bcast")
        try check(
            MPI_Bcast(
                buffer.baseAddress, try count32(buffer.count, "MPI_Bcast"),
                Self.datatype(T.self), Int32(root), handle), "MPI_Bcast")
    }

    public func allReduce<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        try check(
            MPI_Allreduce(
                dino_mpi_in_place(), buffer.baseAddress,
                try count32(buffer.count, "MPI_Allreduce"), Self.datatype(T.self), Self.mpiOp(op), handle),
            "MPI_Allreduce")
    }

    public func allReduce<T: CommScalar>(
        _ input: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws {
        precondition(input.count == output.count, "MPI_Allreduce: input and output counts differ")
        try check(
            MPI_Allreduce(
                input.baseAddress, output.baseAddress,
                try count32(input.count, "MPI_Allreduce"), Self.datatype(T.self), Self.mpiOp(op), handle),
            "MPI_Allreduce")
    }

    public func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, into full: UnsafeMutableBufferPointer<T>
    ) throws {
        let n = CollectiveShape.blockCount(
            full: full.count, shard: shard.count, worldSize: worldSize,
            "MPI_Allgather")
        let type = Self.datatype(T.self)
        let count = try count32(n, "MPI_Allgather")
        _ = try count32(full.count, "MPI_Allgather")
        try check(
            MPI_Allgather(shard.baseAddress, count, type, full.baseAddress, count, type, handle),
            "MPI_Allgather")
    }

    public func allGather<T: CommScalar>(inPlace full: UnsafeMutableBufferPointer<T>) throws {
        let n = CollectiveShape.inPlaceBlock(full: full.count, worldSize: worldSize, "MPI_Allgather")
        let type = Self.datatype(T.self)
        try check(
            MPI_Allgather(
                dino_mpi_in_place(), 0, type, full.baseAddress,
                try count32(n, "MPI_Allgather"), type, handle), "MPI_Allgather")
    }

    public func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, counts: [Int], into full: UnsafeMutableBufferPointer<T>
    ) throws {
        precondition(counts.count == worldSize, "MPI_Allgatherv: \(counts.count) counts for \(worldSize) ranks")
        precondition(
            counts[rank] == shard.count, "MPI_Allgatherv: shard has \(shard.count), counts say \(counts[rank])")
        precondition(counts.reduce(0, +) == full.count, "MPI_Allgatherv: full buffer does not hold the sum of counts")
        let counts32 = try counts.map { try count32($0, "MPI_Allgatherv") }
        var displacements = [Int32](repeating: 0, count: worldSize)
        var offset = 0
        for r in 0..<worldSize {
            displacements[r] = try count32(offset, "MPI_Allgatherv")
            offset += counts[r]
        }
        let type = Self.datatype(T.self)
        try check(
            MPI_Allgatherv(
                shard.baseAddress, counts32[rank], type, full.baseAddress, counts32,
                displacements, type, handle), "MPI_Allgatherv")
    }

    public func reduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws {
        let n = CollectiveShape.blockCount(
            full: full.count, shard: shard.count, worldSize: worldSize,
            "MPI_Reduce_scatter_block")
        _ = try count32(full.count, "MPI_Reduce_scatter_block")
        try check(
            MPI_Reduce_scatter_block(
                full.baseAddress, shard.baseAddress,
                try count32(n, "MPI_Reduce_scatter_block"), Self.datatype(T.self), Self.mpiOp(op), handle),
            "MPI_Reduce_scatter_block")
    }

    public func reduceScatter<T: CommScalar>(inPlace full: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        let n = CollectiveShape.inPlaceBlock(
            full: full.count, worldSize: worldSize,
            "MPI_Reduce_scatter_block")
        try check(
            MPI_Reduce_scatter_block(
                dino_mpi_in_place(), full.baseAddress,
                try count32(n, "MPI_Reduce_scatter_block"), Self.datatype(T.self), Self.mpiOp(op), handle),
            "MPI_Reduce_scatter_block")
        // MPI leaves the block at the front; our contract puts it at the rank's own offset.
        if rank > 0, n > 0, let base = full.baseAddress {
            (base + rank * n).update(from: base, count: n)
        }
    }

    // MARK: - Nonblocking collectives

    public func startBroadcast<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int
    ) throws
        -> CommRequest
    {
        try checkRoot(root, "MPI_Ibcast")
        let count = try count32(buffer.count, "MPI_Ibcast")
        return try start("MPI_Ibcast") { request in
            MPI_Ibcast(buffer.baseAddress, count, Self.datatype(T.self), Int32(root), handle, request)
        }
    }

    public func startAllReduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws
        -> CommRequest
    {
        let count = try count32(buffer.count, "MPI_Iallreduce")
        return try start("MPI_Iallreduce") { request in
            MPI_Iallreduce(
                dino_mpi_in_place(), buffer.baseAddress, count, Self.datatype(T.self),
                Self.mpiOp(op), handle, request)
        }
    }

    public func startAllGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, into full: UnsafeMutableBufferPointer<T>
    ) throws -> CommRequest {
        let n = CollectiveShape.blockCount(
            full: full.count, shard: shard.count, worldSize: worldSize,
            "MPI_Iallgather")
        let count = try count32(n, "MPI_Iallgather")
        _ = try count32(full.count, "MPI_Iallgather")
        let type = Self.datatype(T.self)
        return try start("MPI_Iallgather") { request in
            MPI_Iallgather(shard.baseAddress, count, type, full.baseAddress, count, type, handle, request)
        }
    }

    public func startReduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws -> CommRequest {
        let n = CollectiveShape.blockCount(
            full: full.count, shard: shard.count, worldSize: worldSize,
            "MPI_Ireduce_scatter_block")
        let count = try count32(n, "MPI_Ireduce_scatter_block")
        _ = try count32(full.count, "MPI_Ireduce_scatter_block")
        return try start("MPI_Ireduce_scatter_block") { request in
            MPI_Ireduce_scatter_block(
                full.baseAddress, shard.baseAddress, count, Self.datatype(T.self),
                Self.mpiOp(op), handle, request)
        }
    }

    public func progress() throws {
        var index = 0
        while index < pending.count {
            if try pending[index].test() {
                pending.swapAt(index, pending.count - 1)
                pending.removeLast()
            } else {
                index += 1
            }
        }
    }

    // MARK: - Sub-communicators and failure

    public func split(color: Int, key: Int) throws -> any Communicator {
        guard color >= 0, color <= Int(Int32.max) else {
            throw CommunicatorError.invalidArgument("split color \(color) must be in 0...\(Int32.max)")
        }
        var child: MPI_Comm? = nil
        try check(MPI_Comm_split(handle, Int32(color), Int32(clamping: key), &child), "MPI_Comm_split")
        guard let child else {
            throw CommunicatorError.mpi(
                function: "MPI_Comm_split", code: 0,
                message: "returned no communicator", rank: rank)
        }
        return try MPICommunicator(handle: child, ownsHandle: true)
    }

    public func splitByNode() throws -> any Communicator {
        var child: MPI_Comm? = nil
        try check(
            MPI_Comm_split_type(
                handle, dino_mpi_comm_type_shared(), Int32(rank),
                dino_mpi_info_null(), &child), "MPI_Comm_split_type")
        guard let child else {
            throw CommunicatorError.mpi(
                function: "MPI_Comm_split_type", code: 0,
                message: "returned no communicator", rank: rank)
        }
        return try MPICommunicator(handle: child, ownsHandle: true)
    }

    public func abort(exitCode: Int32) -> Never {
        fflush(nil)
        MPI_Abort(dino_mpi_comm_world(), exitCode)
        exit(exitCode)  // MPI_Abort does not return; this satisfies the type checker.
    }

    // MARK: - Helpers

    private func start(
        _ function: String, _ call: (UnsafeMutablePointer<MPI_Request?>) -> Int32
    ) throws
        -> CommRequest
    {
        let request = MPIRequest(function: function, rank: rank)
        try check(call(&request.handle), function)
        pending.append(request)
        return request
    }

    private func check(_ code: Int32, _ function: String) throws {
        try Self.check(code, function, rank: rank)
    }

    static func check(_ code: Int32, _ function: String, rank: Int) throws {
        guard code != MPI_SUCCESS else { return }
        throw CommunicatorError.mpi(function: function, code: code, message: errorString(code), rank: rank)
    }

    static func errorString(_ code: Int32) -> String {
        var text = [CChar](repeating: 0, count: Int(dino_mpi_max_error_string()) + 1)
        var length: Int32 = 0
        guard MPI_Error_string(code, &text, &length) == MPI_SUCCESS else { return "unknown error" }
        return String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func checkRoot(_ root: Int, _ function: String) throws {
        guard (0..<worldSize).contains(root) else {
            throw CommunicatorError.invalidArgument(
                "[rank \(rank)] \(function): root \(root) is not a rank of this \(worldSize)-rank group")
        }
    }

    private func count32(_ count: Int, _ function: String) throws -> Int32 {
        guard count <= Int(Int32.max) else {
            throw CommunicatorError.invalidArgument(
                "[rank \(rank)] \(function): \(count) elements exceed MPI's 32-bit count; split the buffer")
        }
        return Int32(count)
    }

    private static func datatype<T: CommScalar>(_: T.Type) -> MPI_Datatype? {
        switch T.commElementType {
        case .float32: return dino_mpi_float()
        case .float64: return dino_mpi_double()
        case .int32: return dino_mpi_int32()
        case .int64: return dino_mpi_int64()
        case .uint8: return dino_mpi_uint8()
        case .uint16: return dino_mpi_uint16()
        }
    }

    private static func mpiOp(_ op: ReduceOp) -> MPI_Op? {
        switch op {
        case .sum: return dino_mpi_op_sum()
        case .max: return dino_mpi_op_max()
        case .min: return dino_mpi_op_min()
        }
    }
}

/// An MPI nonblocking collective in flight.
final class MPIRequest: CommRequest {
    var handle: MPI_Request? = dino_mpi_request_null()
    private let function: String
    private let rank: Int
    private var done = false

    init(function: String, rank: Int) {
        self.function = function
        self.rank = rank
    }

    func test() throws -> Bool {
        if done { return true }
        var flag: Int32 = 0
        try MPICommunicator.check(
            MPI_Test(&handle, &flag, dino_mpi_status_ignore()), "MPI_Test(\(function))",
            rank: rank)
        done = flag != 0
        return done
    }

    func wait() throws {
        if done { return }
        try MPICommunicator.check(
            MPI_Wait(&handle, dino_mpi_status_ignore()), "MPI_Wait(\(function))",
            rank: rank)
        done = true
    }
}
