// Checks every collective of a Communicator against values each rank computes serially: the data
// of rank r at index i is a small integer, so float sums are exact and results must match bitwise.
// Covers blocking and in-place forms, sizes no rank count divides, variable-count gathers, two
// nonblocking collectives in flight while the rank runs GEMMs (progress driven by polling), and
// sub-communicators. Every rank runs the same sequence; failures are counted over all ranks.

import DinoCore
import DinoKernels
import DinoModel
import DinoTraining
import Foundation

/// Runs the collective checks and reports how many passed and which failed.
public struct CollectiveSelfCheck {
    public struct Report: Sendable {
        public var passed = 0
        public var failures: [String] = []
    }

    private let comm: any Communicator
    private var report = Report()

    public init(_ communicator: any Communicator) {
        comm = communicator
    }

    /// The value rank `rank` contributes at index `index` (an integer in -50...50).
    @inline(__always)
    static func contribution(rank: Int, index: Int) -> Double {
        Double((rank &* 7 &+ index &* 13) % 101 - 50)
    }

    /// Runs every check; the returned report is this rank's view (failures are per rank).
    public mutating func run() throws -> Report {
        let sizes = [1, 7, 1001, 65_537]
        try comm.barrier()
        for count in sizes {
            for root in Set([0, comm.worldSize / 2, comm.worldSize - 1]).sorted() {
                try checkBroadcast(Float.self, count: count, root: root)
            }
            for op in ReduceOp.allCases {
                try checkAllReduce(Float.self, count: count, op: op)
                try checkAllReduce(Double.self, count: count, op: op)
                try checkAllReduce(Int64.self, count: count, op: op)
            }
        }
        for block in [1, 3, 1001, 16_411] {
            try checkAllGather(Float.self, block: block)
            try checkAllGather(Int64.self, block: block)
            for op in ReduceOp.allCases { try checkReduceScatter(Float.self, block: block, op: op) }
            try checkReduceScatter(Double.self, block: block, op: .sum)
        }
        try checkVariableAllGather()
        try checkPaddedUnitRoundTrip(count: 1001)
        try checkOverlappedNonblocking(block: 65_536)
        try checkSubCommunicators()
        try checkSinkhornAcrossRanks()
        return report
    }

    // MARK: - Checks

    private mutating func record(_ ok: Bool, _ name: String) {
        if ok { report.passed += 1 } else { report.failures.append(name) }
    }

    private func values<T: CommScalar>(_: T.Type, rank: Int, count: Int, offset: Int = 0) -> [T] {
        (0..<count).map { convert(Self.contribution(rank: rank, index: offset + $0)) }
    }

    private func convert<T: CommScalar>(_ value: Double) -> T { T(value) }

    private func expectedReduction<T: CommScalar>(_: T.Type, count: Int, offset: Int, op: ReduceOp) -> [T] {
        (0..<count).map { i in
            let all = (0..<comm.worldSize).map { Self.contribution(rank: $0, index: offset + i) }
            switch op {
            case .sum: return convert(all.reduce(0, +))
            case .max: return convert(all.max() ?? 0)
            case .min: return convert(all.min() ?? 0)
            }
        }
    }

    private mutating func checkBroadcast<T: CommScalar>(_: T.Type, count: Int, root: Int) throws {
        var buffer = values(T.self, rank: comm.rank, count: count)
        try buffer.withUnsafeMutableBufferPointer { try comm.broadcast($0, root: root) }
        record(buffer == values(T.self, rank: root, count: count), "broadcast \(T.self) count \(count) root \(root)")
    }

    private mutating func checkAllReduce<T: CommScalar>(_: T.Type, count: Int, op: ReduceOp) throws {
        let expected = expectedReduction(T.self, count: count, offset: 0, op: op)
        var inPlace = values(T.self, rank: comm.rank, count: count)
        try inPlace.withUnsafeMutableBufferPointer { try comm.allReduce($0, op: op) }
        record(inPlace == expected, "allReduce in place \(op) \(T.self) count \(count)")
        let input = values(T.self, rank: comm.rank, count: count)
        var output = [T](repeating: 0, count: count)
        try input.withUnsafeBufferPointer { source in
            try output.withUnsafeMutableBufferPointer { try comm.allReduce(source, into: $0, op: op) }
        }
        record(output == expected, "allReduce \(op) \(T.self) count \(count)")
    }

    private mutating func checkAllGather<T: CommScalar>(_: T.Type, block: Int) throws {
        let world = comm.worldSize
        let expected = (0..<world).flatMap { values(T.self, rank: $0, count: block) }
        let shard = values(T.self, rank: comm.rank, count: block)
        var full = [T](repeating: 0, count: block * world)
        try shard.withUnsafeBufferPointer { source in
            try full.withUnsafeMutableBufferPointer { try comm.allGather(source, into: $0) }
        }
        record(full == expected, "allGather \(T.self) block \(block)")

        var inPlace = [T](repeating: 0, count: block * world)
        inPlace.replaceSubrange(comm.rank * block..<(comm.rank + 1) * block, with: shard)
        try inPlace.withUnsafeMutableBufferPointer { try comm.allGather(inPlace: $0) }
        record(inPlace == expected, "allGather in place \(T.self) block \(block)")
    }

