// Writing files so that a crash never leaves a partial one under the final name: fsync, then
// rename; fsync of the folder after a rename; and the 64-bit checksum checkpoint manifests record.

import Foundation

/// Durable renames and checksums.
public enum FileSafety {
    /// Renames `from` to `to` after flushing `from` to disk, so `to` never names a partial file.
    public static func durableRename(_ from: String, to: String) throws {
        let fd = open(from, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
        guard rename(from, to) == 0 else {
            throw CheckpointError.io("cannot rename \(from) to \(to): \(String(cString: strerror(errno)))")
        }
    }

    public static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    /// File size and a 64-bit checksum of its bytes (multiply-xorshift over 8-byte words).
    public static func checksum(of path: String) throws -> (Int, UInt64) {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CheckpointError.corrupt(file: path, reason: "cannot be opened")
        }
        defer { try? handle.close() }
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325, total = 0
        while true {
            let chunk = handle.readData(ofLength: 1 << 22)
            if chunk.isEmpty { break }
            total += chunk.count
            chunk.withUnsafeBytes { raw in
                var i = 0
                while i + 8 <= raw.count {
                    hash = (hash ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x100_0000_01B3
                    hash ^= hash >> 29
                    i += 8
                }
                while i < raw.count {
                    hash = (hash ^ UInt64(raw[i])) &* 0x100_0000_01B3
                    i += 1
                }
            }
        }
        return (total, hash)
    }
}
