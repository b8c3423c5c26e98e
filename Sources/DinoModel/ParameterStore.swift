// The seam between the model and whoever owns the parameters. The backbone asks for a unit's
// parameters just before it computes with them and says when it is done; it writes each unit's
// gradient and says when that unit's backward is complete. A local store hands out its own buffers
// and ignores the notifications; the sharded store (FSDP) all-gathers on `parameters` and
// reduce-scatters on `gradientsReady`. The model never sees a rank.

import DinoCore
import DinoKernels

/// Parameters and gradients of a backbone, unit by unit.
public protocol ParameterStore<Scalar>: AnyObject {
    associatedtype Scalar: KernelScalar
    /// The full parameters of `unit`, valid until `release(unit:)`.
    func parameters(unit: Int) throws -> UnsafePointer<Scalar>
    /// Forward (or backward) no longer needs the parameters of `unit`.
    func release(unit: Int) throws
    /// The full-size gradient buffer of `unit`; backward accumulates into it (+=).
    func gradients(unit: Int) -> UnsafeMutablePointer<Scalar>
    /// Backward has finished accumulating into the gradient of `unit`.
    func gradientsReady(unit: Int) throws
    /// Whether `gradients(unit:)` hands out a zeroed buffer for every backward pass of the unit (the
    /// sharded store: the buffer is reduced and recycled after `gradientsReady`). The model then
    /// accumulates straight into it; otherwise (a store keeping gradients across passes) it forms each
    /// unit's gradient in scratch and adds it in one pass, so two passes give exactly twice the gradient.
    var gradientsStartZeroed: Bool { get }
    /// Called between kernels: lets a store advance collectives in flight (Open MPI has no
    /// progress thread). Cheap when there is nothing to do.
    func progress() throws
    /// Rows per GEMM piece in the backbone, with `progress()` between pieces, or 0 for whole GEMMs.
    /// A property of the store (not of timing), so results never depend on when collectives finish.
    var pollingRows: Int { get }
}

extension ParameterStore {
    public func progress() throws {}
    public var pollingRows: Int { 0 }
    public var gradientsStartZeroed: Bool { false }
}

/// Where backward accumulates one unit's gradient: the store's own buffer when it hands out a zeroed
/// one per pass (`gradientsStartZeroed`), else scratch added to the store's buffer in one pass, so two
/// passes give exactly twice the gradient.
public final class UnitGradient<T: KernelScalar> {
    private let scratch = GrowableBuffer<T>()

    public init() {}

    /// Bytes of the scratch (one element unless a store keeps gradients across passes).
    public var bytes: Int { scratch.bytes }

    /// The buffer for `unit`'s gradient (`count` elements), zero.
    public func begin(_ unit: Int, count: Int, store: any ParameterStore<T>) -> UnsafeMutablePointer<T> {
        if store.gradientsStartZeroed { return store.gradients(unit: unit) }
        let g = scratch.reserve(count)
        g.setToZero(count: count)
        return g
    }

    /// Adds the scratch to the store's buffer if it was used, then tells the store the unit is done.
    public func finish(_ unit: Int, count: Int, store: any ParameterStore<T>) throws {
        if !store.gradientsStartZeroed { T.add(store.gradients(unit: unit), scratch.base, count) }
        try store.gradientsReady(unit: unit)
    }
}

/// One zero-initialised flat buffer per unit of a table (parameters, gradients, optimiser moments).
public final class UnitBuffers<Scalar: Numeric> {
    public let buffers: [UnsafeMutablePointer<Scalar>]

    public convenience init(_ table: TensorTable) {
        self.init(counts: table.units.map(\.count))
    }

    /// One buffer of each of `counts` elements.
    public init(counts: [Int]) {
        buffers = counts.map { count in
            let p = UnsafeMutablePointer<Scalar>.allocate(capacity: max(1, count))
            p.initialize(repeating: 0, count: max(1, count))
            return p
        }
    }

    public subscript(unit: Int) -> UnsafeMutablePointer<Scalar> { buffers[unit] }

