// Pointers into Swift arrays for the kernels, which take base addresses.

/// Calls `body` with the array's base address, or with a one-element scratch buffer when the array
/// is empty (an empty array has no storage; an empty crop batch must still be passable).
public func withBase<R>(_ array: [Float], _ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
    let storage = array.isEmpty ? [Float(0)] : array
    return try storage.withUnsafeBufferPointer { buffer in
        guard let base = buffer.baseAddress else { preconditionFailure("non-empty array without storage") }
        return try body(base)
    }
}
