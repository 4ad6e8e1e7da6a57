// MARK: - Canvas
//
// An 8-bit RGB raster with the few drawing operations charts need: crisp rectangles and
// 1-pixel rules, bitmap text (horizontal, or turned 90° counter-clockwise), and compositing of
// an anti-aliased coverage mask in one colour. Everything is clipped to the canvas, so callers
// never need to check bounds.

import RefractImage

/// An axis-aligned pixel rectangle: columns `x ..< x + width`, rows `y ..< y + height`.
struct PixelRect: Sendable, Equatable {
    var x: Int
    var y: Int
    var width: Int
    var height: Int

    var maxX: Int { x + width }
    var maxY: Int { y + height }
    var isEmpty: Bool { width <= 0 || height <= 0 }

    func contains(x px: Int, y py: Int) -> Bool {
        px >= x && px < maxX && py >= y && py < maxY
    }

    func intersection(_ o: PixelRect) -> PixelRect {
        let x0 = max(x, o.x), y0 = max(y, o.y)
        let x1 = min(maxX, o.maxX), y1 = min(maxY, o.maxY)
        return PixelRect(x: x0, y: y0, width: max(0, x1 - x0), height: max(0, y1 - y0))
    }

    func insetBy(_ d: Int) -> PixelRect {
        PixelRect(x: x + d, y: y + d, width: width - 2 * d, height: height - 2 * d)
    }
}

struct Canvas {
    let width: Int
    let height: Int
    /// RGB, rows top to bottom, like `RGBImage.pixels`.
    var pixels: [UInt8]

    init(width: Int, height: Int, background: PlotColor) {
        self.width = width
        self.height = height
        var p = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            p[3 * i] = background.r
            p[3 * i + 1] = background.g
            p[3 * i + 2] = background.b
        }
        pixels = p
    }

    var bounds: PixelRect { PixelRect(x: 0, y: 0, width: width, height: height) }

    var image: RGBImage { RGBImage(width: width, height: height, pixels: pixels) }

    func color(x: Int, y: Int) -> PlotColor {
        let i = (y * width + x) * 3
        return PlotColor(r: pixels[i], g: pixels[i + 1], b: pixels[i + 2])
    }

    /// Sets one pixel (ignored outside the canvas or `clip`).
    mutating func set(x: Int, y: Int, _ c: PlotColor, clip: PixelRect? = nil) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        if let clip, !clip.contains(x: x, y: y) { return }
        let i = (y * width + x) * 3
        pixels[i] = c.r
        pixels[i + 1] = c.g
        pixels[i + 2] = c.b
    }

    /// Mixes `c` into one pixel with opacity `alpha` (0...1).
    mutating func blend(x: Int, y: Int, _ c: PlotColor, alpha: Float) {
        guard x >= 0, y >= 0, x < width, y < height, alpha > 0 else { return }
        if alpha >= 1 { set(x: x, y: y, c); return }
        let i = (y * width + x) * 3
        @inline(__always) func mix(_ old: UInt8, _ new: UInt8) -> UInt8 {
            UInt8((Float(old) + (Float(new) - Float(old)) * alpha).rounded())
        }
        pixels[i] = mix(pixels[i], c.r)
        pixels[i + 1] = mix(pixels[i + 1], c.g)
        pixels[i + 2] = mix(pixels[i + 2], c.b)
    }

    mutating func fill(_ r: PixelRect, _ c: PlotColor) {
        let r = r.intersection(bounds)
        guard !r.isEmpty else { return }
        for y in r.y..<r.maxY {
            for x in r.x..<r.maxX { set(x: x, y: y, c) }
        }
    }

    /// The 1-pixel outline just inside `r`.
    mutating func stroke(_ r: PixelRect, _ c: PlotColor) {
        guard !r.isEmpty else { return }
        fill(PixelRect(x: r.x, y: r.y, width: r.width, height: 1), c)
        fill(PixelRect(x: r.x, y: r.maxY - 1, width: r.width, height: 1), c)
        fill(PixelRect(x: r.x, y: r.y, width: 1, height: r.height), c)
        fill(PixelRect(x: r.maxX - 1, y: r.y, width: 1, height: r.height), c)
    }

    /// Draws `text` with the top of its capitals at row `y` and its first column at `x`.
    /// `bold` draws every glyph twice, one pixel apart.
    mutating func drawText(_ text: String, x: Int, y: Int, scale: Int, color: PlotColor,
                           bold: Bool = false, clip: PixelRect? = nil) {
        let font = BitmapFont.standard
        var penX = x
        for ch in text {
            let rows = font.glyph(ch)
            for (gy, mask) in rows.enumerated() where mask != 0 {
                for gx in 0..<BitmapFont.glyphWidth where mask >> UInt8(BitmapFont.glyphWidth - 1 - gx) & 1 == 1 {
                    for sy in 0..<scale {
                        for sx in 0..<(scale + (bold ? 1 : 0)) {
                            set(x: penX + gx * scale + sx, y: y + gy * scale + sy, color, clip: clip)
                        }
                    }
                }
            }
            penX += BitmapFont.advance * scale
        }
    }

    /// Draws `text` turned 90° counter-clockwise (reading upwards). The text's bounding box is
    /// `BitmapFont.height(scale:)` wide and `BitmapFont.width(of:scale:)` tall, with its top-left
    /// corner at (`x`, `y`); the first character is at the bottom.
    mutating func drawTextUpwards(_ text: String, x: Int, y: Int, scale: Int, color: PlotColor,
                                  clip: PixelRect? = nil) {
        let font = BitmapFont.standard
        let length = BitmapFont.width(of: text, scale: scale)
        var penX = 0
        for ch in text {
            let rows = font.glyph(ch)
            for (gy, mask) in rows.enumerated() where mask != 0 {
                for gx in 0..<BitmapFont.glyphWidth where mask >> UInt8(BitmapFont.glyphWidth - 1 - gx) & 1 == 1 {
                    for sy in 0..<scale {
                        for sx in 0..<scale {
                            // Unrotated text pixel (tx, ty) goes to (x + ty, y + length - 1 - tx).
                            let tx = penX + gx * scale + sx, ty = gy * scale + sy
                            set(x: x + ty, y: y + length - 1 - tx, color, clip: clip)
                        }
                    }
                }
            }
            penX += BitmapFont.advance * scale
        }
    }

    /// Mixes `color` into the canvas wherever `mask` has coverage.
    mutating func composite(_ mask: CoverageMask, _ color: PlotColor) {
        guard let d = mask.dirty else { return }
        for y in d.y..<d.maxY {
            for x in d.x..<d.maxX {
                let a = mask.values[y * mask.width + x]
                if a > 0 { blend(x: x, y: y, color, alpha: a) }
            }
        }
    }
}

