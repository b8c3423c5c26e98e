// Deterministic pseudo-random numbers for test inputs (SplitMix64), so failures reproduce.

/// A seeded generator of test data.
public struct TestRandom: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A standard normal sample (Box-Muller).
    public mutating func normal() -> Double {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// `count` standard normal samples times `scale`.
    public mutating func normals(_ count: Int, scale: Double = 1) -> [Double] {
        (0..<count).map { _ in normal() * scale }
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Normwise error of `value` against `reference`: max |difference| / max |reference|.
public func normwiseError<A: BinaryFloatingPoint>(_ value: [A], _ reference: [Double]) -> Double {
    precondition(value.count == reference.count, "compared arrays differ in length")
    var worst = 0.0, scale = 0.0
    for (v, r) in zip(value, reference) {
        worst = max(worst, abs(Double(v) - r))
        scale = max(scale, abs(r))
    }
    return scale == 0 ? worst : worst / scale
}

/// Worst disagreement between `analytic` gradients and central finite differences of `loss` at
/// `x`, over the entries `indices` (all when nil), as max(|numeric - analytic| - floor, 0) /
/// max(1, |analytic|). `floor` = 4 |loss| 2^-52 / epsilon is the rounding noise of the difference
/// quotient itself, so the measure stays meaningful when the loss sums many terms; truncation error
/// is ~epsilon^2 times the third derivative, ~1e-12 for these smooth functions.
public func finiteDifferenceError(
    at x: [Double], analytic: [Double], indices: [Int]? = nil,
    epsilon: Double = 1e-6, _ loss: ([Double]) throws -> Double
) rethrows -> Double {
    precondition(x.count == analytic.count, "gradient and input sizes differ")
    var worst = 0.0
    for i in indices ?? Array(x.indices) {
        var plus = x, minus = x
        plus[i] += epsilon
        minus[i] -= epsilon
        let high = try loss(plus), low = try loss(minus)
        let numeric = (high - low) / (2 * epsilon)
        let floor = 4 * max(abs(high), abs(low)) * Double.ulpOfOne / epsilon
        worst = max(worst, max(0, abs(numeric - analytic[i]) - floor) / max(1, abs(analytic[i])))
    }
    return worst
}

/// `sum_i a_i b_i` in double precision.
public func dotProduct<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(_ a: [A], _ b: [B]) -> Double {
    zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) }
}
