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

/// A file that could not be read or decoded, in a few words: the system's reason for a Foundation
/// file error ("No such file or directory"), else the error's own one-line description.
public func fileProblem(_ error: Error) -> String {
    let nsError = error as NSError
    if nsError.domain == NSCocoaErrorDomain {
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? Error {
            let posix = underlying as NSError
            if posix.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(posix.code))) }
        }
        switch nsError.code {
        case CocoaError.fileReadNoSuchFile.rawValue, CocoaError.fileNoSuchFile.rawValue:
            return "No such file or directory"
        case CocoaError.fileReadNoPermission.rawValue: return "Permission denied"
        default: return "cannot be read (Foundation error \(nsError.code))"
        }
    }
    return "\(error)".split(separator: "\n").first.map(String.init) ?? "unreadable"
}
