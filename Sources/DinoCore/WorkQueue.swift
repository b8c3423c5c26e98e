// Runs `count` independent work items on `threads` workers: each worker takes the next unclaimed
// index from a shared atomic counter (dynamic scheduling, so long items early in the order balance
// out). With one thread everything runs on the caller's thread, no dispatch. Callers make item
// results independent of the worker that computes them; the worker index only selects scratch.

import Dispatch
import Synchronization

/// A parallel loop over independent work items.
public enum WorkQueue {
    /// Calls `body(item, worker)` once for every item in 0..<count, with worker in 0..<threads.
    public static func run(count: Int, threads: Int, _ body: (_ item: Int, _ worker: Int) -> Void) {
        if threads <= 1 || count <= 1 {
            for item in 0..<count { body(item, 0) }
            return
        }
        let next = Atomic<Int>(0)
        withoutActuallyEscaping(body) { body in
            let task = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: min(threads, count)) { worker in
                while true {
                    let item = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    if item >= count { break }
                    task.value(item, worker)
                }
            }
        }
    }
}

extension WorkQueue {
    /// Splits 0..<count into at most `threads` contiguous ranges (boundaries on multiples of 16, so
    /// vector loops see the same alignment as one pass; no range shorter than `minimumChunk`) and
    /// runs `body` on each in parallel. For element-wise loops whose results do not depend on
    /// where a range starts: the output is the same for any thread count.
    public static func forEachChunk(
        count: Int, threads: Int, minimumChunk: Int = 32_768,
        _ body: (_ range: Range<Int>) -> Void
    ) {
        let chunks = Swift.max(1, Swift.min(threads, count / Swift.max(minimumChunk, 1)))
        if chunks == 1 {
            body(0..<count)
            return
        }
        let length = ((count + chunks - 1) / chunks + 15) / 16 * 16
        run(count: chunks, threads: chunks) { chunk, _ in
            let start = Swift.min(chunk * length, count), end = Swift.min(start + length, count)
            if start < end { body(start..<end) }
        }
    }
}

/// Carries a value into a concurrent closure whose callers guarantee data-race freedom themselves
/// (disjoint outputs per item, read-only shared inputs).
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
