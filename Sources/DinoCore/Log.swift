// Rank-aware console output: `main` prints on rank 0 only (progress lines, tables); `error` prints
// on every rank with a "[rank r]" prefix so that a failure names where it happened.

import Foundation

/// Console output that knows which rank it runs on.
public struct Log: Sendable {
    public let rank: Int
    public let worldSize: Int

    public init(rank: Int, worldSize: Int) {
        self.rank = rank
        self.worldSize = worldSize
    }

    /// Prints on rank 0 only, to standard output.
    public func main(_ message: @autoclosure () -> String) {
        guard rank == 0 else { return }
        Self.write(message() + "\n", to: 1)
    }

    /// Prints on every rank, prefixed with the rank, to standard output.
    public func all(_ message: @autoclosure () -> String) {
        Self.write("[rank \(rank)] " + message() + "\n", to: 1)
    }

    /// Prints on this rank to standard error, prefixed with the rank when there are several.
    public func error(_ message: String) {
        let prefix = worldSize > 1 ? "[rank \(rank)] " : ""
        Self.write(prefix + "error: " + message + "\n", to: 2)
    }

    /// Prints a warning on rank 0 to standard error.
    public func warning(_ message: String) {
        guard rank == 0 else { return }
        Self.write("warning: " + message + "\n", to: 2)
    }

    private static func write(_ text: String, to descriptor: Int32) {
        Console.write(text, to: descriptor)
    }
}

/// Unbuffered writes to the standard streams: whole lines reach the terminal (or mpirun's
/// forwarder) at once, so lines from several ranks never interleave mid-line.
public enum Console {
    /// Writes `text` to standard output.
    public static func out(_ text: String) { write(text + "\n", to: 1) }

    /// Writes `text` to file descriptor `descriptor` (1 standard output, 2 standard error).
    public static func write(_ text: String, to descriptor: Int32) {
        fflush(nil)  // anything print() buffered goes first, so output stays in order
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var offset = 0
            while offset < raw.count {
                let written = Foundation.write(descriptor, base + offset, raw.count - offset)
                if written <= 0 { return }
                offset += written
            }
        }
    }
}
