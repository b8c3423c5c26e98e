// A thin, checked wrapper over the serial HDF5 C API: create/open a file, write and read float32
// datasets of any shape (contiguous, row-major, PyTorch order), hyperslab reads and writes of a flat range,
// and string / integer attributes. Every failing call throws an error naming the file and object.
// Handles are closed on every path. Debian's libhdf5 is serial: one writer per file.

import CHDF5
import Foundation

/// Errors from HDF5 calls, naming the file and object involved.
public struct HDF5Error: Error, CustomStringConvertible {
    public let path: String
    public let what: String
    public var description: String { "HDF5: \(what) (file \(path))" }
}

/// An open HDF5 file.
public final class HDF5File {
    public let path: String
    private let id: hid_t

    /// Creates `path`, failing if it exists unless `truncate` is set.
    public static func create(_ path: String, truncate: Bool = false) throws -> HDF5File {
        let flags = truncate ? dino_h5f_acc_trunc() : dino_h5f_acc_excl()
        let id = H5Fcreate(path, flags, dino_h5p_default(), dino_h5p_default())
        guard id >= 0 else { throw HDF5Error(path: path, what: "cannot create file") }
        return HDF5File(path: path, id: id)
    }

    /// Opens an existing file for reading.
    public static func open(_ path: String) throws -> HDF5File {
        let id = H5Fopen(path, dino_h5f_acc_rdonly(), dino_h5p_default())
        guard id >= 0 else { throw HDF5Error(path: path, what: "cannot open file (missing or not HDF5)") }
        return HDF5File(path: path, id: id)
    }

    private init(path: String, id: hid_t) {
        self.path = path
        self.id = id
        H5Eset_auto2(hid_t(H5E_DEFAULT), nil, nil)  // errors are reported by our own throws
    }

    deinit { H5Fclose(id) }

    /// Flushes buffered data to the operating system.
    public func flush() throws {
        guard H5Fflush(id, H5F_SCOPE_LOCAL) >= 0 else { throw HDF5Error(path: path, what: "flush failed") }
    }

    // MARK: - Datasets

    /// Writes `values` as dataset `name` with `shape` (product must equal the count).
    /// Intermediate groups in `name` ("student/blocks.0.attn.qkv.weight") are created.
    public func write(_ name: String, values: UnsafeBufferPointer<Float>, shape: [Int]) throws {
        try write(
            name, base: UnsafeRawPointer(values.baseAddress), count: values.count, shape: shape,
            type: dino_h5t_native_float())
    }

    /// Writes float64 `values` as dataset `name` with `shape`.
    public func write(_ name: String, doubles values: [Double], shape: [Int]) throws {
        try values.withUnsafeBufferPointer {
            try write(
                name, base: UnsafeRawPointer($0.baseAddress), count: values.count, shape: shape,
                type: dino_h5t_native_double())
        }
    }

