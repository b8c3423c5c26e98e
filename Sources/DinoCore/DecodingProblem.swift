// A JSON decoding failure in a few words for an error sentence (the field and what is wrong), instead
// of Foundation's multi-line debug description.

import Foundation

/// "no version", "iteration has the wrong type", "not JSON", ...
public func decodingProblem(_ error: Error) -> String {
    switch error as? DecodingError {
    case .keyNotFound(let key, let context):
        return "no " + (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
    case .typeMismatch(_, let context), .valueNotFound(_, let context):
        return "\(context.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type"
    case .dataCorrupted(let context):
        return context.codingPath.isEmpty
            ? "not JSON" : "\(context.codingPath.map(\.stringValue).joined(separator: ".")) is invalid"
    default:
        return "\(error)"
    }
}