/// Anti-aliased coverage (0...1) of shapes drawn in one colour. Overlapping shapes take the
/// maximum coverage, so joins between segments and markers on lines never darken.
struct CoverageMask {
    let width: Int
    let height: Int
    /// Only pixels inside `clip` receive coverage.
    let clip: PixelRect
    var values: [Float]
    /// The rectangle holding every covered pixel, nil while empty.
    private(set) var dirty: PixelRect?

    init(width: Int, height: Int, clip: PixelRect) {
        self.width = width
        self.height = height
        self.clip = clip.intersection(PixelRect(x: 0, y: 0, width: width, height: height))
        values = [Float](repeating: 0, count: width * height)
    }

    /// Pixels whose centres lie in the box `x0...x1`, `y0...y1` (continuous coordinates,
    /// pixel (i, j) covering [i, i+1) x [j, j+1)), clipped.
    private func pixelBox(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double) -> PixelRect {
        let lo = { (v: Double, limit: Int) -> Int in Int(max(Double(-1), min(Double(limit), (v - 0.5).rounded(.down)))) }
        let ix0 = lo(x0, width), iy0 = lo(y0, height)
        let ix1 = lo(x1, width) + 1, iy1 = lo(y1, height) + 1
        return PixelRect(x: ix0, y: iy0, width: ix1 - ix0 + 1, height: iy1 - iy0 + 1).intersection(clip)
    }

