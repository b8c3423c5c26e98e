// A collective timeout that names the rank that stopped: every rank's watchdog thread writes a
// heartbeat file (its collective count and whether it is waiting in one) into a folder all ranks
// share (the training output folder), every `timeout / 6` seconds. When this rank has waited in one
// collective longer than `timeout`, the thread reads every rank's heartbeat: ranks whose heartbeat is
// older than `timeout / 2` have stopped (killed, SIGSTOPped, swapped out, their node gone) and are
// named in one error line, and the process exits with status 3, which makes the launcher end the
// whole job instead of waiting forever. Ranks that are alive but behind (a long save on one rank) only
// get a warning naming them, once per timeout. The watchdog itself never calls MPI: the main thread
// may be blocked inside it.

import Foundation

/// The shared state of one process's watched collectives, and the thread that checks them.
public final class CollectiveWatchdog: @unchecked Sendable {
    public let rank: Int, worldSize: Int
    public let folder: String
    public let timeout: Double
    private let lock = NSLock()
    private var collectives = 0
    private var waitingSince: Double?
    private var waitingIn = ""
    private var warnedAt = 0.0
    private var stopped = false
    private var armed = false
    private var thread: Thread?

    /// Starts the thread; heartbeats and checks begin with `arm()`.
    public init(rank: Int, worldSize: Int, folder: String, timeout: Double) {
        self.rank = rank
        self.worldSize = worldSize
        self.folder = folder
        self.timeout = timeout
        let thread = Thread { [weak self] in self?.watch() }
        thread.name = "collective-watchdog"
        self.thread = thread
        thread.start()
    }

    /// Creates the heartbeat folder and starts heartbeats and checks (once the run's output folder may
    /// be written: a run refused before that leaves nothing behind).
    public func arm() {
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        lock.lock()
        armed = true
        let count = collectives
        lock.unlock()
        writeHeartbeat(collectives: count, waiting: false)  // at once: a rank stopped right away is known
    }

    private func writeHeartbeat(collectives count: Int, waiting: Bool) {
        try? "\(count) \(waiting ? 1 : 0)\n".write(toFile: heartbeatPath(rank), atomically: true, encoding: .utf8)
    }

    /// Stops the thread and removes this rank's heartbeat (at the end of a run).
    public func stop() {
        lock.lock()
        stopped = true
        let wasArmed = armed
        lock.unlock()
        if wasArmed { try? FileManager.default.removeItem(atPath: heartbeatPath(rank)) }
    }

    /// Marks the calling thread as waiting in collective `name` while `body` runs.
    @inline(__always)
    func watched<R>(_ name: String, _ body: () throws -> R) rethrows -> R {
        lock.lock()
        collectives += 1
        waitingSince = Date().timeIntervalSince1970
        waitingIn = name
        lock.unlock()
        defer {
            lock.lock()
            waitingSince = nil
            lock.unlock()
        }
        return try body()
    }

    func heartbeatPath(_ rank: Int) -> String { folder + String(format: "/rank-%05d", rank) }

    private func watch() {
        let interval = max(0.2, timeout / 6)
        while true {
            lock.lock()
            let (done, ready, count, since, name) = (stopped, armed, collectives, waitingSince, waitingIn)
            lock.unlock()
            if done { return }
            if !ready {
                Thread.sleep(forTimeInterval: interval)
                continue
            }
            let now = Date().timeIntervalSince1970
            writeHeartbeat(collectives: count, waiting: since != nil)
            if let since, now - since > timeout { check(waitedSince: since, in: name, collectives: count, now: now) }
            Thread.sleep(forTimeInterval: interval)
        }
    }

    /// Names the ranks whose heartbeat stopped (and ends the process), or warns about ranks that are behind.
    private func check(waitedSince since: Double, in name: String, collectives count: Int, now: Double) {
        var stale: [String] = [], behind: [String] = []
        for other in 0..<worldSize where other != rank {
            let path = heartbeatPath(other)
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970
            else {
                stale.append("\(other) (no heartbeat in \(folder))")
                continue
            }
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            let theirs = Int(text.split(separator: " ").first ?? "") ?? -1
            if now - modified > timeout / 2 {
                stale.append(
                    String(format: "%d (last heartbeat %.0f s ago, at collective %d)", other, now - modified, theirs))
            } else if theirs < count {
                behind.append("\(other) (at collective \(theirs))")
            }
        }
        let waited = String(format: "%.0f", now - since)
        if !stale.isEmpty {
            Console.write(
                "[rank \(rank)] error: \(name) (collective \(count)) has waited \(waited) s, more than the "
                    + "\(Int(timeout)) s collective timeout: rank(s) \(stale.joined(separator: ", ")) stopped "
                    + "responding (killed, stopped or hung); ending the job. Resume from the last checkpoint once "
                    + "the cause is fixed; train.collective_timeout sets the limit.\n", to: 2)
            exit(3)
        }
        if now - warnedAt > timeout {
            warnedAt = now
            let who = behind.isEmpty ? "every rank is alive" : "rank(s) \(behind.joined(separator: ", ")) are behind"
            Console.write(
                "[rank \(rank)] warning: \(name) (collective \(count)) has waited \(waited) s; \(who); "
                    + "still waiting\n", to: 2)
        }
    }
}

