// Resampling of the position embedding's patch grid to a crop's grid, as the official
// interpolate_pos_encoding (PyTorch bicubic, align_corners=False), separable by axis:
//   out[i, j, :] = sum_a sum_b Wy[i, a] Wx[j, b] grid[a, b, :]     grid [M, M, D] -> out [gh, gw, D]
// Each axis' weights W [target, M]:
//   non-antialiased (default): cubic convolution A = -0.75, source = (d + 0.5) / s - 0.5, taps
//     floor(source) - 1 ... + 2 clamped to [0, M - 1], no renormalisation;
//   antialiased (register models): A = -0.5, support 2 max(1, 1/s), weights normalised to sum 1.
// s = (target + offset) / M when interpolate_offset != 0, else target / M. The CLS entry is copied.
// The official code returns the embedding unchanged when the crop's grid equals the stored one.
// Backward is the transpose: dGrid[a, b] += sum_i sum_j Wy[i, a] Wx[j, b] dOut[i, j].

import DinoKernels

/// Bicubic interpolation weights for one axis.
public struct InterpolationWeights: Sendable, Equatable {
    public let source: Int
    public let target: Int
    /// [target, source], row-major.
    public let weights: [Double]

    public init(source m: Int, target: Int, offset: Double, antialias: Bool) {
        self.source = m
        self.target = target
        let scaleFactor = offset != 0 ? (Double(target) + offset) / Double(m) : Double(target) / Double(m)
        let inverse = 1 / scaleFactor
        var w = [Double](repeating: 0, count: target * m)
        if !antialias {
            let a = -0.75
            func near(_ x: Double) -> Double { ((a + 2) * x - (a + 3)) * x * x + 1 }
            func far(_ x: Double) -> Double { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
            for d in 0..<target {
                let real = inverse * (Double(d) + 0.5) - 0.5
                let base = Int(real.rounded(.down))
                let t = real - Double(base)
                let taps = [far(t + 1), near(t), near(1 - t), far(2 - t)]
                for k in 0..<4 {
                    let index = Swift.min(Swift.max(base - 1 + k, 0), m - 1)
                    w[d * m + index] += taps[k]
                }
            }
        } else {
            let a = -0.5
            func filter(_ value: Double) -> Double {
                let x = abs(value)
                if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
                if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
                return 0
            }
            let support = inverse >= 1 ? 2 * inverse : 2
            let invScale = inverse >= 1 ? 1 / inverse : 1
            for d in 0..<target {
                let center = inverse * (Double(d) + 0.5)
                let lower = Swift.max(Int(center - support + 0.5), 0)
                let upper = Swift.min(Int(center + support + 0.5), m)
                var taps: [Double] = []
                for j in lower..<upper { taps.append(filter((Double(j) - center + 0.5) * invScale)) }
                let total = taps.reduce(0, +)
                for (k, j) in (lower..<upper).enumerated() { w[d * m + j] = total != 0 ? taps[k] / total : 0 }
            }
        }
        weights = w
    }
}

/// The position embedding of one crop grid, forward and backward.
public struct PositionInterpolation: Sendable {
    public let grid: Int
    public let rows: InterpolationWeights
    public let columns: InterpolationWeights
    /// True when the crop's grid is the stored one: the embedding is used as it is.
    public let isIdentity: Bool

    public init(grid m: Int, targetRows: Int, targetColumns: Int, offset: Double, antialias: Bool) {
        grid = m
        isIdentity = targetRows == m && targetColumns == m
        rows = InterpolationWeights(source: m, target: targetRows, offset: offset, antialias: antialias)
        columns = InterpolationWeights(source: m, target: targetColumns, offset: offset, antialias: antialias)
    }

