// Decoding and encoding of RGB images: JPEG through libjpeg-turbo's TurboJPEG API, PNG through
// libpng's simplified API (gray, palette, 16-bit and alpha all come out as 8-bit RGB; alpha is
// composited onto black). Pixels are row-major, interleaved RGB, 8 bits per channel.

import CPNG
import CTurboJPEG
import Foundation

/// An 8-bit RGB image, row-major [height, width, 3].
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "\(pixels.count) bytes for \(width)x\(height) RGB")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// Why an image could not be decoded.
public enum ImageError: Error, CustomStringConvertible, Equatable {
    case notAnImage
    case unsupported(String)
    case corrupt(String)
    case encode(String)

    public var description: String {
        switch self {
        case .notAnImage: return "not a JPEG or PNG file"
        case .unsupported(let why): return "unsupported image: \(why)"
        case .corrupt(let why): return "corrupt or truncated image: \(why)"
        case .encode(let why): return "cannot encode image: \(why)"
        }
    }
}

/// JPEG and PNG decoding and encoding.
public enum ImageCodec {
    /// Decodes a JPEG or PNG file's bytes to RGB.
    public static func decode(_ data: Data) throws -> RGBImage {
        let bytes = [UInt8](data)
        if bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF { return try decodeJPEG(bytes) }
        if bytes.count >= 8, bytes[0..<8] == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] {
            return try decodePNG(bytes)
        }
        throw ImageError.notAnImage
    }

    // MARK: - JPEG

    static func decodeJPEG(_ bytes: [UInt8]) throws -> RGBImage {
        guard let handle = tjInitDecompress() else { throw ImageError.corrupt("cannot start the JPEG decoder") }
        defer { tjDestroy(handle) }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        var input = bytes
        let header = tjDecompressHeader3(handle, &input, UInt(input.count), &width, &height, &subsampling, &colorspace)
        guard header == 0, width > 0, height > 0 else { throw ImageError.corrupt(message(handle)) }
        if colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue) {
            throw ImageError.unsupported(
                "CMYK JPEG; convert it to RGB (for example with ImageMagick: convert in.jpg -colorspace sRGB out.jpg)")
        }
        var pixels = [UInt8](repeating: 0, count: Int(width) * Int(height) * 3)
        let status = tjDecompress2(
            handle, &input, UInt(input.count), &pixels, width, 0, height, Int32(TJPF_RGB.rawValue), 0)
        // A warning (for example a premature end of data) leaves grey rows: refuse it as truncated.
        guard status == 0 else { throw ImageError.corrupt(message(handle)) }
        return RGBImage(width: Int(width), height: Int(height), pixels: pixels)
    }

    /// Encodes `image` as a baseline (or progressive) 4:2:0 JPEG of `quality` 1...100.
    public static func encodeJPEG(_ image: RGBImage, quality: Int = 90, progressive: Bool = false) throws -> Data {
        try encodeJPEG(
            pixels: image.pixels, width: image.width, height: image.height, format: TJPF_RGB, quality: quality,
            progressive: progressive)
    }

    /// Encodes raw pixels of `format` (TJPF_RGB, TJPF_CMYK, ...).
    static func encodeJPEG(
        pixels: [UInt8], width: Int, height: Int, format: TJPF, quality: Int, progressive: Bool
    ) throws -> Data {
        guard let handle = tjInitCompress() else { throw ImageError.encode("cannot start the JPEG encoder") }
        defer { tjDestroy(handle) }
        var output: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        var input = pixels
        let flags = progressive ? Int32(TJFLAG_PROGRESSIVE) : 0
        let subsampling = format == TJPF_CMYK ? Int32(TJSAMP_444.rawValue) : Int32(TJSAMP_420.rawValue)
        let status = tjCompress2(
            handle, &input, Int32(width), 0, Int32(height), Int32(format.rawValue), &output, &size,
            subsampling, Int32(quality), flags)
        defer { if let output { tjFree(output) } }
        guard status == 0, let output else { throw ImageError.encode(message(handle)) }
        return Data(bytes: output, count: Int(size))
    }

    private static func message(_ handle: tjhandle) -> String {
        guard let text = tjGetErrorStr2(handle) else { return "unknown TurboJPEG error" }
        return String(cString: text)
    }

    // MARK: - PNG

    static func decodePNG(_ bytes: [UInt8]) throws -> RGBImage {
        var image = png_image()
        image.version = dino_png_image_version()
        let started = bytes.withUnsafeBytes { png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count) }
        guard started != 0 else { throw ImageError.corrupt(pngMessage(&image)) }
        defer { png_image_free(&image) }
        image.format = dino_png_format_rgb()
        let width = Int(image.width), height = Int(image.height)
        var pixels = [UInt8](repeating: 0, count: Int(dino_png_image_size(&image)))
        let finished = pixels.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
        guard finished != 0 else { throw ImageError.corrupt(pngMessage(&image)) }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// Encodes `image` as an 8-bit RGB PNG.
    public static func encodePNG(_ image: RGBImage) throws -> Data {
        try encodePNG(bytes: image.pixels, width: image.width, height: image.height, format: dino_png_format_rgb())
    }

    /// Encodes raw samples in libpng simplified `format` (gray, RGBA, 16-bit linear, colormapped ...).
    static func encodePNG(
        bytes: [UInt8], width: Int, height: Int, format: png_uint_32, colormap: [UInt8]? = nil,
        colormapEntries: Int = 0
    ) throws -> Data {
        var image = png_image()
        image.version = dino_png_image_version()
        image.width = png_uint_32(width)
        image.height = png_uint_32(height)
        image.format = format
        image.colormap_entries = png_uint_32(colormapEntries)
        var size = 0
        let measured = bytes.withUnsafeBytes { source in
            (colormap ?? []).withUnsafeBytes { map in
                png_image_write_to_memory(
                    &image, nil, &size, 0, source.baseAddress, 0, colormap == nil ? nil : map.baseAddress)
            }
        }
        guard measured != 0, size > 0 else { throw ImageError.encode(pngMessage(&image)) }
        var output = [UInt8](repeating: 0, count: size)
        let written = output.withUnsafeMutableBytes { target in
            bytes.withUnsafeBytes { source in
                (colormap ?? []).withUnsafeBytes { map in
                    png_image_write_to_memory(
                        &image, target.baseAddress, &size, 0, source.baseAddress, 0,
                        colormap == nil ? nil : map.baseAddress)
                }
            }
        }
        guard written != 0 else { throw ImageError.encode(pngMessage(&image)) }
        return Data(output.prefix(size))
    }

    private static func pngMessage(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
