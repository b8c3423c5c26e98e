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

/// Free buffers shared by users that never need all of theirs at the same time (the student and
/// teacher parameter stores of every model part: one pass runs at a time). A buffer is taken for one
/// use and given back after it; after the first steps the pool holds what the busiest moment needed.
public final class BufferPool<T>: @unchecked Sendable {
    private var free: [GrowableBuffer<T>] = []

    public init() {}

    /// The free buffer that holds `count` elements most tightly, else the largest free one (its user
    /// grows it), else a new one.
    public func take(atLeast count: Int) -> GrowableBuffer<T> {
        var chosen: Int? = nil
        for (index, buffer) in free.enumerated() where buffer.capacity >= count {
            if chosen.map({ buffer.capacity < free[$0].capacity }) ?? true { chosen = index }
        }
        if chosen == nil, !free.isEmpty { chosen = free.indices.max { free[$0].capacity < free[$1].capacity } }
        return chosen.map { free.remove(at: $0) } ?? GrowableBuffer<T>()
    }

    /// Returns a buffer for the next user.
    public func give(_ buffer: GrowableBuffer<T>) { free.append(buffer) }

    /// Bytes of the free buffers.
    public var bytes: Int { free.reduce(0) { $0 + $1.bytes } }
}
