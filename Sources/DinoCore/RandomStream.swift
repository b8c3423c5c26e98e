// Counter-based random numbers: every draw is a pure function of (key, index), where the key is
// mixed from (seed, purpose, and whatever coordinates the caller names: iteration, block, global
// sample index, crop). No generator state is carried between draws, so results do not depend on
// thread timing, rank count or how many draws happened before, and a resumed run draws the same.
// Mixing: SplitMix64's finaliser (a bijective 64-bit avalanche), applied per component.

import Foundation

/// What a random draw is for; part of every key, so streams of different purposes never overlap.
public enum RandomPurpose: UInt64, Sendable {
    case parameterInit = 1
    case dropPath = 2
    case masking = 3
    case augmentation = 4
    case sampler = 5
    case synthesis = 6
    case linearProbe = 7
    case analysis = 8
    case curation = 9
    case test = 99
}

/// A keyed stream of random numbers indexed by a counter.
public struct RandomStream: Sendable, Equatable {
    public let key: UInt64

    /// The stream for `purpose` under `seed`, refined by `coordinates` (iteration, block, sample, ...).
    public init(seed: UInt64, purpose: RandomPurpose, _ coordinates: UInt64...) {
        var key = Self.mix(seed ^ 0x243F_6A88_85A3_08D3)
        key = Self.mix(key ^ purpose.rawValue)
        for c in coordinates { key = Self.mix(key ^ Self.mix(c &+ 0x9E37_79B9_7F4A_7C15)) }
        self.key = key
    }

    /// A sub-stream refined by more coordinates.
    public func child(_ coordinates: UInt64...) -> RandomStream {
        var key = self.key
        for c in coordinates { key = Self.mix(key ^ Self.mix(c &+ 0x9E37_79B9_7F4A_7C15)) }
        return RandomStream(key: key)
    }

    private init(key: UInt64) { self.key = key }

    /// 64 random bits at `index`.
    @inlinable
    public func bits(_ index: UInt64) -> UInt64 {
        Self.mix(key &+ index &* 0x9E37_79B9_7F4A_7C15)
    }

    /// A uniform draw in [0, 1) at `index` (53 random bits).
    @inlinable
    public func uniform(_ index: UInt64) -> Double {
        Double(bits(index) >> 11) * 0x1p-53
    }

    /// A standard normal draw at `index` (Box-Muller on the uniforms at 2 index and 2 index + 1).
    @inlinable
    public func normal(_ index: UInt64) -> Double {
        let u1 = max(uniform(2 &* index), 0x1p-53)
        let u2 = uniform(2 &* index &+ 1)
        return (-2 * Self.logarithm(u1)).squareRoot() * Self.cosine(2 * Double.pi * u2)
    }

    /// A normal draw with standard deviation `std`, truncated to [lower, upper] by redrawing.
    public func truncatedNormal(_ index: UInt64, std: Double, lower: Double, upper: Double) -> Double {
        var attempt: UInt64 = 0
        while true {
            let value = std * child(attempt).normal(index)
            if value >= lower && value <= upper { return value }
            attempt += 1
        }
    }

    /// The first `count` of a random permutation of 0..<n (by sorting on random keys), in sorted order.
    public func subset(of n: Int, count: Int) -> [Int] {
        let order = (0..<n).sorted { bits(UInt64($0)) < bits(UInt64($1)) }
        return Array(order.prefix(count)).sorted()
    }

    @inlinable
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @usableFromInline static func logarithm(_ x: Double) -> Double { Foundation.log(x) }
    @usableFromInline static func cosine(_ x: Double) -> Double { Foundation.cos(x) }
}