    private mutating func cover(_ x: Int, _ y: Int, _ a: Float) {
        guard a > 0 else { return }
        let i = y * width + x
        if a > values[i] { values[i] = min(1, a) }
        if let d = dirty {
            if !d.contains(x: x, y: y) {
                let x0 = min(d.x, x), y0 = min(d.y, y)
                let x1 = max(d.maxX, x + 1), y1 = max(d.maxY, y + 1)
                dirty = PixelRect(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
            }
        } else {
            dirty = PixelRect(x: x, y: y, width: 1, height: 1)
        }
    }

    /// A line segment of total width `lineWidth` with round caps, from (x0, y0) to (x1, y1).
    /// The segment is first clipped to the mask's area, so far-away coordinates cost nothing.
    mutating func segment(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, lineWidth: Double) {
        let r = lineWidth / 2
        let margin = r + 2
        guard let (ax, ay, bx, by) = clipSegment(x0, y0, x1, y1,
                                                  minX: Double(clip.x) - margin, minY: Double(clip.y) - margin,
                                                  maxX: Double(clip.maxX) + margin, maxY: Double(clip.maxY) + margin)
        else { return }
        let box = pixelBox(min(ax, bx) - r - 1, min(ay, by) - r - 1, max(ax, bx) + r + 1, max(ay, by) + r + 1)
        guard !box.isEmpty else { return }
        let dx = bx - ax, dy = by - ay
        let len2 = dx * dx + dy * dy
        for py in box.y..<box.maxY {
            for px in box.x..<box.maxX {
                let cx = Double(px) + 0.5, cy = Double(py) + 0.5
                var t = len2 > 0 ? ((cx - ax) * dx + (cy - ay) * dy) / len2 : 0
                t = max(0, min(1, t))
                let ex = cx - (ax + t * dx), ey = cy - (ay + t * dy)
                let d = (ex * ex + ey * ey).squareRoot()
                cover(px, py, Float(max(0, min(1, r + 0.5 - d))))
            }
        }
    }

    /// A filled marker of the given shape centred at (cx, cy); `radius` is the circle's radius
    /// (other shapes are sized to look about as heavy).
    mutating func marker(_ shape: MarkerShape, cx: Double, cy: Double, radius: Double) {
        if shape == .none { return }
        let reach = radius * 1.5 + 1
        let box = pixelBox(cx - reach, cy - reach, cx + reach, cy + reach)
        guard !box.isEmpty else { return }
        for py in box.y..<box.maxY {
            for px in box.x..<box.maxX {
                let x = Double(px) + 0.5 - cx, y = Double(py) + 0.5 - cy
                let sd: Double  // signed distance, negative inside
                switch shape {
                case .circle:
                    sd = (x * x + y * y).squareRoot() - radius
                case .square:
                    sd = max(abs(x), abs(y)) - radius * 0.88
                case .diamond:
                    sd = (abs(x) + abs(y)) / 2.0.squareRoot() - radius * 0.9
                case .triangle, .invertedTriangle:
                    // Equilateral triangle with its centroid at the centre; the half-plane
                    // distances are exact inside and close enough for anti-aliasing outside.
                    let s = radius * 1.25
                    let yy = shape == .triangle ? y : -y
                    let k = 0.5, c = 3.0.squareRoot() / 2
                    let d1 = yy - s * k                 // bottom edge
                    let d2 = -yy * k + x * c - s * k    // right edge
                    let d3 = -yy * k - x * c - s * k    // left edge
                    sd = max(d1, d2, d3)
                case .none:
                    sd = 1
                }
                cover(px, py, Float(max(0, min(1, 0.5 - sd))))
            }
        }
    }
}

/// Liang–Barsky: the part of the segment inside the rectangle, or nil when none is.
func clipSegment(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double,
                 minX: Double, minY: Double, maxX: Double, maxY: Double) -> (Double, Double, Double, Double)? {
    guard x0.isFinite, y0.isFinite, x1.isFinite, y1.isFinite else { return nil }
    var t0 = 0.0, t1 = 1.0
    let dx = x1 - x0, dy = y1 - y0
    guard dx.isFinite, dy.isFinite else { return nil }
    for (p, q) in [(-dx, x0 - minX), (dx, maxX - x0), (-dy, y0 - minY), (dy, maxY - y0)] {
        if p == 0 {
            if q < 0 { return nil }
        } else {
            let r = q / p
            if p < 0 { if r > t1 { return nil }; if r > t0 { t0 = r } }
            else { if r < t0 { return nil }; if r < t1 { t1 = r } }
        }
    }
    return (x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy)
}
