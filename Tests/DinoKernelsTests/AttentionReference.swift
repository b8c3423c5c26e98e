// A float64 per-sequence, per-head attention that materialises the full L x L probabilities: the
// reference the packed kernel is tested against. Used only by tests.

import Foundation

/// Naive attention in float64 with the packed kernel's layouts ([T, 3, H, D] in, [T, H, D] out).
enum AttentionReference {
    struct Result {
        var out: [Double]  // [T, C]
        var lse: [Double]  // [T, H]
        var dQKV: [Double]  // [T, 3C]
    }

    static func run(qkv: [Double], dOut: [Double], starts: [Int], heads: Int, headDim d: Int) -> Result {
        let c = heads * d, ld = 3 * c, tokens = starts.last ?? 0
        let scale = 1 / Double(d).squareRoot()
        var result = Result(
            out: .init(repeating: 0, count: tokens * c), lse: .init(repeating: 0, count: tokens * heads),
            dQKV: .init(repeating: 0, count: tokens * ld))
        for s in 0..<(starts.count - 1) {
            let t0 = starts[s], n = starts[s + 1] - t0
            for h in 0..<heads {
                func q(_ i: Int, _ x: Int) -> Double { qkv[(t0 + i) * ld + h * d + x] }
                func k(_ j: Int, _ x: Int) -> Double { qkv[(t0 + j) * ld + c + h * d + x] }
                func v(_ j: Int, _ x: Int) -> Double { qkv[(t0 + j) * ld + 2 * c + h * d + x] }
                func g(_ i: Int, _ x: Int) -> Double { dOut[(t0 + i) * c + h * d + x] }
                var p = [Double](repeating: 0, count: n * n)
                for i in 0..<n {
                    var m = -Double.infinity
                    for j in 0..<n {
                        var dot = 0.0
                        for x in 0..<d { dot += q(i, x) * k(j, x) }
                        p[i * n + j] = dot * scale
                        m = max(m, p[i * n + j])
                    }
                    var sum = 0.0
                    for j in 0..<n { sum += exp(p[i * n + j] - m) }
                    result.lse[(t0 + i) * heads + h] = m + log(sum)
                    for j in 0..<n { p[i * n + j] = exp(p[i * n + j] - m) / sum }
                    for x in 0..<d {
                        var o = 0.0
                        for j in 0..<n { o += p[i * n + j] * v(j, x) }
                        result.out[(t0 + i) * c + h * d + x] = o
                    }
                }
                // dP = dO V^T; dS = P * (dP - sum_j P dP); dQ = scale dS K; dK = scale dS^T Q; dV = P^T dO
                for i in 0..<n {
                    var dp = [Double](repeating: 0, count: n)
                    var rowDot = 0.0
                    for j in 0..<n {
                        for x in 0..<d { dp[j] += g(i, x) * v(j, x) }
                        rowDot += p[i * n + j] * dp[j]
                    }
                    for j in 0..<n {
                        let ds = p[i * n + j] * (dp[j] - rowDot)
                        for x in 0..<d {
                            result.dQKV[(t0 + i) * ld + h * d + x] += scale * ds * k(j, x)
                            result.dQKV[(t0 + j) * ld + c + h * d + x] += scale * ds * q(i, x)
                            result.dQKV[(t0 + j) * ld + 2 * c + h * d + x] += p[i * n + j] * g(i, x)
                        }
                    }
                }
            }
        }
        return result
    }
}
