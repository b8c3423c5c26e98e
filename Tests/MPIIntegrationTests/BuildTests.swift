// The release binary is compiled for the host CPU: on an AVX-512 machine its SIMD kernels must use
// 512-bit registers (Benchmarks/check-simd.sh disassembles them).

import DinoTestSupport
import Foundation
import Testing

private let hostHasAVX512 = ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "").contains(" avx512f")

@Suite("build")
struct BuildTests {
    @Test(
        "SIMD kernels use zmm registers on AVX-512 hosts",
        .enabled(if: hostHasAVX512 && FileManager.default.isExecutableFile(atPath: "/usr/bin/objdump")))
    func zmm() throws {
        let result = try ProcessRunner.run(
            URL(fileURLWithPath: "/bin/bash"),
            [TestPaths.packageRoot.appendingPathComponent("Benchmarks/check-simd.sh").path, TestPaths.executable.path])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
    }
}
