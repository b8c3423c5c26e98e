// Encoders for image variants that training never writes, used by the tests to produce gray,
// 16-bit, palette and alpha PNGs and CMYK JPEGs.

import CPNG
import CTurboJPEG
import Foundation

/// Producers of unusual image files.
public enum ImageCodecTesting {
    /// The PNG sample layouts the tests write.
    public enum PNGLayout {
        /// 8-bit gray; 16-bit linear gray (native-endian UInt16 samples); 8-bit RGBA; 8-bit palette indices.
        case gray, gray16, rgba, palette
    }

    /// A PNG of raw `bytes` in `layout` (with an RGB `colormap` of `entries` colours for palettes).
    public static func png(
        _ bytes: [UInt8], width: Int, height: Int, layout: PNGLayout, colormap: [UInt8]? = nil,
        entries: Int = 0
    ) throws -> Data {
        let format: png_uint_32
        switch layout {
        case .gray: format = dino_png_format_gray()
        case .gray16: format = dino_png_format_linear_y()
        case .rgba: format = dino_png_format_rgba()
        case .palette: format = dino_png_format_rgb_colormap()
        }
        return try ImageCodec.encodePNG(
            bytes: bytes, width: width, height: height, format: format, colormap: colormap,
            colormapEntries: entries)
    }

    /// A CMYK JPEG of a flat colour.
    public static func cmykJPEG(width: Int, height: Int) throws -> Data {
        let pixels = [UInt8](repeating: 90, count: width * height * 4)
        return try ImageCodec.encodeJPEG(
            pixels: pixels, width: width, height: height, format: TJPF_CMYK, quality: 90,
            progressive: false)
    }
}
