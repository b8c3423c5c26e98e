// Keeps nonblocking collectives moving while a rank computes. Open MPI 4.1 advances a libnbc
// schedule only inside MPI calls, so compute loops call `poll()` between pieces of work (a GEMM, a
// row block); `poll()` reads a monotonic clock and enters MPI at most once per `interval`, which
// keeps the cost of frequent polling negligible.

/// Throttled progress for a communicator's in-flight collectives.
public final class ProgressDriver {
    private let communicator: any Communicator
    private let intervalNanoseconds: UInt64
    private var lastPoll: UInt64 = 0
    /// How many times `poll()` actually entered the communicator.
    public private(set) var progressCalls = 0

    /// Polls `communicator` at most once every `intervalMicroseconds`.
    public init(_ communicator: any Communicator, intervalMicroseconds: Int = 500) {
        self.communicator = communicator
        self.intervalNanoseconds = UInt64(max(0, intervalMicroseconds)) * 1000
    }

    /// Advances in-flight collectives if the interval has elapsed since the last call that did.
    @inline(__always)
    public func poll() throws {
        let now = MonotonicClock.nanoseconds()
        guard now &- lastPoll >= intervalNanoseconds else { return }
        lastPoll = now
        progressCalls += 1
        try communicator.progress()
    }
}
