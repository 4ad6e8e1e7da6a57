// MARK: - RGBImage
//
// A decoded picture: 8-bit RGB, interleaved, rows top to bottom (HWC). This is what Pillow's
// `Image.open(f).convert("RGB")` holds and what `numpy.asarray` of it returns.

public struct RGBImage: Sendable, Equatable {
    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// `height * width * 3` bytes: row `y`, column `x`, channel `c` at `(y * width + x) * 3 + c`.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0, "image size must be positive, got \(width)x\(height)")
        precondition(pixels.count == width * height * 3,
                     "a \(width)x\(height) RGB image needs \(width * height * 3) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The (r, g, b) triple at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }
}
