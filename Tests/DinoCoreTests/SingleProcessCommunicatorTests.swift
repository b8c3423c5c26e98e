// The 1-rank communicator: copies where MPI would move data, completed requests, argument checks.

import DinoCore
import Testing

@Suite("single-process communicator")
struct SingleProcessCommunicatorTests {
    let comm = SingleProcessCommunicator()

    @Test("collectives of one rank leave or copy the data unchanged")
    func collectives() throws {
        let input: [Float] = [1, -2, 3.5, 7]
        var buffer = input
        try buffer.withUnsafeMutableBufferPointer { try comm.allReduce($0, op: .sum) }
        #expect(buffer == input)
        var output = [Float](repeating: 0, count: 4)
        try input.withUnsafeBufferPointer { i in
            try output.withUnsafeMutableBufferPointer { try comm.allGather(i, into: $0) }
        }
        #expect(output == input)
        output = [Float](repeating: 0, count: 4)
        try input.withUnsafeBufferPointer { i in
            try output.withUnsafeMutableBufferPointer { try comm.reduceScatter(i, into: $0, op: .max) }
        }
        #expect(output == input)
        output = [Float](repeating: 0, count: 4)
        try input.withUnsafeBufferPointer { i in
            try output.withUnsafeMutableBufferPointer { try comm.allGather(i, counts: [4], into: $0) }
        }
        #expect(output == input)
        #expect(try comm.allReduce(Int64(5), op: .min) == 5)
        #expect(try comm.broadcast(bytes: Array("abc".utf8), root: 0) == Array("abc".utf8))
    }

    @Test("nonblocking requests are complete at once")
    func nonblocking() throws {
        var buffer: [Double] = [1, 2]
        let request = try buffer.withUnsafeMutableBufferPointer { try comm.startAllReduce($0, op: .sum) }
        #expect(try request.test())
        try request.wait()
        let driver = ProgressDriver(comm, intervalMicroseconds: 0)
        try driver.poll()
        try driver.poll()
        #expect(driver.progressCalls == 2)
    }

    @Test("progress polling is throttled by its interval")
    func throttled() throws {
        let driver = ProgressDriver(comm, intervalMicroseconds: 10_000_000)  // 10 s
        for _ in 0..<1000 { try driver.poll() }
        #expect(driver.progressCalls == 1)
    }

    @Test("a broadcast root outside the group is an error that names the root")
    func badRoot() {
        var buffer: [Float] = [0]
        #expect(throws: CommunicatorError.self) {
            try buffer.withUnsafeMutableBufferPointer { try comm.broadcast($0, root: 1) }
        }
    }

    @Test("group splits need a group size dividing the world")
    func splits() throws {
        #expect(try comm.split(groupSize: 1).worldSize == 1)
        #expect(throws: CommunicatorError.self) { try comm.split(groupSize: 2) }
        #expect(try comm.splitByNode().rank == 0)
    }

    @Test("padding rounds up to a multiple of the rank count")
    func padding() {
        #expect(CollectiveShape.padded(1001, toMultipleOf: 8) == 1008)
        #expect(CollectiveShape.padded(1000, toMultipleOf: 8) == 1000)
        #expect(CollectiveShape.padded(0, toMultipleOf: 3) == 0)
        #expect(CollectiveShape.padded(1, toMultipleOf: 1) == 1)
    }

    @Test("MPI errors name the function and the rank")
    func errorText() {
        let error = CommunicatorError.mpi(
            function: "MPI_Allreduce", code: 5, message: "MPI_ERR_COUNT: invalid count", rank: 3)
        #expect("\(error)" == "[rank 3] MPI_Allreduce failed (MPI error 5): MPI_ERR_COUNT: invalid count")
    }
}