    private func write(
        _ name: String, base: UnsafeRawPointer?, count: Int, shape: [Int], type: hid_t,
        fill: Bool = true
    ) throws {
        precondition(shape.reduce(1, *) == count, "\(name): shape \(shape) does not hold \(count) values")
        var dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), &dims, nil)
        guard space >= 0 else { throw HDF5Error(path: path, what: "cannot make dataspace for \(name)") }
        defer { H5Sclose(space) }
        let linkProperties = H5Pcreate(dino_h5p_link_create())
        defer { H5Pclose(linkProperties) }
        H5Pset_create_intermediate_group(linkProperties, 1)
        let dataset = H5Dcreate2(id, name, type, space, linkProperties, dino_h5p_default(), dino_h5p_default())
        guard dataset >= 0 else { throw HDF5Error(path: path, what: "cannot create dataset \(name)") }
        defer { H5Dclose(dataset) }
        guard fill, count > 0 else { return }
        guard H5Dwrite(dataset, type, dino_h5s_all(), dino_h5s_all(), dino_h5p_default(), base) >= 0
        else { throw HDF5Error(path: path, what: "cannot write dataset \(name)") }
    }

    /// Creates float32 dataset `name` with `shape`, to be filled by `write(_:range:values:)`.
    public func createDataset(_ name: String, shape: [Int]) throws {
        try write(name, base: nil, count: shape.reduce(1, *), shape: shape, type: dino_h5t_native_float(), fill: false)
    }

    /// Writes `values` into elements `range` (row-major) of an existing float32 dataset `name`.
    public func write(_ name: String, range: Range<Int>, values: UnsafeBufferPointer<Float>) throws {
        precondition(range.count == values.count, "\(name): \(values.count) values for a range of \(range.count)")
        try transferFlat(name, range, action: "write") { dataset, memorySpace, fileSpace in
            H5Dwrite(dataset, dino_h5t_native_float(), memorySpace, fileSpace, dino_h5p_default(), values.baseAddress)
        }
    }

    /// Selects elements `range` of the flat row-major view of dataset `name` (any contiguous range,
    /// whatever the shape) and runs one read or write of them through `transfer`.
    private func transferFlat(
        _ name: String, _ range: Range<Int>, action: String,
        _ transfer: (_ dataset: hid_t, _ memorySpace: hid_t, _ fileSpace: hid_t) -> herr_t
    ) throws {
        let total = try shape(of: name).reduce(1, *)
        guard range.lowerBound >= 0, range.upperBound <= total else {
            throw HDF5Error(path: path, what: "range \(range) is outside dataset \(name) of \(total) elements")
        }
        guard !range.isEmpty else { return }
        let dataset = try openDataset(name)
        defer { H5Dclose(dataset) }
        var flat = [hsize_t(total)]
        let fileSpace = H5Screate_simple(1, &flat, nil)
        defer { H5Sclose(fileSpace) }
        var start = [hsize_t(range.lowerBound)]
        var count = [hsize_t(range.count)]
        H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &start, nil, &count, nil)
        let memorySpace = H5Screate_simple(1, &count, nil)
        defer { H5Sclose(memorySpace) }
        guard transfer(dataset, memorySpace, fileSpace) >= 0 else {
            throw HDF5Error(path: path, what: "cannot \(action) \(range) of dataset \(name)")
        }
    }

    /// Writes 64-bit integers as dataset `name` with `shape`.
    public func write(_ name: String, integers values: [Int64], shape: [Int]) throws {
        try values.withUnsafeBufferPointer {
            try write(
                name, base: UnsafeRawPointer($0.baseAddress), count: values.count, shape: shape,
                type: dino_h5t_native_int64())
        }
    }

    /// Writes `values` as a 1-D dataset of fixed-length, null-padded UTF-8 strings (h5py reads bytes).
    public func write(_ name: String, strings values: [String]) throws {
        let encoded = values.map { Array($0.utf8) }
        let width = Swift.max(1, encoded.map(\.count).max() ?? 1)
        var bytes = [UInt8](repeating: 0, count: width * Swift.max(1, values.count))
        for (i, string) in encoded.enumerated() { for (j, byte) in string.enumerated() { bytes[i * width + j] = byte } }
        let type = H5Tcopy(dino_h5t_c_s1())
        defer { H5Tclose(type) }
        H5Tset_size(type, width)
        H5Tset_cset(type, H5T_CSET_UTF8)
        H5Tset_strpad(type, H5T_STR_NULLPAD)
        try bytes.withUnsafeBytes {
            try write(name, base: $0.baseAddress, count: values.count, shape: [values.count], type: type)
        }
    }

    /// Reads a 1-D dataset of fixed-length strings written by `write(_:strings:)`.
    public func readStrings(_ name: String) throws -> [String] {
        let dataset = try openDataset(name)
        defer { H5Dclose(dataset) }
        let type = H5Dget_type(dataset)
        defer { H5Tclose(type) }
        let width = H5Tget_size(type), count = try shape(of: name).reduce(1, *)
        var bytes = [UInt8](repeating: 0, count: Swift.max(1, width * count))
        guard H5Dread(dataset, type, dino_h5s_all(), dino_h5s_all(), dino_h5p_default(), &bytes) >= 0
        else { throw HDF5Error(path: path, what: "cannot read dataset \(name)") }
        return (0..<count).map { i in
            String(decoding: bytes[(i * width)..<((i + 1) * width)].prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// The shape of dataset `name`.
    public func shape(of name: String) throws -> [Int] {
        let dataset = try openDataset(name)
        defer { H5Dclose(dataset) }
        let space = H5Dget_space(dataset)
        defer { H5Sclose(space) }
        let rank = Int(H5Sget_simple_extent_ndims(space))
        guard rank >= 0 else { throw HDF5Error(path: path, what: "cannot read the shape of \(name)") }
        var dims = [hsize_t](repeating: 0, count: rank)
        H5Sget_simple_extent_dims(space, &dims, nil)
        return dims.map { Int($0) }
    }

    /// Reads elements `range` of dataset `name`, in row-major order, into `into`.
    public func read(_ name: String, range: Range<Int>, into: UnsafeMutableBufferPointer<Float>) throws {
        precondition(range.count == into.count, "\(name): destination holds \(into.count), range has \(range.count)")
        try transferFlat(name, range, action: "read") { dataset, memorySpace, fileSpace in
            H5Dread(dataset, dino_h5t_native_float(), memorySpace, fileSpace, dino_h5p_default(), into.baseAddress)
        }
    }

    /// The whole dataset `name` converted to float64, row-major.
    public func readDoubles(_ name: String) throws -> [Double] {
        let count = try shape(of: name).reduce(1, *)
        let dataset = try openDataset(name)
        defer { H5Dclose(dataset) }
        var values = [Double](repeating: 0, count: count)
        guard
            H5Dread(
                dataset, dino_h5t_native_double(), dino_h5s_all(), dino_h5s_all(), dino_h5p_default(),
                &values) >= 0
        else { throw HDF5Error(path: path, what: "cannot read dataset \(name)") }
        return values
    }

    private func openDataset(_ name: String) throws -> hid_t {
        let dataset = H5Dopen2(id, name, dino_h5p_default())
        guard dataset >= 0 else { throw HDF5Error(path: path, what: "no dataset named \(name)") }
        return dataset
    }

    // MARK: - Attributes on the root group

    /// Stores a UTF-8 string attribute on the file's root group.
    public func setAttribute(_ name: String, string value: String) throws {
        let type = H5Tcopy(dino_h5t_c_s1())
        defer { H5Tclose(type) }
        let bytes = Array(value.utf8)
        H5Tset_size(type, max(1, bytes.count))
        H5Tset_cset(type, H5T_CSET_UTF8)
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        let attribute = H5Acreate2(id, name, type, space, dino_h5p_default(), dino_h5p_default())
        guard attribute >= 0 else { throw HDF5Error(path: path, what: "cannot create attribute \(name)") }
        defer { H5Aclose(attribute) }
        let padded = bytes.isEmpty ? [UInt8(0)] : bytes
        guard H5Awrite(attribute, type, padded) >= 0 else {
            throw HDF5Error(path: path, what: "cannot write attribute \(name)")
        }
    }

    /// Reads a string attribute of the root group.
    public func stringAttribute(_ name: String) throws -> String {
        let attribute = H5Aopen(id, name, dino_h5p_default())
        guard attribute >= 0 else { throw HDF5Error(path: path, what: "no attribute named \(name)") }
        defer { H5Aclose(attribute) }
        let type = H5Aget_type(attribute)
        defer { H5Tclose(type) }
        let size = H5Tget_size(type)
        var bytes = [UInt8](repeating: 0, count: size)
        guard H5Aread(attribute, type, &bytes) >= 0 else {
            throw HDF5Error(path: path, what: "cannot read attribute \(name)")
        }
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Stores a 64-bit integer attribute on the root group.
    public func setAttribute(_ name: String, int value: Int64) throws {
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        let attribute = H5Acreate2(
            id, name, dino_h5t_native_int64(), space, dino_h5p_default(),
            dino_h5p_default())
        guard attribute >= 0 else { throw HDF5Error(path: path, what: "cannot create attribute \(name)") }
        defer { H5Aclose(attribute) }
        var copy = value
        guard H5Awrite(attribute, dino_h5t_native_int64(), &copy) >= 0 else {
            throw HDF5Error(path: path, what: "cannot write attribute \(name)")
        }
    }

    /// Reads a 64-bit integer attribute of the root group.
    public func intAttribute(_ name: String) throws -> Int64 {
        let attribute = H5Aopen(id, name, dino_h5p_default())
        guard attribute >= 0 else { throw HDF5Error(path: path, what: "no attribute named \(name)") }
        defer { H5Aclose(attribute) }
        var value: Int64 = 0
        guard H5Aread(attribute, dino_h5t_native_int64(), &value) >= 0 else {
            throw HDF5Error(path: path, what: "cannot read attribute \(name)")
        }
        return value
    }
}
