// Helpers for the model tests: run the backbone on arrays, in either precision.

import DinoCore
import DinoKernels
import DinoModel

/// One crop batch as arrays.
struct TestBatch {
    var images: [Double]  // [count, 3, size, size]
    var count: Int
    var size: Int
    var masks: [Bool]?  // [count, patches]
}

/// Forward (and optionally backward with `dOutput`) of `backbone` over `batches`; returns the
/// normalised tokens. Parameter gradients accumulate in `store`.
func runBackbone<T: KernelScalar>(
    _ backbone: Backbone<T>, store: LocalParameters<T>, batches: [TestBatch],
    dropPath: DropPath? = nil, dOutput: [Double]? = nil
) throws -> [T] {
    let images = batches.map { $0.images.map { T($0) } }
    let masks = batches.map { $0.masks ?? [] }
    var result: [T] = []
    try withPointers(images) { imagePointers in
        try withPointers(masks) { maskPointers in
            let crops = batches.indices.map { i in
                CropBatch(
                    images: imagePointers[i], count: batches[i].count, size: batches[i].size,
                    masks: batches[i].masks == nil ? nil : maskPointers[i])
            }
            try backbone.forward(crops, store: store, dropPath: dropPath)
            let count = backbone.tokenCount * backbone.layout.architecture.embedDim
            result = Array(UnsafeBufferPointer(start: backbone.output, count: count))
            if let dOutput {
                let gradient = dOutput.map { T($0) }
                try gradient.withUnsafeBufferPointer { pointer in
                    guard let base = pointer.baseAddress else { return }
                    try backbone.backward(base, store: store)
                }
            }
        }
    }
    return result
}

/// Calls `body` with stable base pointers of every array (an empty array gets a 1-element dummy).
func withPointers<E: Numeric, R>(_ arrays: [[E]], _ body: ([UnsafePointer<E>]) throws -> R) rethrows -> R {
    let buffers = arrays.map { array -> UnsafeMutablePointer<E> in
        let p = UnsafeMutablePointer<E>.allocate(capacity: max(1, array.count))
        p.initialize(repeating: 0, count: max(1, array.count))
        for (i, v) in array.enumerated() { p[i] = v }
        return p
    }
    defer { for p in buffers { p.deallocate() } }
    return try body(buffers.map { UnsafePointer($0) })
}

func withPointers<R>(_ arrays: [[Bool]], _ body: ([UnsafePointer<Bool>]) throws -> R) rethrows -> R {
    let buffers = arrays.map { array -> UnsafeMutablePointer<Bool> in
        let p = UnsafeMutablePointer<Bool>.allocate(capacity: max(1, array.count))
        p.initialize(repeating: false, count: max(1, array.count))
        for (i, v) in array.enumerated() { p[i] = v }
        return p
    }
    defer { for p in buffers { p.deallocate() } }
    return try body(buffers.map { UnsafePointer($0) })
}
