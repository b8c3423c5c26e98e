// OpenBLAS sgemm against a float64 reference, and an HDF5 write/read round trip with hyperslab
// reads of sub-ranges and attributes: the native bindings every later module relies on.

import DinoCheckpoint
import DinoKernels
import DinoTestSupport
import Foundation
import Testing

@Suite("native libraries")
struct NativeLibraryTests {
    @Test(
        "sgemm matches a float64 reference for every transpose combination",
        arguments: [(false, false), (true, false), (false, true), (true, true)])
    func sgemm(transposes: (Bool, Bool)) {
        let (ta, tb) = transposes
        let m = 37, n = 29, k = 53
        let a = (0..<(m * k)).map { Float(sin(Double($0) * 0.37)) }
        let b = (0..<(k * n)).map { Float(cos(Double($0) * 0.11)) }
        var c = [Float](repeating: 0.5, count: m * n)
        // Stored shapes: A is [m, k] or, transposed, [k, m]; B is [k, n] or [n, k].
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    BLAS.sgemm(
                        transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 2, a: ap.baseAddress!,
                        lda: ta ? m : k, b: bp.baseAddress!, ldb: tb ? k : n, beta: 1,
                        c: cp.baseAddress!, ldc: n)
                }
            }
        }
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    let aip = Double(ta ? a[p * m + i] : a[i * k + p])
                    let bpj = Double(tb ? b[j * k + p] : b[p * n + j])
                    sum += aip * bpj
                }
                let expected = 2 * sum + 0.5
                worst = max(worst, abs(Double(c[i * n + j]) - expected) / max(1, abs(expected)))
            }
        }
        // k = 53 products of magnitude <= 1 accumulated in float32: error bound ~ k * 2^-24 = 3.2e-6.
        #expect(worst < 3.2e-6, "worst relative error \(worst)")
    }

    @Test("HDF5 datasets and attributes round-trip, and any flat range reads back")
    func hdf5() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("t.h5").path
        let values = (0..<(6 * 4 * 3)).map { Float($0) * 0.25 - 3 }
        do {
            let file = try HDF5File.create(path)
            try values.withUnsafeBufferPointer {
                try file.write("student/blocks.0.attn.qkv.weight", values: $0, shape: [6, 4, 3])
            }
            try file.setAttribute("config", string: "optim:\n  base_lr: 0.002\n")
            try file.setAttribute("iteration", int: 1234)
            try file.flush()
        }
        #expect(throws: HDF5Error.self) { try HDF5File.create(path) }  // never overwrites by accident
        let file = try HDF5File.open(path)
        #expect(try file.shape(of: "student/blocks.0.attn.qkv.weight") == [6, 4, 3])
        for range in [0..<72, 5..<6, 13..<50, 71..<72] {
            var slice = [Float](repeating: .nan, count: range.count)
            try slice.withUnsafeMutableBufferPointer {
                try file.read("student/blocks.0.attn.qkv.weight", range: range, into: $0)
            }
            #expect(slice == Array(values[range]))
        }
        #expect(try file.stringAttribute("config") == "optim:\n  base_lr: 0.002\n")
        #expect(try file.intAttribute("iteration") == 1234)
        #expect(throws: HDF5Error.self) { try file.shape(of: "missing") }
        var tooFar = [Float](repeating: 0, count: 2)
        #expect(throws: HDF5Error.self) {
            try tooFar.withUnsafeMutableBufferPointer {
                try file.read("student/blocks.0.attn.qkv.weight", range: 71..<73, into: $0)
            }
        }
        #expect(throws: HDF5Error.self) { try HDF5File.open(folder.appendingPathComponent("none.h5").path) }
    }
}