    /// out [gh * gw, D] from the patch grid [M * M, D] (the embedding without its CLS row).
    public func forward<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, grid source: UnsafePointer<T>, channels d: Int,
        scratch: UnsafeMutablePointer<T>
    ) {
        let m = grid, gh = rows.target, gw = columns.target
        if isIdentity {
            out.update(from: source, count: m * m * d)
            return
        }
        // Pass 1 along columns: scratch [M, gw, D].
        scratch.setToZero(count: m * gw * d)
        for a in 0..<m {
            for j in 0..<gw {
                let target = scratch + (a * gw + j) * d
                for b in 0..<m {
                    let weight = columns.weights[j * m + b]
                    if weight != 0 { T.linearCombination(target, target, 1, source + (a * m + b) * d, T(weight), d) }
                }
            }
        }
        // Pass 2 along rows: out [gh, gw, D].
        out.setToZero(count: gh * gw * d)
        for i in 0..<gh {
            for a in 0..<m {
                let weight = rows.weights[i * m + a]
                if weight == 0 { continue }
                for j in 0..<gw {
                    let target = out + (i * gw + j) * d
                    T.linearCombination(target, target, 1, scratch + (a * gw + j) * d, T(weight), d)
                }
            }
        }
    }

    /// dGrid [M * M, D] += the transpose of `forward` applied to dOut [gh * gw, D].
    public func backward<T: KernelScalar>(
        dGrid: UnsafeMutablePointer<T>, dOut: UnsafePointer<T>, channels d: Int,
        scratch: UnsafeMutablePointer<T>
    ) {
        let m = grid, gh = rows.target, gw = columns.target
        if isIdentity {
            T.add(dGrid, dOut, m * m * d)
            return
        }
        scratch.setToZero(count: m * gw * d)
        for i in 0..<gh {
            for a in 0..<m {
                let weight = rows.weights[i * m + a]
                if weight == 0 { continue }
                for j in 0..<gw {
                    let target = scratch + (a * gw + j) * d
                    T.linearCombination(target, target, 1, dOut + (i * gw + j) * d, T(weight), d)
                }
            }
        }
        for a in 0..<m {
            for j in 0..<gw {
                for b in 0..<m {
                    let weight = columns.weights[j * m + b]
                    if weight == 0 { continue }
                    let target = dGrid + (a * m + b) * d
                    T.linearCombination(target, target, 1, scratch + (a * gw + j) * d, T(weight), d)
                }
            }
        }
    }
}

/// A position embedding brought to another crop grid once (for an export at another image size, weights
/// of another grid, or a run continued at another crop size), exactly as interpolate_pos_encoding
/// would resample it for every forward at that size; computed in float64.
public struct PositionResampling: Sendable, Equatable {
    public var offset: Double
    public var antialias: Bool

    public init(offset: Double, antialias: Bool) {
        self.offset = offset
        self.antialias = antialias
    }

    /// The number of grid positions of an embedding of `rows` rows (CLS first), or nil when the rest is
    /// not a square.
    public static func grid(rows: Int) -> Int? {
        let m = Int(Double(rows - 1).squareRoot().rounded())
        return m * m == rows - 1 && m > 0 ? m : nil
    }

    /// The grid to resample to when a position embedding saved with shape `saved` ([1, 1 + M * M, D]) is
    /// loaded into one of shape `shape` ([1, 1 + G * G, D], the same D, G != M); nil otherwise.
    public static func targetGrid(from saved: [Int], to shape: [Int]) -> Int? {
        guard saved != shape, saved.count == 3, shape.count == 3, saved[2] == shape[2],
            grid(rows: saved[1]) != nil
        else { return nil }
        return grid(rows: shape[1])
    }

    /// `values` [1 + M * M, D] (CLS row first) on a `grid` x `grid` patch grid: the CLS row unchanged,
    /// the grid resampled (bicubic, the official offset and antialiasing).
    public func resample(_ values: [Float], channels d: Int, toGrid grid: Int) -> [Float] {
        guard let m = Self.grid(rows: values.count / d), m != grid else { return values }
        let interpolation = PositionInterpolation(
            grid: m, targetRows: grid, targetColumns: grid, offset: offset, antialias: antialias)
        let source = values[d...].map(Double.init)
        var out = [Double](repeating: 0, count: grid * grid * d)
        var scratch = [Double](repeating: 0, count: m * grid * d)
        source.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                scratch.withUnsafeMutableBufferPointer { tmp in
                    interpolation.forward(
                        out: dst.baseAddress!, grid: src.baseAddress!, channels: d, scratch: tmp.baseAddress!)
                }
            }
        }
        return Array(values[..<d]) + out.map(Float.init)
    }
}