    private mutating func checkReduceScatter<T: CommScalar>(_: T.Type, block: Int, op: ReduceOp) throws {
        let world = comm.worldSize
        let full = values(T.self, rank: comm.rank, count: block * world)
        let expected = expectedReduction(T.self, count: block, offset: comm.rank * block, op: op)
        var shard = [T](repeating: 0, count: block)
        try full.withUnsafeBufferPointer { source in
            try shard.withUnsafeMutableBufferPointer { try comm.reduceScatter(source, into: $0, op: op) }
        }
        record(shard == expected, "reduceScatter \(op) \(T.self) block \(block)")

        var inPlace = full
        try inPlace.withUnsafeMutableBufferPointer { try comm.reduceScatter(inPlace: $0, op: op) }
        let mine = Array(inPlace[comm.rank * block..<(comm.rank + 1) * block])
        record(mine == expected, "reduceScatter in place \(op) \(T.self) block \(block)")
    }

    private mutating func checkVariableAllGather() throws {
        let counts = (0..<comm.worldSize).map { ($0 * 5 + 3) % 11 }  // includes empty shards
        let offsets = counts.indices.map { counts[..<$0].reduce(0, +) }
        let shard = values(Float.self, rank: comm.rank, count: counts[comm.rank], offset: offsets[comm.rank])
        var full = [Float](repeating: .nan, count: counts.reduce(0, +))
        try shard.withUnsafeBufferPointer { source in
            try full.withUnsafeMutableBufferPointer { try comm.allGather(source, counts: counts, into: $0) }
        }
        let expected = (0..<comm.worldSize).flatMap {
            values(Float.self, rank: $0, count: counts[$0], offset: offsets[$0])
        }
        record(full == expected, "allGather with counts \(counts)")
    }

    /// The sharder's pattern: a unit padded to a multiple of the rank count, gradients
    /// reduce-scattered to shards, then shards all-gathered back: every rank ends with the full sum.
    private mutating func checkPaddedUnitRoundTrip(count: Int) throws {
        let padded = CollectiveShape.padded(count, toMultipleOf: comm.worldSize)
        let block = padded / comm.worldSize
        var gradient = values(Float.self, rank: comm.rank, count: count) + [Float](repeating: 0, count: padded - count)
        try gradient.withUnsafeMutableBufferPointer { try comm.reduceScatter(inPlace: $0, op: .sum) }
        let shard = Array(gradient[comm.rank * block..<(comm.rank + 1) * block])
        var full = [Float](repeating: 0, count: padded)
        try shard.withUnsafeBufferPointer { source in
            try full.withUnsafeMutableBufferPointer { try comm.allGather(source, into: $0) }
        }
        let expected =
            expectedReduction(Float.self, count: count, offset: 0, op: .sum)
            + [Float](repeating: 0, count: padded - count)
        record(full == expected, "padded unit of \(count) over \(comm.worldSize) ranks")
    }

    /// Two collectives in flight (gather of the next unit, reduce-scatter of the previous one) while
    /// the rank multiplies matrices and polls for progress, as the sharder overlaps them.
    private mutating func checkOverlappedNonblocking(block: Int) throws {
        let world = comm.worldSize
        let shard = values(Float.self, rank: comm.rank, count: block)
        var gathered = [Float](repeating: 0, count: block * world)
        let gradient = values(Float.self, rank: comm.rank, count: block * world)
        var reduced = [Float](repeating: 0, count: block)
        var summed = values(Float.self, rank: comm.rank, count: 4099)
        var broadcasted = values(Float.self, rank: comm.rank, count: 513)

        let n = 96
        let a = (0..<(n * n)).map { Float(($0 * 31) % 17) * 0.125 }
        var reference = [Float](repeating: 0, count: n * n)
        multiply(a, into: &reference, n: n)

        let driver = ProgressDriver(comm, intervalMicroseconds: 0)
        var product = [Float](repeating: 0, count: n * n)
        try shard.withUnsafeBufferPointer { shardPointer in
            try gathered.withUnsafeMutableBufferPointer { gatheredPointer in
                try gradient.withUnsafeBufferPointer { gradientPointer in
                    try reduced.withUnsafeMutableBufferPointer { reducedPointer in
                        try summed.withUnsafeMutableBufferPointer { summedPointer in
                            try broadcasted.withUnsafeMutableBufferPointer { broadcastPointer in
                                let requests: [CommRequest] = [
                                    try comm.startAllGather(shardPointer, into: gatheredPointer),
                                    try comm.startReduceScatter(gradientPointer, into: reducedPointer, op: .sum),
                                    try comm.startAllReduce(summedPointer, op: .max),
                                    try comm.startBroadcast(broadcastPointer, root: world - 1),
                                ]
                                for _ in 0..<20 {
                                    multiply(a, into: &product, n: n)
                                    try driver.poll()
                                }
                                for request in requests { try request.wait() }
                                for request in requests { record(try request.test(), "request complete after wait") }
                            }
                        }
                    }
                }
            }
        }
        record(product == reference, "GEMM result unchanged by overlapped communication")
        record(
            gathered == (0..<world).flatMap { values(Float.self, rank: $0, count: block) },
            "startAllGather overlapped with compute, block \(block)")
        record(
            reduced == expectedReduction(Float.self, count: block, offset: comm.rank * block, op: .sum),
            "startReduceScatter overlapped with compute, block \(block)")
        record(
            summed == expectedReduction(Float.self, count: 4099, offset: 0, op: .max),
            "startAllReduce max overlapped with compute")
        record(
            broadcasted == values(Float.self, rank: world - 1, count: 513),
            "startBroadcast overlapped with compute")
        record(driver.progressCalls == 20, "progress polled on every GEMM (\(driver.progressCalls) of 20)")
    }