/// Forwards to `base`, every blocking collective and every wait on a nonblocking one watched.
public final class WatchedCommunicator: Communicator, @unchecked Sendable {
    public let base: any Communicator
    public let watchdog: CollectiveWatchdog

    public init(_ base: any Communicator, watchdog: CollectiveWatchdog) {
        self.base = base
        self.watchdog = watchdog
    }

    public var rank: Int { base.rank }
    public var worldSize: Int { base.worldSize }
    public var hostName: String { base.hostName }

    public func barrier() throws { try watchdog.watched("barrier") { try base.barrier() } }
    public func broadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        try watchdog.watched("broadcast") { try base.broadcast(buffer, root: root) }
    }
    public func allReduce<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        try watchdog.watched("all-reduce") { try base.allReduce(buffer, op: op) }
    }
    public func allReduce<T: CommScalar>(
        _ input: UnsafeBufferPointer<T>, into output: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws {
        try watchdog.watched("all-reduce") { try base.allReduce(input, into: output, op: op) }
    }
    public func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, into full: UnsafeMutableBufferPointer<T>
    ) throws {
        try watchdog.watched("all-gather") { try base.allGather(shard, into: full) }
    }
    public func allGather<T: CommScalar>(inPlace full: UnsafeMutableBufferPointer<T>) throws {
        try watchdog.watched("all-gather") { try base.allGather(inPlace: full) }
    }
    public func allGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, counts: [Int], into full: UnsafeMutableBufferPointer<T>
    ) throws {
        try watchdog.watched("all-gather") { try base.allGather(shard, counts: counts, into: full) }
    }
    public func reduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws {
        try watchdog.watched("reduce-scatter") { try base.reduceScatter(full, into: shard, op: op) }
    }
    public func reduceScatter<T: CommScalar>(inPlace full: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        try watchdog.watched("reduce-scatter") { try base.reduceScatter(inPlace: full, op: op) }
    }
    public func startBroadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws -> CommRequest
    {
        WatchedRequest(try base.startBroadcast(buffer, root: root), "broadcast", watchdog)
    }
    public func startAllReduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws
        -> CommRequest
    {
        WatchedRequest(try base.startAllReduce(buffer, op: op), "all-reduce", watchdog)
    }
    public func startAllGather<T: CommScalar>(
        _ shard: UnsafeBufferPointer<T>, into full: UnsafeMutableBufferPointer<T>
    ) throws -> CommRequest {
        WatchedRequest(try base.startAllGather(shard, into: full), "all-gather", watchdog)
    }
    public func startReduceScatter<T: CommScalar>(
        _ full: UnsafeBufferPointer<T>, into shard: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws -> CommRequest {
        WatchedRequest(try base.startReduceScatter(full, into: shard, op: op), "reduce-scatter", watchdog)
    }
    public func progress() throws { try base.progress() }
    public func split(color: Int, key: Int) throws -> any Communicator {
        WatchedCommunicator(try base.split(color: color, key: key), watchdog: watchdog)
    }
    public func splitByNode() throws -> any Communicator {
        WatchedCommunicator(try base.splitByNode(), watchdog: watchdog)
    }
    public func abort(exitCode: Int32) -> Never { base.abort(exitCode: exitCode) }
}

/// A nonblocking collective whose blocking wait is watched.
final class WatchedRequest: CommRequest {
    let base: CommRequest, name: String, watchdog: CollectiveWatchdog

    init(_ base: CommRequest, _ name: String, _ watchdog: CollectiveWatchdog) {
        self.base = base
        self.name = name
        self.watchdog = watchdog
    }

    func test() throws -> Bool { try base.test() }
    func wait() throws { try watchdog.watched("wait for a nonblocking " + name) { try base.wait() } }
}
