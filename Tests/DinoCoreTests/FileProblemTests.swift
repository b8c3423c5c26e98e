// File errors become a few words for a warning or error sentence, never Foundation's debug dump.

import DinoCore
import Foundation
import Testing

@Suite("file problems in a few words")
struct FileProblemTests {
    @Test("a missing file gives the system's reason on one line")
    func missing() {
        do {
            _ = try Data(contentsOf: URL(fileURLWithPath: "/nonexistent/dinov2-fsdp/image.png"))
            Issue.record("reading a missing file succeeded")
        } catch {
            #expect(fileProblem(error) == "No such file or directory")
        }
    }

    @Test("other errors keep their own first line")
    func other() {
        struct Broken: Error, CustomStringConvertible { var description: String { "not a JPEG or PNG file\nmore" } }
        #expect(fileProblem(Broken()) == "not a JPEG or PNG file")
    }
}