    private func multiply(_ a: [Float], into c: inout [Float], n: Int) {
        a.withUnsafeBufferPointer { ap in
            c.withUnsafeMutableBufferPointer { cp in
                guard let abase = ap.baseAddress, let cbase = cp.baseAddress else { return }
                BLAS.sgemm(
                    transposeA: false, transposeB: true, m: n, n: n, k: n, a: abase, lda: n,
                    b: abase, ldb: n, c: cbase, ldc: n)
            }
        }
    }

    private mutating func checkSubCommunicators() throws {
        let world = comm.worldSize
        var groupSizes = [1, world]
        if world % 2 == 0 && world > 2 { groupSizes.append(2) }
        for groupSize in groupSizes {
            let group = try comm.split(groupSize: groupSize)
            let first = comm.rank / groupSize * groupSize
            let sum = try group.allReduce(Int64(comm.rank), op: .sum)
            let expected = Int64((first..<first + groupSize).reduce(0, +))
            record(
                group.worldSize == groupSize && group.rank == comm.rank % groupSize && sum == expected,
                "split into groups of \(groupSize)")
        }
        // Across groups: the ranks with the same position in each group (hybrid sharding's replicas).
        if world % 2 == 0 {
            let replicas = try comm.split(color: comm.rank % 2, key: comm.rank)
            let sum = try replicas.allReduce(Int64(comm.rank), op: .sum)
            let expected = Int64(stride(from: comm.rank % 2, to: world, by: 2).reduce(0, +))
            record(replicas.worldSize == world / 2 && sum == expected, "split across groups (replicas)")
        }
        let node = try comm.splitByNode()
        let nodeRanks = try node.allReduce(Int64(1), op: .sum)
        let totalOverNodes = try comm.allReduce(node.rank == 0 ? nodeRanks : 0, op: .sum)
        record(nodeRanks == Int64(node.worldSize) && totalOverNodes == Int64(world), "split by node")
        do {
            var scratch: [Float] = [0]
            try scratch.withUnsafeMutableBufferPointer { try comm.broadcast($0, root: world) }
            record(false, "broadcast from a rank outside the group is rejected")
        } catch let error as CommunicatorError {
            record("\(error)".contains("root \(world)"), "broadcast root error names the root: \(error)")
        }
    }

    /// Sinkhorn-Knopp over the rows of all ranks (unequal row counts, as iBOT's masked tokens) equals
    /// Sinkhorn-Knopp of one process over the concatenated rows, within 1e-6.
    private mutating func checkSinkhornAcrossRanks() throws {
        let k = 37, world = comm.worldSize
        let counts = (0..<world).map { 3 + $0 % 2 }
        let first = counts[..<comm.rank].reduce(0, +), total = counts.reduce(0, +)
        func logit(_ row: Int, _ c: Int) -> Float { Float(sin(Double(row * 131 + c * 17) * 0.37)) * 0.8 }
        let all = (0..<total).flatMap { r in (0..<k).map { logit(r, $0) } }
        let mine = Array(all[(first * k)..<((first + counts[comm.rank]) * k)])
        var distributed = [Float](repeating: 0, count: mine.count), whole = [Float](repeating: 0, count: all.count)
        var scratch = [Double](repeating: 0, count: k)
        try TeacherTargets.sinkhornKnopp(
            out: &distributed, logits: mine, rows: counts[comm.rank], prototypes: k,
            temperature: 0.07, totalRows: total, reducer: CommunicatorRowReducer(comm),
            scratch: &scratch)
        try TeacherTargets.sinkhornKnopp(
            out: &whole, logits: all, rows: total, prototypes: k, temperature: 0.07,
            totalRows: total, reducer: LocalRowReducer(), scratch: &scratch)
        let reference = whole[(first * k)..<((first + counts[comm.rank]) * k)]
        let worst = zip(distributed, reference).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
        record(worst <= 1e-6, "Sinkhorn-Knopp over \(world) ranks vs one process: max difference \(worst)")
    }
}
