// The backbone against an independent PyTorch implementation (Fixtures/generate_reference.py):
// normalised outputs and every parameter gradient of sum(output * R), for a GELU-MLP model with
// offset bicubic resampling and a SwiGLU model with antialiased resampling, two crop sizes,
// registers and iBOT masks.

import DinoCheckpoint
import DinoKernels
import DinoModel
import DinoTestSupport
import Foundation
import Testing

@Suite("backbone vs PyTorch reference")
struct BackboneReferenceTests {
    static let fixture = TestPaths.packageRoot.appendingPathComponent(
        "Tests/DinoModelTests/Fixtures/backbone_reference.h5"
    ).path

    func architecture(_ group: String, offset: Double, antialias: Bool) -> ViTArchitecture {
        var a = ViTArchitecture(
            embedDim: 16, depth: 2, heads: 2, patchSize: 2,
            feedForward: group == "mlp" ? .mlp(hidden: 64) : .swiglu(hidden: 48),
            registers: 2, imageSize: 8)
        a.interpolateOffset = offset
        a.interpolateAntialias = antialias
        return a
    }

    func compare<T: KernelScalar>(_: T.Type, group: String, tolerance: Double) throws {
        let file = try HDF5File.open(Self.fixture)
        let offset = group == "mlp" ? 0.1 : 0.0
        let layout = ParameterLayout(architecture(group, offset: offset, antialias: group != "mlp"))
        let store = LocalParameters<T>(layout: layout)
        for entry in layout.entries {
            #expect(try file.shape(of: "\(group)/params/\(entry.name)") == entry.shape, "\(entry.name)")
            store.setTensor(entry.name, try file.readDoubles("\(group)/params/\(entry.name)").map { T($0) })
        }
        let masks = try file.readDoubles("\(group)/masks").map { $0 != 0 }
        let batches = [
            TestBatch(images: try file.readDoubles("\(group)/global_images"), count: 2, size: 8, masks: masks),
            TestBatch(images: try file.readDoubles("\(group)/local_images"), count: 3, size: 6, masks: nil),
        ]
        let weights = try file.readDoubles("\(group)/loss_weights")
        let output = try runBackbone(Backbone<T>(layout: layout), store: store, batches: batches, dOutput: weights)
        let expected = try file.readDoubles("\(group)/output")
        #expect(normwiseError(output, expected) <= tolerance, "\(group) output")
        for entry in layout.entries {
            let reference = try file.readDoubles("\(group)/grads/\(entry.name)")
            let error = normwiseError(store.gradient(entry.name) ?? [], reference)
            #expect(error <= tolerance, "\(group) gradient of \(entry.name): \(error)")
        }
    }

    // float32: a depth-2 network of unit-scale values; the kernels' own float32 errors are ~1e-6.
    @Test("float32 outputs and gradients within 1e-4 (normwise relative)", arguments: ["mlp", "swiglu"])
    func float32(group: String) throws { try compare(Float.self, group: group, tolerance: 1e-4) }

    // float64: only summation order differs from PyTorch.
    @Test("float64 outputs and gradients within 1e-10", arguments: ["mlp", "swiglu"])
    func float64(group: String) throws { try compare(Double.self, group: group, tolerance: 1e-10) }
}
