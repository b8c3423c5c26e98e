// Runs a command as a child process for tests: output goes to temporary files (no pipe can fill up
// and deadlock), and a time limit terminates a hung child so a test fails instead of hanging.

import Foundation

/// What a finished child process left behind.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var timedOut: Bool
    public var seconds: Double
}

/// Paths of this checkout and of the binaries the tests run.
public enum TestPaths {
    /// The package root (the folder holding Package.swift).
    public static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// The `dinov2-fsdp` executable built next to the test bundle (same configuration).
    public static var executable: URL {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for folder in [beside, beside.deletingLastPathComponent()] {
            let candidate = folder.appendingPathComponent("dinov2-fsdp")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return packageRoot.appendingPathComponent(".build/release/dinov2-fsdp")
    }

    /// The mpirun wrapper of this checkout.
    public static var mpirunWrapper: URL { packageRoot.appendingPathComponent("Launch/mpirun.sh") }

    /// A fresh temporary folder.
    public static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("dino-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Runs child processes with a time limit.
public enum ProcessRunner {
    /// Runs `executable` with `arguments` in the package root and waits at most `timeout` seconds.
    public static func run(
        _ executable: URL, _ arguments: [String], environment: [String: String] = [:],
        timeout: Double = 300
    ) throws -> ProcessResult {
        let scratch = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outURL = scratch.appendingPathComponent("stdout")
        let errURL = scratch.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)

        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = TestPaths.packageRoot
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice

        let start = Date()
        try launchUnblocked(process)
        var timedOut = false
        while process.isRunning {
            if Date().timeIntervalSince(start) > timeout {
                timedOut = true
                process.terminate()
                Thread.sleep(forTimeInterval: 2)
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                break
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.waitUntilExit()
        try out.close()
        try err.close()
        return ProcessResult(
            status: process.terminationStatus,
            stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "",
            timedOut: timedOut,
            seconds: Date().timeIntervalSince(start))
    }

    /// Runs the built `dinov2-fsdp` directly (one rank, no MPI launcher).
    public static func dinov2(_ arguments: [String], timeout: Double = 300) throws -> ProcessResult {
        try run(TestPaths.executable, arguments, timeout: timeout)
    }

    /// Starts the built `dinov2-fsdp` on `ranks` ranks through Launch/mpirun.sh without waiting;
    /// its output goes to /dev/null.
    /// With `log`, stdout and stderr go to that file instead.
    public static func startMPI(ranks: Int, _ arguments: [String], log: URL? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [TestPaths.mpirunWrapper.path, "-n", String(ranks), TestPaths.executable.path] + arguments
        process.currentDirectoryURL = TestPaths.packageRoot
        if let log {
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
        } else {
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        process.standardInput = FileHandle.nullDevice
        try launchUnblocked(process)
        return process
    }

    /// Runs the built `dinov2-fsdp` on `ranks` ranks through Launch/mpirun.sh.
    public static func mpirun(ranks: Int, _ arguments: [String], timeout: Double = 300) throws -> ProcessResult {
        try run(
            URL(fileURLWithPath: "/bin/bash"),
            [TestPaths.mpirunWrapper.path, "-n", String(ranks), TestPaths.executable.path] + arguments,
            timeout: timeout)
    }

    /// The built `dinov2-fsdp` on `ranks` ranks: without mpirun for 1 (the single-process path), else
    /// through Launch/mpirun.sh.
    public static func ranked(_ ranks: Int, _ arguments: [String], timeout: Double = 300) throws -> ProcessResult {
        ranks == 1 ? try dinov2(arguments, timeout: timeout) : try mpirun(ranks: ranks, arguments, timeout: timeout)
    }

    /// The ranks of a training job writing to `output`: processes whose command line starts with the
    /// executable (not mpirun or the launch wrapper) and names `output`.
    public static func rankProcesses(writing output: String) -> [Int32] {
        var pids: [Int32] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
            else { continue }
            let words = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if words.first?.hasSuffix("dinov2-fsdp") == true && words.contains("train") && words.contains(output) {
                pids.append(pid)
            }
        }
        return pids.sorted()
    }

    /// Starts `process` with no signal blocked: a child inherits the mask of the spawning thread, and the
    /// test runner's threads block most signals, which would leave a launcher's SIGUSR1 / SIGTERM
    /// forwarding (Launch/mpirun.sh) deaf in tests while it works from a shell or under Slurm.
    static func launchUnblocked(_ process: Process) throws {
        var none = sigset_t(), saved = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        try process.run()
    }
}
