// Before a run allocates its model: the memory model's prediction for one rank (MemoryModel) times
// the ranks sharing each node, against the memory that node can give (MemAvailable, or the job's
// cgroup limit when it is lower, as under Slurm), so a run that cannot fit stops with both numbers
// and what to change instead of being killed by the kernel's out-of-memory killer mid-step.

import ArgumentParser
import DinoConfig
import DinoCore
import DinoTraining
import Foundation

/// The options of the check, shared by `train` and `bench step`.
struct MemoryCheckOptions: ParsableArguments {
    @Flag(help: "Start even when the predicted memory of a node's ranks exceeds what the node has available.")
    var skipMemoryCheck = false

    @Option(
        help: ArgumentHelp(
            "Compare the prediction with this many bytes per node (suffix K, M, G: powers of 1024) instead of what "
                + "the node reports available.", valueName: "bytes"))
    var memoryLimit: String?

    func validate() throws {
        if let memoryLimit, MemoryCheck.bytes(memoryLimit) == nil {
            throw ValidationError("--memory-limit \(memoryLimit) is not a size; write e.g. 20G, 512M or 1073741824")
        }
    }
}

enum MemoryCheck {
    /// Predicts one rank's memory, logs it, and stops every rank (non-zero exit) when any node's
    /// ranks together would need more than it has, unless skipped. Collective.
    @discardableResult
    /// `maskedTokens`: the most masked tokens of a rank's crops when the run knows them (synthetic
    /// steps), else the largest the mask plan allows.
    static func run(
        config: TrainingConfig, comm: any Communicator, threads: Int, options: MemoryCheckOptions, log: Log,
        maskedTokens: Int? = nil
    ) throws -> MemoryPrediction {
        let node = try comm.splitByNode()
        let prediction = try MemoryModel.predict(
            config: config, worldSize: comm.worldSize, ranksPerNode: node.worldSize, threads: threads,
            maskedTokens: maskedTokens)
        // The node's first rank reads what the node has; everyone on the node uses that figure.
        var available = -1.0
        if node.rank == 0 { available = options.memoryLimit.flatMap(bytes).map(Double.init) ?? availableBytes() ?? -1 }
        available = try node.allReduce(available, op: .max)
        let need = Double(prediction.total * node.worldSize)
        let short = available >= 0 && need > available
        // Every rank learns the worst node's figures, so rank 0 can name them and all ranks stop together.
        let worst = try comm.allReduce([short ? 1 : 0, short ? need - available : -1], op: .max)
        let report = try comm.allReduce(
            [short && need - available == worst[1] ? need : 0, short && need - available == worst[1] ? available : 0],
            op: .max)
        func gib(_ value: Double) -> String { String(format: "%.1f GiB", value / Double(1 << 30)) }
        let largest = prediction.categories.filter { $0.name != MemoryCategory.process }.max { $0.bytes < $1.bytes }
        let largestName = largest?.name ?? "-", largestSize = gib(Double(largest?.bytes ?? 0))
        let perRank: String = "\(gib(Double(prediction.total))) a rank (largest: \(largestName) \(largestSize))"
        if worst[0] > 0 {
            let ranks = Int((report[0] / Double(prediction.total)).rounded())
            var changes = ["lower train.batch_size_per_gpu (\(config.train.batchSizePerRank) now)"]
            if !prediction.checkpointsActivations {
                changes.append("set activation_checkpoint.mode=full")
            }
            changes.append("start fewer ranks per node (\(ranks) now) or spread them over more nodes")
            let limit = options.memoryLimit != nil ? "--memory-limit allows" : "the node has"
            let override =
                options.skipMemoryCheck ? "starting anyway (--skip-memory-check)" : "or pass --skip-memory-check"
            let needText = gib(report[0]), haveText = gib(report[1]), what = changes.joined(separator: ", ")
            let message: String =
                "the run needs about \(needText) on a node (\(ranks) rank(s) x \(perRank), predicted) but \(limit) "
                + "\(haveText) available; \(what); \(override)"
            if options.skipMemoryCheck {
                log.warning(message)
            } else {
                if comm.rank == 0 { log.error(message) }
                throw ExitCode.failure
            }
        } else {
            let room = available >= 0 ? " of \(gib(available)) available" : " (available memory unknown)"
            log.main(
                "memory: \(perRank) predicted; \(node.worldSize) rank(s) on this node: \(gib(need))\(room)")
        }
        return prediction
    }

    /// What the kernel says this process's node can still give: MemAvailable, lowered to the room left
    /// under this process's cgroup limit (cgroup v2 memory.max, or v1 memory.limit_in_bytes) if any.
    static func availableBytes() -> Double? {
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var available: Double? = nil
        if let meminfo = read("/proc/meminfo"),
            let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
            let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
        {
            available = kilobytes * 1024
        }
        for line in (read("/proc/self/cgroup") ?? "").split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = String(fields[2])
            let limitAndUsage: (String, String)?
            if fields[0] == "0" && fields[1].isEmpty {
                limitAndUsage = ("/sys/fs/cgroup\(path)/memory.max", "/sys/fs/cgroup\(path)/memory.current")
            } else if fields[1].split(separator: ",").contains("memory") {
                limitAndUsage = (
                    "/sys/fs/cgroup/memory\(path)/memory.limit_in_bytes",
                    "/sys/fs/cgroup/memory\(path)/memory.usage_in_bytes"
                )
            } else {
                limitAndUsage = nil
            }
            guard let (limitPath, usagePath) = limitAndUsage, let limit = read(limitPath).flatMap(Double.init),
                let usage = read(usagePath).flatMap(Double.init), limit < 1e18
            else { continue }
            available = Swift.min(available ?? .infinity, Swift.max(0, limit - usage))
        }
        return available
    }

    /// `text` as bytes: an integer with an optional K, M, G or T suffix (powers of 1024).
    static func bytes(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = text.uppercased()
        if digits.hasSuffix("B") { digits.removeLast() }
        var scale = 1
        if let last = digits.last, let unit = units[last] {
            scale = unit
            digits.removeLast()
        }
        guard let value = Double(digits), value > 0 else { return nil }
        return Int(value * Double(scale))
    }
}
