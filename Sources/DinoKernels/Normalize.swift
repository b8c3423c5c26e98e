// Row-wise L2 normalisation and tempered softmax / cross-entropy, the helpers of the DINO heads
// and losses.
//   L2Normalize: out = x / max(||x||, eps); saves the norm.  backward: dIn = (dOut - out (out . dOut)) / ||x||
//                when ||x|| > eps, else dOut / eps (=).
//   Softmax:     out = softmax(logits / temperature) per row (=).
//   CrossEntropy with soft targets: loss_r = -sum_j t_rj log softmax(s_r / tau)_j;
//                dLogits_r = weight * (softmax(s_r / tau) - t_r) / tau (=), for targets that sum to 1.

import DinoCore

/// Row-wise L2 normalisation.
public enum L2Normalize {
    public static func forward<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, norms: UnsafeMutablePointer<T>,
        input: UnsafePointer<T>, rows: Int, channels: Int, epsilon: T
    ) {
        for r in 0..<rows {
            let x = input + r * channels
            let norm = T.dot(x, x, channels).squareRoot()
            norms[r] = norm
            T.linearCombination(out + r * channels, x, 1 / Swift.max(norm, epsilon), x, 0, channels)
        }
    }

    public static func backward<T: KernelScalar>(
        dInput: UnsafeMutablePointer<T>, dOut: UnsafePointer<T>,
        out: UnsafePointer<T>, norms: UnsafePointer<T>, rows: Int,
        channels: Int, epsilon: T
    ) {
        for r in 0..<rows {
            let y = out + r * channels, g = dOut + r * channels
            if norms[r] > epsilon {
                let projection = T.dot(y, g, channels)
                T.linearCombination(dInput + r * channels, g, 1 / norms[r], y, -projection / norms[r], channels)
            } else {
                T.linearCombination(dInput + r * channels, g, 1 / epsilon, g, 0, channels)
            }
        }
    }
}

/// Tempered softmax and soft-target cross-entropy over rows of logits.
public enum Softmax {
    /// `out = softmax(logits / temperature)` for each row.
    public static func forward<T: KernelScalar>(
        out: UnsafeMutablePointer<T>, logits: UnsafePointer<T>, rows: Int,
        columns: Int, temperature: T
    ) {
        for r in 0..<rows {
            let row = out + r * columns
            T.linearCombination(row, logits + r * columns, 1 / temperature, logits + r * columns, 0, columns)
            let sum = T.expSubtractSum(row, columns, T.rowMax(row, columns))
            T.scale(row, columns, 1 / sum)
        }
    }

    /// Soft-target cross-entropy per row; writes `dLogits = weight * (p - t) / tau` and returns the
    /// weighted sum of the row losses. `probabilities` is scratch of the logits' size. `threads` > 1
    /// runs rows in parallel; row losses are summed in row order afterwards, so the result has the
    /// same bits for any thread count.
    public static func crossEntropy<T: KernelScalar>(
        dLogits: UnsafeMutablePointer<T>, probabilities: UnsafeMutablePointer<T>, logits: UnsafePointer<T>,
        targets: UnsafePointer<T>, rows: Int, columns: Int, temperature: T, weight: T, threads: Int = 1
    ) -> T {
        if threads <= 1 || rows <= 1 {
            var total: T = 0
            for r in 0..<rows {
                total += crossEntropyRow(
                    dLogits: dLogits + r * columns, probabilities: probabilities + r * columns,
                    logits: logits + r * columns, targets: targets + r * columns, columns: columns,
                    temperature: temperature, weight: weight)
            }
            return total
        }
        var rowLosses = [T](repeating: 0, count: rows)
        rowLosses.withUnsafeMutableBufferPointer { losses in
            guard let out = losses.baseAddress else { return }
            WorkQueue.run(count: rows, threads: threads) { r, _ in
                out[r] = crossEntropyRow(
                    dLogits: dLogits + r * columns, probabilities: probabilities + r * columns,
                    logits: logits + r * columns, targets: targets + r * columns, columns: columns,
                    temperature: temperature, weight: weight)
            }
        }
        var total: T = 0
        for loss in rowLosses { total += loss }
        return total
    }

    /// One row of `crossEntropy`: returns weight * loss; `probabilities` is scratch of `columns` values.
    public static func crossEntropyRow<T: KernelScalar>(
        dLogits: UnsafeMutablePointer<T>, probabilities p: UnsafeMutablePointer<T>, logits: UnsafePointer<T>,
        targets t: UnsafePointer<T>, columns: Int, temperature: T, weight: T
    ) -> T {
        T.linearCombination(p, logits, 1 / temperature, logits, 0, columns)
        let maximum = T.rowMax(p, columns)
        // log softmax_j = s_j - max - log(sum); loss = -sum_j t_j (s_j - max) + log(sum) * sum_j t_j
        let targetDotLogits = T.dot(t, p, columns)
        let targetSum = T.sum(t, columns)
        let sum = T.expSubtractSum(p, columns, maximum)
        let loss = weight * (-(targetDotLogits - maximum * targetSum) + T.log(sum) * targetSum)
        T.scale(p, columns, 1 / sum)
        T.linearCombination(dLogits, p, weight / temperature, t, -weight / temperature, columns)
        return loss
    }
}
