// Which entries of a parameter tensor a comparison after a few AdamW steps can hold to a tolerance.
// Adam's first update is g / (|g| + 1e-8), about lr * sign(g): an entry whose first gradient is tiny
// next to its tensor's largest is moved by an amount (at an exactly zero gradient, of a sign) that
// float32 rounding of that gradient decides. Sharp softmaxes (temperatures 0.04-0.1) put that
// rounding at up to ~3e-5 of the largest entry, so entries below 1e-4 of it are left out; the
// gradient comparison covers them.

/// `true` for each entry whose first-step reference gradient is at least 1e-4 of the tensor's largest.
public func adamWellConditioned(firstGradient gradient: [Double]) -> [Bool] {
    let largest = gradient.map { abs($0) }.max() ?? 0
    return gradient.map { abs($0) >= 1e-4 * largest }
}

/// The entries of `values` where `keep` is true.
public func kept<E>(_ values: [E], _ keep: [Bool]) -> [E] {
    zip(values, keep).filter { $0.1 }.map { $0.0 }
}
