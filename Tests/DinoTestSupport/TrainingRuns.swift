// What the MPI integration tests need around a training run: a small generated ImageFolder dataset
// (`dinov2-fsdp data synth`) and the records of a run's metrics.jsonl.

import Foundation

public enum TrainingRuns {
    /// Generates 4 classes of 4 training images (and `valPerClass` validation images each) of `size` px
    /// into `folder` (its train/ and val/).
    public static func synthesize(into folder: String, valPerClass: Int = 1, size: Int = 40) throws {
        let result = try ProcessRunner.dinov2([
            "data", "synth", "--output", folder, "--classes", "4", "--per-class", "4", "--val-per-class",
            String(valPerClass), "--size", String(size),
        ])
        guard result.status == 0 else { throw TestFailure(message: result.stderr) }
    }

    /// The records of `folder`/metrics.jsonl, in file order.
    public static func records(_ folder: String) throws -> [[String: Any]] {
        try String(contentsOfFile: folder + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:]
        }
    }
}

/// A test's setup that failed, with what the command printed.
public struct TestFailure: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }

    public init(message: String) { self.message = message }
}
