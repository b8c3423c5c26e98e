// What the subcommands share: one `error:` line for a failing single-process tool, and output
// files written whole (temporary file and rename) or refused with a sentence that names the path.

import ArgumentParser
import DinoCore
import Foundation

/// Runs a single-process tool `body`; an error becomes one `error:` line and exit status 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch {
        Console.write("error: \(error)\n", to: 2)
        throw ExitCode.failure
    }
}

/// An output file that cannot be written, with what to do.
struct OutputError: Error, CustomStringConvertible {
    let description: String
}

/// Why a file cannot be written at `path` (its folder is missing or read-only), or nil.
func outputFileProblem(_ path: String) -> String? {
    let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
    var isFolder: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
        return "cannot write \(path): the folder \(folder) does not exist; create it or choose another path"
    }
    guard access(folder, W_OK) == 0 else {
        return "cannot write \(path): the folder \(folder) is not writable; choose another path"
    }
    return nil
}

/// Checks before any work that the files of output options can be written (for `validate()`).
func validateOutputFiles(_ paths: [(option: String, path: String?)]) throws {
    for (option, path) in paths {
        guard let path, let problem = outputFileProblem(path) else { continue }
        throw ValidationError("\(option): \(problem)")
    }
}

/// Writes `data` to `path` atomically; a missing or read-only folder is named in one sentence.
func writeOutput(_ data: Data, to path: String) throws {
    if let problem = outputFileProblem(path) { throw OutputError(description: problem) }
    do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
        throw OutputError(
            description: "cannot write \(path) (\(String(cString: strerror(errno)))); check the path "
                + "and the free space")
    }
}

/// Writes `value` as pretty-printed JSON with sorted keys and says so.
func writeJSON<Value: Encodable>(_ value: Value, to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try writeOutput(try encoder.encode(value), to: path)
    Console.out("wrote \(path)")
}

/// Writes a JSON object (pretty-printed, sorted keys).
func writeJSONObject(_ record: [String: Any], to path: String) throws {
    try writeOutput(
        try JSONSerialization.data(withJSONObject: record, options: [.prettyPrinted, .sortedKeys]), to: path)
}
