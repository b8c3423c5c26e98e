// Scratch memory that grows to the largest request and is then reused: steady-state training steps
// allocate nothing. Contents are not preserved across growth.

/// A reusable buffer of `T`, reallocated only when a request exceeds its capacity.
public final class GrowableBuffer<T>: @unchecked Sendable {
    public private(set) var capacity = 0
    private var storage: UnsafeMutablePointer<T>? = nil

    public init(capacity: Int = 0) { reserve(capacity) }

    /// Ensures room for `count` elements and returns the base pointer.
    @discardableResult
    public func reserve(_ count: Int) -> UnsafeMutablePointer<T> {
        if count > capacity || storage == nil {
            storage?.deallocate()
            storage = .allocate(capacity: Swift.max(1, count))
            capacity = Swift.max(1, count)
        }
        return base
    }

    public var base: UnsafeMutablePointer<T> {
        guard let storage else { preconditionFailure("GrowableBuffer used before reserve") }
        return storage
    }

    /// Bytes currently held.
    public var bytes: Int { capacity * MemoryLayout<T>.stride }

    deinit { storage?.deallocate() }
}
