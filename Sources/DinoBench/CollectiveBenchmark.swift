// Bandwidth of the collectives the sharder uses, over a sweep of message sizes, at the current
// world size. Sizes are bytes of the full (unsharded) buffer. Each iteration starts after a barrier;
// its time is the slowest rank's, and the reported time is the median over iterations.
// Bus bandwidth follows the usual convention, so numbers compare across rank counts:
//   allgather, reduce-scatter: busbw = algbw * (n-1)/n      allreduce: busbw = algbw * 2(n-1)/n
// with algbw = full-buffer bytes / time. One rank moves no data: its bus bandwidth is 0.

import DinoCore

/// One measured (collective, size) point.
public struct CollectiveBandwidth: Codable, Sendable {
    public var collective: String
    public var bytes: Int
    public var elements: Int
    public var ranks: Int
    public var iterations: Int
    public var timeMicroseconds: Double
    public var algorithmBandwidthGBps: Double
    public var busBandwidthGBps: Double

    enum CodingKeys: String, CodingKey {
        case collective, bytes, elements, ranks, iterations
        case timeMicroseconds = "time_us"
        case algorithmBandwidthGBps = "algbw_gbps"
        case busBandwidthGBps = "busbw_gbps"
    }
}

/// Measures allgather, reduce-scatter and allreduce bandwidth.
public struct CollectiveBenchmark {
    public static let collectives = ["allgather", "reducescatter", "allreduce"]

    public var minBytes = 4 << 10
    public var maxBytes = 64 << 20
    /// Stop repeating a size once this many bytes have been moved (bounds the large sizes' time).
    public var bytesPerSize = 512 << 20
    public var minIterations = 5
    public var maxIterations = 50
    public var warmup = 2

    public init() {}

    /// The full-buffer sizes of the sweep: minBytes, 4x, 16x, ... up to maxBytes.
    public var sizes: [Int] {
        var sizes: [Int] = []
        var bytes = max(4, minBytes)
        while bytes <= maxBytes {
            sizes.append(bytes)
            bytes *= 4
        }
        return sizes
    }

    /// Runs the sweep on every rank; every rank returns the same records.
    public func run(on comm: any Communicator) throws -> [CollectiveBandwidth] {
        var records: [CollectiveBandwidth] = []
        let world = comm.worldSize
        for collective in Self.collectives {
            for bytes in sizes {
                let elements = CollectiveShape.padded(max(1, bytes / 4), toMultipleOf: world)
                let block = elements / world
                var full = [Float](repeating: 1, count: elements)
                var shard = [Float](repeating: 1, count: block)
                let iterations = min(maxIterations, max(minIterations, bytesPerSize / max(1, elements * 4)))
                var times = [Double](repeating: 0, count: iterations)
                try full.withUnsafeMutableBufferPointer { fullPointer in
                    try shard.withUnsafeMutableBufferPointer { shardPointer in
                        for iteration in -warmup..<iterations {
                            try comm.barrier()
                            let start = MonotonicClock.seconds()
                            switch collective {
                            case "allgather":
                                try comm.allGather(UnsafeBufferPointer(shardPointer), into: fullPointer)
                            case "reducescatter":
                                try comm.reduceScatter(UnsafeBufferPointer(fullPointer), into: shardPointer, op: .sum)
                            default:
                                try comm.allReduce(fullPointer, op: .sum)
                            }
                            let elapsed = MonotonicClock.seconds() - start
                            if iteration >= 0 { times[iteration] = elapsed }
                            // Sums grow without bound otherwise; keep values finite and cheap.
                            if collective != "allgather" { fullPointer.update(repeating: 1) }
                        }
                    }
                }
                try times.withUnsafeMutableBufferPointer { try comm.allReduce($0, op: .max) }
                let time = Statistics.median(times)
                let algorithmBandwidth = Double(elements * 4) / time / 1e9
                let factor =
                    collective == "allreduce"
                    ? 2 * Double(world - 1) / Double(world) : Double(world - 1) / Double(world)
                records.append(
                    CollectiveBandwidth(
                        collective: collective, bytes: elements * 4, elements: elements,
                        ranks: world, iterations: iterations, timeMicroseconds: time * 1e6,
                        algorithmBandwidthGBps: algorithmBandwidth, busBandwidthGBps: algorithmBandwidth * factor))
            }
        }
        return records
    }

    /// A fixed-width table of `records`.
    public static func table(_ records: [CollectiveBandwidth]) -> String {
        func pad(_ text: String, _ width: Int) -> String {
            String(repeating: " ", count: max(0, width - text.count)) + text
        }
        func fixed(_ value: Double, _ digits: Int) -> String {
            let scale = pow10(digits)
            let rounded = (value * scale).rounded() / scale
            var text = "\(rounded)"
            if let dot = text.firstIndex(of: ".") {
                let decimals = text.distance(from: dot, to: text.endIndex) - 1
                if decimals < digits { text += String(repeating: "0", count: digits - decimals) }
            }
            return text
        }
        var lines = [
            pad("collective", 14) + pad("bytes", 12) + pad("iters", 7) + pad("time (us)", 13)
                + pad("algbw (GB/s)", 14) + pad("busbw (GB/s)", 14)
        ]
        for r in records {
            lines.append(
                pad(r.collective, 14) + pad(String(r.bytes), 12) + pad(String(r.iterations), 7)
                    + pad(fixed(r.timeMicroseconds, 1), 13) + pad(fixed(r.algorithmBandwidthGBps, 3), 14)
                    + pad(fixed(r.busBandwidthGBps, 3), 14))
        }
        return lines.joined(separator: "\n")
    }

    private static func pow10(_ n: Int) -> Double { (0..<n).reduce(1.0) { r, _ in r * 10 } }
}