    deinit { for p in buffers { p.deallocate() } }
}

/// All parameters and gradients in this process: the 1-rank store, and the reference for tests.
public final class LocalParameters<Scalar: KernelScalar>: ParameterStore {
    public let table: TensorTable
    private let values: UnitBuffers<Scalar>
    private let grads: UnitBuffers<Scalar>

    /// Zero-filled parameters and gradients in the backbone layout's units.
    public convenience init(layout: ParameterLayout) {
        self.init(table: layout.table)
    }

    /// Zero-filled parameters and gradients in the table's units.
    public init(table: TensorTable) {
        self.table = table
        values = UnitBuffers(table)
        grads = UnitBuffers(table)
    }

    public func parameters(unit: Int) throws -> UnsafePointer<Scalar> { UnsafePointer(values[unit]) }
    public func release(unit: Int) throws {}
    public func gradients(unit: Int) -> UnsafeMutablePointer<Scalar> { grads[unit] }
    public func gradientsReady(unit: Int) throws {}

    /// The parameter buffer of `unit`, for writing.
    public func mutableParameters(unit: Int) -> UnsafeMutableBufferPointer<Scalar> {
        UnsafeMutableBufferPointer(start: values[unit], count: table.units[unit].count)
    }

    /// Sets every gradient to zero.
    public func zeroGradients() {
        for (u, unit) in table.units.enumerated() { grads[u].setToZero(count: unit.count) }
    }

    /// The values of the tensor `name`, flattened row-major.
    public func tensor(_ name: String) -> [Scalar]? {
        table.entry(named: name).map { Array(UnsafeBufferPointer(start: values[$0.unit] + $0.offset, count: $0.count)) }
    }

    /// The gradient of the tensor `name`.
    public func gradient(_ name: String) -> [Scalar]? {
        table.entry(named: name).map { Array(UnsafeBufferPointer(start: grads[$0.unit] + $0.offset, count: $0.count)) }
    }

    /// Overwrites tensor `name` with `newValues`.
    public func setTensor(_ name: String, _ newValues: [Scalar]) {
        guard let e = table.entry(named: name) else { preconditionFailure("no parameter named \(name)") }
        precondition(newValues.count == e.count, "\(name): \(newValues.count) values for \(e.count)")
        for i in 0..<e.count { values[e.unit][e.offset + i] = newValues[i] }
    }

    /// Fills every tensor with the official initialisation, drawn from the counter-based stream
    /// keyed by (seed, tensor index, element index): the same values whatever the rank count.
    public func initialize(seed: UInt64) {
        for (index, entry) in table.entries.enumerated() {
            ParameterInitializer.fill(
                values[entry.unit] + entry.offset, entry: entry, index: table.firstPieceIndex(of: index),
                range: 0..<entry.count, seed: seed)
        }
    }
}

/// The official initialisation of any part of a tensor: element i of tensor `index` is a function
/// of (seed, index, i) only, so a rank can draw just the elements it owns.
public enum ParameterInitializer {
    /// Writes elements `range` of `entry` to `target[0 ..< range.count]`; `index` keys the tensor's
    /// stream (`TensorTable.firstPieceIndex`), element i of a piece is element tensorOffset + i of its tensor.
    public static func fill<Scalar: BinaryFloatingPoint>(
        _ target: UnsafeMutablePointer<Scalar>, entry: ParameterEntry,
        index: Int, range: Range<Int>, seed: UInt64
    ) {
        let stream = RandomStream(seed: seed, purpose: .parameterInit, UInt64(index))
        for (k, element) in range.enumerated() {
            let i = entry.tensorOffset + element
            let value: Double
            switch entry.initialization {
            case .constant(let c): value = c
            case .normal(let std): value = std * stream.normal(UInt64(i))
            case .truncatedNormal(let std): value = stream.truncatedNormal(UInt64(i), std: std, lower: -2, upper: 2)
            case .uniform(let bound): value = (2 * stream.uniform(UInt64(i)) - 1) * bound
            }
            target[k] = Scalar(value)
        }
    }
}
