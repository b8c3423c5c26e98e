// contact-sheet.png of a curation run: one row per curated image (the first `rows` that retrieved
// anything), the curated image in the first column framed in orange, then up to `columns` of the pool
// images retrieved for it (its nearest first, or its cluster's sample), each a 96-px square (the central
// square of the image, resized). Images that cannot be read are left grey.

import DinoData
import Foundation

/// Renders the contact sheet.
public enum ContactSheet {
    public static let tile = 96
    static let gap = 4
    static let frame = 3

    /// The PNG bytes of the sheet.
    public static func render(
        queries: FeatureFile, pool: FeatureFile, retrieval: RetrievalResult, rows: Int, columns: Int = 6
    ) throws -> Data {
        let shown = retrieval.perQuery.indices.filter { !retrieval.perQuery[$0].isEmpty }.prefix(Swift.max(1, rows))
        let height = gap + Swift.max(1, shown.count) * (tile + gap)
        let width = gap + (columns + 1) * (tile + gap)
        var pixels = [UInt8](repeating: 255, count: width * height * 3)
        func place(_ path: String, row: Int, column: Int, framed: Bool) {
            let top = gap + row * (tile + gap), left = gap + column * (tile + gap)
            let image = (try? Data(contentsOf: URL(fileURLWithPath: path))).flatMap { try? ImageCodec.decode($0) }
            let square = image.map { image -> RGBImage in
                let side = Swift.min(image.width, image.height)
                let box = CropBox(
                    top: (image.height - side) / 2, left: (image.width - side) / 2, height: side, width: side)
                return Augment.resizedCrop(image, box: box, size: tile)
            }
            for y in 0..<tile {
                for x in 0..<tile {
                    let border = framed && (x < frame || y < frame || x >= tile - frame || y >= tile - frame)
                    let at = ((top + y) * width + left + x) * 3
                    for c in 0..<3 {
                        if border {
                            pixels[at + c] = [255, 140, 0][c]
                        } else {
                            pixels[at + c] = square?.pixels[(y * tile + x) * 3 + c] ?? 160
                        }
                    }
                }
            }
        }
        for (row, query) in shown.enumerated() {
            place(queries.paths[query], row: row, column: 0, framed: true)
            for (column, poolRow) in retrieval.perQuery[query].prefix(columns).enumerated() {
                place(pool.paths[poolRow], row: row, column: column + 1, framed: false)
            }
        }
        return try ImageCodec.encodePNG(RGBImage(width: width, height: height, pixels: pixels))
    }
}
