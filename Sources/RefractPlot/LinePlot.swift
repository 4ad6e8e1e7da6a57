// MARK: - LinePlot
//
// A small line-chart renderer for result figures ("zero-shot accuracy vs number of attention
// layers mean-ablated"): one or more series with markers, dashed horizontal reference lines,
// nice 1-2-5 ticks with labels and light grid lines, axis labels (the y label turned to read
// upwards), a title and a legend placed where it hides no data: a free corner or side of the
// plot, else to the right of it.
// Lines and markers are anti-aliased from exact distances; text uses the built-in bitmap font.
//
// Degenerate input never traps: NaN and infinite values are skipped (a line breaks there), a
// single point or all-equal values get a padded range, an empty plot shows its axes over 0...1,
// and text too long for its place is cut with "…". Characters outside printable ASCII are
// drawn as "?".

import Foundation
import RefractImage

/// An sRGB colour.
public struct PlotColor: Sendable, Hashable, CustomStringConvertible {
    public var r: UInt8
    public var g: UInt8
    public var b: UInt8

    public init(r: UInt8, g: UInt8, b: UInt8) {
        self.r = r
        self.g = g
        self.b = b
    }

    /// `0xRRGGBB`.
    public init(hex: UInt32) {
        self.init(r: UInt8(hex >> 16 & 0xFF), g: UInt8(hex >> 8 & 0xFF), b: UInt8(hex & 0xFF))
    }

    public static let white = PlotColor(hex: 0xFFFFFF)
    public static let black = PlotColor(hex: 0x000000)
    public static let gray = PlotColor(hex: 0x777777)

    /// The Okabe–Ito colour-blind-safe palette, in the order series use it (yellow, the
    /// weakest on white, last).
    public static let okabeIto: [PlotColor] = [
        PlotColor(hex: 0x0072B2),  // blue
        PlotColor(hex: 0xD55E00),  // vermillion
        PlotColor(hex: 0x009E73),  // bluish green
        PlotColor(hex: 0xCC79A7),  // reddish purple
        PlotColor(hex: 0xE69F00),  // orange
        PlotColor(hex: 0x56B4E9),  // sky blue
        PlotColor(hex: 0x000000),  // black
        PlotColor(hex: 0xF0E442),  // yellow
    ]

    public var description: String { String(format: "#%02X%02X%02X", r, g, b) }
}

/// The filled shape drawn at each data point.
public enum MarkerShape: Sendable, Hashable, CaseIterable {
    case circle, square, triangle, diamond, invertedTriangle
    /// No marker (a lone point is still drawn as a dot).
    case none

    /// The order series use when they do not choose.
    static let cycle: [MarkerShape] = [.circle, .square, .triangle, .diamond, .invertedTriangle]
}

/// One line: points joined in the order given.
public struct Series: Sendable {
    public var name: String
    public var points: [(x: Double, y: Double)]
    /// Default: the next Okabe–Ito colour.
    public var color: PlotColor?
    /// Default: circle, square, triangle, diamond, inverted triangle in turn.
    public var marker: MarkerShape?

    public init(name: String, points: [(x: Double, y: Double)], color: PlotColor? = nil, marker: MarkerShape? = nil) {
        self.name = name
        self.points = points
        self.color = color
        self.marker = marker
    }

    /// Points (x[i], y[i]); extra values of the longer array are ignored.
    public init(name: String, x: [Double], y: [Double], color: PlotColor? = nil, marker: MarkerShape? = nil) {
        self.init(name: name, points: zip(x, y).map { (x: $0, y: $1) }, color: color, marker: marker)
    }

    /// Points (i, y[i]) for i = 0, 1, 2, ... (layer indices, say).
    public init(name: String, y: [Double], color: PlotColor? = nil, marker: MarkerShape? = nil) {
        self.init(name: name, points: y.enumerated().map { (x: Double($0.offset), y: $0.element) },
                  color: color, marker: marker)
    }
}

/// A horizontal line across the plot at `y` (a baseline, chance level), listed in the legend
/// under `label` when the label is not empty.
public struct ReferenceLine: Sendable {
    public var y: Double
    public var label: String
    public var color: PlotColor
    public var dashed: Bool

    public init(y: Double, label: String, color: PlotColor = .gray, dashed: Bool = true) {
        self.y = y
        self.label = label
        self.color = color
        self.dashed = dashed
    }
}

public struct LinePlot: Sendable {
    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    public var horizontalLines: [ReferenceLine]
    /// Image size in pixels (values below 1 are taken as 1).
    public var width: Int
    public var height: Int
    /// Axis ranges; nil (the default) fits the data with a 5% margin. A range that is empty,
    /// reversed or not finite is ignored.
    public var xRange: ClosedRange<Double>?
    public var yRange: ClosedRange<Double>?
    /// Line width and marker radius in pixels.
    public var lineWidth: Double = 2.5
    public var markerRadius: Double = 4.5
    /// Pixel multiple of the 5x7 font (2: capitals 14 pixels tall).
    public var textScale: Int = 2
    public var showGrid: Bool = true
    public var showLegend: Bool = true

    public init(title: String = "", xLabel: String = "", yLabel: String = "", series: [Series] = [],
                horizontalLines: [ReferenceLine] = [], width: Int = 800, height: Int = 500) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.horizontalLines = horizontalLines
        self.width = width
        self.height = height
    }

    /// Draws the chart.
    public func render() -> RGBImage {
        let layout = self.layout()
        var canvas = Canvas(width: layout.width, height: layout.height, background: .white)
        draw(layout, on: &canvas)
        return canvas.image
    }

    /// Draws the chart and writes it as a PNG file, atomically. Errors are `ImageError`s
    /// naming the path.
    public func write(png url: URL) throws {
        try PNGEncoder.write(render(), to: url)
    }
}

// MARK: - Layout

/// One axis: its range, ticks and the pixel positions of the two range ends.
struct AxisScale: Sendable {
    var lower: Double
    var upper: Double
    var ticks: [Double] = []
    var labels: [String] = []
    var step = TickStep(mantissa: 1, exponent: 0)
    /// Pixel coordinate (continuous; pixel i spans [i, i+1)) of `lower` and of `upper`.
    var pixelLower: Double = 0
    var pixelUpper: Double = 1

    func pixel(_ v: Double) -> Double {
        pixelLower + (v - lower) / (upper - lower) * (pixelUpper - pixelLower)
    }
}

struct LegendEntry: Sendable {
    enum Kind: Sendable { case series(PlotColor, MarkerShape), reference(PlotColor, Bool), more }
    var kind: Kind
    var text: String
}

struct LegendLayout: Sendable {
    var box: PixelRect
    var entries: [LegendEntry]
    var rowHeight: Int
    var swatchWidth: Int
}

struct PlotLayout: Sendable {
    var width: Int
    var height: Int
    var textScale: Int
    /// The frame: its outline is drawn on the outermost rows and columns of this rectangle.
    var plot: PixelRect
    var x: AxisScale
    var y: AxisScale
    var title: String
    var titleOrigin: (x: Int, y: Int)
    var xLabel: String
    var xLabelOrigin: (x: Int, y: Int)
    /// Top-left of the upward-reading y label's bounding box.
    var yLabel: String
    var yLabelOrigin: (x: Int, y: Int)
    var legend: LegendLayout?
    var colors: [PlotColor]
    var markers: [MarkerShape]

    /// Whether there is room to draw the plot area at all.
    var hasPlotArea: Bool { plot.width >= 8 && plot.height >= 8 }
}

extension LinePlot {
    static let padding = 10
    static let tickLength = 5
    static let tickGap = 4
    static let legendGap = 12
    static let textColor = PlotColor(hex: 0x222222)
    static let frameColor = PlotColor(hex: 0x444444)
    static let gridColor = PlotColor(hex: 0xE4E4E4)
    static let legendBorder = PlotColor(hex: 0xC8C8C8)

    /// Finite data values along one axis, reference lines included for y.
    private func finiteValues(_ isX: Bool) -> [Double] {
        var v: [Double] = []
        for s in series {
            for p in s.points where p.x.isFinite && p.y.isFinite { v.append(isX ? p.x : p.y) }
        }
        if !isX { v += horizontalLines.map(\.y).filter(\.isFinite) }
        return v
    }

    /// The axis range: the caller's, or the data's with a 5% margin; never empty.
    static func range(of values: [Double], requested: ClosedRange<Double>?) -> (Double, Double) {
        if let r = requested, r.lowerBound.isFinite, r.upperBound.isFinite, r.upperBound > r.lowerBound,
           (r.upperBound - r.lowerBound).isFinite {
            return (r.lowerBound, r.upperBound)
        }
        guard var lo = values.min(), var hi = values.max() else { return (-0.05, 1.05) }
        // Keep the span representable.
        lo = max(lo, -1e300)
        hi = min(hi, 1e300)
        if hi - lo <= max(abs(lo), abs(hi)) * 1e-12 {
            let centre = (lo + hi) / 2
            let pad = centre == 0 ? 1 : abs(centre) * 0.1
            return (centre - pad, centre + pad)
        }
        let margin = (hi - lo) * 0.05
        return (lo - margin, hi + margin)
    }

    static func allIntegral(_ values: [Double]) -> Bool {
        !values.isEmpty && values.allSatisfy { abs($0) < 1e15 && $0 == $0.rounded() }
    }

    /// Where everything goes. The legend sits inside the plot, in the place where it covers
    /// the fewest data; when every place covers some, it moves to the right of the plot
    /// (narrowing it) as long as the plot keeps at least half the image width.
    func layout() -> PlotLayout {
        var layout = self.layout(reservingRight: 0)
        guard showLegend, layout.hasPlotArea, let (inside, covered) = legendLayout(layout, outside: false) else {
            return layout
        }
        layout.legend = inside
        if covered > 0 {
            var moved = self.layout(reservingRight: inside.box.width + LinePlot.legendGap)
            if moved.hasPlotArea, moved.plot.width >= layout.width / 2,
               let (outside, _) = legendLayout(moved, outside: true) {
                moved.legend = outside
                layout = moved
            }
        }
        return layout
    }

    /// Everything but the legend, with `extra` pixels kept free right of the plot.
    private func layout(reservingRight extra: Int) -> PlotLayout {
        let w = max(1, width), h = max(1, height)
        let s = min(8, max(1, textScale))
        let textH = BitmapFont.height(scale: s)
        let capH = BitmapFont.ascent * s
        let charW = BitmapFont.advance * s
        let pad = LinePlot.padding
        let tick = LinePlot.tickLength, gap = LinePlot.tickGap

        let xs = finiteValues(true), ys = finiteValues(false)
        let (xLo, xHi) = LinePlot.range(of: xs, requested: xRange)
        let (yLo, yHi) = LinePlot.range(of: ys, requested: yRange)

        // Vertical budget.
        let title = BitmapFont.truncated(sanitized(self.title), toWidth: w - 2 * pad - 1, scale: s)
        let top = title.isEmpty ? pad + capH / 2 + 2 : pad + textH + 10
        let xLabelRaw = sanitized(xLabel), yLabelRaw = sanitized(yLabel)
        let bottomMargin = pad + tick + gap + textH + (xLabelRaw.isEmpty ? 0 : 8 + textH)
        let plotH = h - top - bottomMargin

        var yAxis = AxisScale(lower: yLo, upper: yHi)
        if plotH > 0 {
            let t = AxisTicks.ticks(lower: yLo, upper: yHi, maxCount: max(plotH >= 5 * textH ? 4 : 2, plotH / (textH + 22)),
                                    integerStep: LinePlot.allIntegral(ys) && yRange == nil)
            yAxis.ticks = t.values
            yAxis.step = t.step
            yAxis.labels = t.values.map { AxisTicks.label($0, step: t.step) }
        }
        let yTickLabelW = yAxis.labels.map { BitmapFont.width(of: $0, scale: s) }.max() ?? 0

        // Horizontal budget.
        let left = pad + (yLabelRaw.isEmpty ? 0 : textH + 8) + yTickLabelW + gap + tick
        let right = pad + charW * 2 + max(0, extra)
        let plotW = w - left - right
        var xAxis = AxisScale(lower: xLo, upper: xHi)
        if plotW > 0 {
            var maxCount = max(2, plotW / 70)
            let integral = LinePlot.allIntegral(xs) && xRange == nil
            while true {
                let t = AxisTicks.ticks(lower: xLo, upper: xHi, maxCount: maxCount, integerStep: integral)
                let labels = t.values.map { AxisTicks.label($0, step: t.step) }
                let widest = labels.map { BitmapFont.width(of: $0, scale: s) }.max() ?? 0
                xAxis.ticks = t.values
                xAxis.step = t.step
                xAxis.labels = labels
                if t.values.count <= 2 || t.values.count * (widest + 2 * charW) <= plotW { break }
                maxCount = t.values.count - 1
            }
        }

        let plot = PixelRect(x: left, y: top, width: max(0, plotW), height: max(0, plotH))
        xAxis.pixelLower = Double(plot.x) + 0.5
        xAxis.pixelUpper = Double(plot.maxX) - 0.5
        yAxis.pixelLower = Double(plot.maxY) - 0.5
        yAxis.pixelUpper = Double(plot.y) + 0.5

        // Text placement.
        let titleW = BitmapFont.width(of: title, scale: s) + 1
        let titleX = min(max(pad, plot.x + plot.width / 2 - titleW / 2), w - pad - titleW)
        let xLabelText = BitmapFont.truncated(xLabelRaw, toWidth: max(0, w - 2 * pad), scale: s)
        let xLabelW = BitmapFont.width(of: xLabelText, scale: s)
        let xLabelX = min(max(pad, plot.x + plot.width / 2 - xLabelW / 2), w - pad - xLabelW)
        let xLabelY = plot.maxY + tick + gap + textH + 8
        let yLabelText = BitmapFont.truncated(yLabelRaw, toWidth: max(0, plot.height), scale: s)
        let yLabelLen = BitmapFont.width(of: yLabelText, scale: s)
        let yLabelY = plot.y + plot.height / 2 - yLabelLen / 2

        let colors = series.indices.map { series[$0].color ?? PlotColor.okabeIto[$0 % PlotColor.okabeIto.count] }
        let markers = series.indices.map { series[$0].marker ?? MarkerShape.cycle[$0 % MarkerShape.cycle.count] }

        return PlotLayout(width: w, height: h, textScale: s, plot: plot, x: xAxis, y: yAxis,
                          title: title, titleOrigin: (titleX, pad),
                          xLabel: xLabelText, xLabelOrigin: (xLabelX, xLabelY),
                          yLabel: yLabelText, yLabelOrigin: (pad, yLabelY),
                          legend: nil, colors: colors, markers: markers)
    }

    /// Printable ASCII stays; line breaks and tabs become spaces; anything else becomes "?".
    func sanitized(_ text: String) -> String {
        String(text.map { c -> Character in
            if c == "\n" || c == "\r\n" || c == "\r" || c == "\t" { return " " }
            guard let a = c.asciiValue, a >= 32, a < 127 else { return "?" }
            return c
        })
    }

    /// The legend's box and entries, with the number of data samples it covers; nil when
    /// nothing is named or there is no room. `outside`: at the top, just right of the plot.
    private func legendLayout(_ layout: PlotLayout, outside: Bool) -> (LegendLayout, Int)? {
        let s = layout.textScale
        let plot = layout.plot
        var entries: [LegendEntry] = []
        for (i, ser) in series.enumerated() where !ser.name.isEmpty {
            entries.append(LegendEntry(kind: .series(layout.colors[i], layout.markers[i]), text: sanitized(ser.name)))
        }
        for line in horizontalLines where !line.label.isEmpty && line.y.isFinite {
            entries.append(LegendEntry(kind: .reference(line.color, line.dashed), text: sanitized(line.label)))
        }
        if entries.isEmpty { return nil }
        let inset = 8, inner = 8
        let rowH = BitmapFont.height(scale: s) + 6
        let swatchW = 18 * s
        // Rows that fit; when some do not, the last row says how many are left out.
        let maxRows = (plot.height - 2 * inset - 2 * inner + 6) / rowH
        if maxRows < 1 { return nil }
        if entries.count > maxRows {
            let kept = max(0, maxRows - 1)
            let hidden = entries.count - kept
            entries = Array(entries.prefix(kept)) + [LegendEntry(kind: .more, text: "… \(hidden) more")]
        }
        let maxTextW = max(BitmapFont.advance * s * 4, plot.width * 3 / 5 - swatchW - 3 * inner)
        for i in entries.indices {
            entries[i].text = BitmapFont.truncated(entries[i].text, toWidth: maxTextW, scale: s)
        }
        let textW = entries.map { BitmapFont.width(of: $0.text, scale: s) }.max() ?? 0
        let boxW = inner + swatchW + inner + textW + inner
        let boxH = 2 * inner + entries.count * rowH - 6
        if boxH > plot.height - 2 * inset { return nil }
        if outside {
            let box = PixelRect(x: plot.maxX + LinePlot.legendGap, y: plot.y, width: boxW, height: boxH)
            if box.maxX > layout.width { return nil }
            return (LegendLayout(box: box, entries: entries, rowHeight: rowH, swatchWidth: swatchW), 0)
        }
        if boxW > plot.width - 2 * inset { return nil }

        // Candidate places, best first when equally good.
        let xl = plot.x + inset, xr = plot.maxX - inset - boxW, xc = plot.x + (plot.width - boxW) / 2
        let yt = plot.y + inset, yb = plot.maxY - inset - boxH, yc = plot.y + (plot.height - boxH) / 2
        let candidates = [(xr, yt), (xl, yt), (xr, yb), (xl, yb), (xr, yc), (xl, yc), (xc, yt), (xc, yb)]
        let samples = dataSamples(layout)
        var best = PixelRect(x: xr, y: yt, width: boxW, height: boxH)
        var bestScore = Int.max
        for (cx, cy) in candidates {
            let r = PixelRect(x: cx, y: cy, width: boxW, height: boxH)
            let grown = r.insetBy(-6)
            var score = 0
            for p in samples where grown.contains(x: p.0, y: p.1) { score += 1 }
            if score < bestScore {
                bestScore = score
                best = r
            }
        }
        return (LegendLayout(box: best, entries: entries, rowHeight: rowH, swatchWidth: swatchW), bestScore)
    }

    /// Pixel positions along every drawn line (every 2 pixels) and at every marker, for legend
    /// placement.
    private func dataSamples(_ layout: PlotLayout) -> [(Int, Int)] {
        var out: [(Int, Int)] = []
        let plot = layout.plot
        func add(_ x: Double, _ y: Double) {
            guard x.isFinite, y.isFinite, x >= Double(plot.x), x < Double(plot.maxX),
                  y >= Double(plot.y), y < Double(plot.maxY) else { return }
            out.append((Int(x), Int(y)))
        }
        for ser in series {
            var previous: (Double, Double)?
            for p in ser.points {
                guard p.x.isFinite, p.y.isFinite else { previous = nil; continue }
                let q = (layout.x.pixel(p.x), layout.y.pixel(p.y))
                add(q.0, q.1)
                // Markers are several pixels across: count them heavier than line samples.
                for _ in 0..<3 { add(q.0, q.1) }
                if let a = previous,
                   let (x0, y0, x1, y1) = clipSegment(a.0, a.1, q.0, q.1, minX: Double(plot.x), minY: Double(plot.y),
                                                      maxX: Double(plot.maxX), maxY: Double(plot.maxY)) {
                    let n = Int(min(4000, (hypot(x1 - x0, y1 - y0) / 2).rounded(.up)))
                    if n > 0 {
                        for k in 1...n {
                            let t = Double(k) / Double(n)
                            add(x0 + t * (x1 - x0), y0 + t * (y1 - y0))
                        }
                    }
                }
                previous = q
            }
        }
        for line in horizontalLines where line.y.isFinite {
            let py = layout.y.pixel(line.y)
            var px = Double(plot.x)
            while px < Double(plot.maxX) { add(px, py); px += 2 }
        }
        return out
    }
}

// MARK: - Drawing

extension LinePlot {
    func draw(_ layout: PlotLayout, on canvas: inout Canvas) {
        let s = layout.textScale
        let plot = layout.plot
        let capH = BitmapFont.ascent * s
        let text = LinePlot.textColor

        if layout.hasPlotArea {
            let interior = plot.insetBy(1)
            // Grid.
            if showGrid {
                for v in layout.x.ticks {
                    let px = Int(layout.x.pixel(v).rounded(.down))
                    if px > plot.x && px < plot.maxX - 1 {
                        canvas.fill(PixelRect(x: px, y: interior.y, width: 1, height: interior.height), LinePlot.gridColor)
                    }
                }
                for v in layout.y.ticks {
                    let py = Int(layout.y.pixel(v).rounded(.down))
                    if py > plot.y && py < plot.maxY - 1 {
                        canvas.fill(PixelRect(x: interior.x, y: py, width: interior.width, height: 1), LinePlot.gridColor)
                    }
                }
            }
            // Reference lines.
            for line in horizontalLines where line.y.isFinite {
                var mask = CoverageMask(width: canvas.width, height: canvas.height, clip: interior)
                let py = layout.y.pixel(line.y)
                if line.dashed {
                    let dash = 5.0 * Double(s), space = 3.0 * Double(s)
                    var x = Double(interior.x)
                    while x < Double(interior.maxX) {
                        mask.segment(x + 0.75, py, min(x + dash, Double(interior.maxX)) - 0.75, py, lineWidth: 1.5)
                        x += dash + space
                    }
                } else {
                    mask.segment(Double(interior.x), py, Double(interior.maxX), py, lineWidth: 1.5)
                }
                canvas.composite(mask, line.color)
            }
            // Series.
            for (i, ser) in series.enumerated() {
                var mask = CoverageMask(width: canvas.width, height: canvas.height, clip: interior)
                let pts = ser.points.map { p -> (Double, Double)? in
                    guard p.x.isFinite, p.y.isFinite else { return nil }
                    return (layout.x.pixel(p.x), layout.y.pixel(p.y))
                }
                for k in pts.indices {
                    guard let q = pts[k] else { continue }
                    if k > 0, let a = pts[k - 1] {
                        mask.segment(a.0, a.1, q.0, q.1, lineWidth: lineWidth)
                    }
                    let lonely = (k == 0 || pts[k - 1] == nil) && (k + 1 == pts.count || pts[k + 1] == nil)
                    let shape = layout.markers[i]
                    if shape != .none {
                        mask.marker(shape, cx: q.0, cy: q.1, radius: markerRadius)
                    } else if lonely {
                        mask.marker(.circle, cx: q.0, cy: q.1, radius: max(1.5, lineWidth))
                    }
                }
                canvas.composite(mask, layout.colors[i])
            }
            // Frame, ticks, tick labels.
            canvas.stroke(plot, LinePlot.frameColor)
            let labelTop = plot.maxY + LinePlot.tickLength + LinePlot.tickGap
            for (v, label) in zip(layout.x.ticks, layout.x.labels) {
                let px = Int(layout.x.pixel(v).rounded(.down))
                canvas.fill(PixelRect(x: px, y: plot.maxY, width: 1, height: LinePlot.tickLength), LinePlot.frameColor)
                let lw = BitmapFont.width(of: label, scale: s)
                let lx = min(max(0, px - lw / 2), layout.width - lw)
                canvas.drawText(label, x: lx, y: labelTop, scale: s, color: text)
            }
            for (v, label) in zip(layout.y.ticks, layout.y.labels) {
                let py = Int(layout.y.pixel(v).rounded(.down))
                canvas.fill(PixelRect(x: plot.x - LinePlot.tickLength, y: py, width: LinePlot.tickLength, height: 1),
                            LinePlot.frameColor)
                let lw = BitmapFont.width(of: label, scale: s)
                let lx = plot.x - LinePlot.tickLength - LinePlot.tickGap - lw
                canvas.drawText(label, x: lx, y: py - capH / 2, scale: s, color: text)
            }
        }
        // Axis labels and title.
        if !layout.xLabel.isEmpty && layout.hasPlotArea {
            canvas.drawText(layout.xLabel, x: layout.xLabelOrigin.x, y: layout.xLabelOrigin.y, scale: s, color: text)
        }
        if !layout.yLabel.isEmpty && layout.hasPlotArea {
            canvas.drawTextUpwards(layout.yLabel, x: layout.yLabelOrigin.x, y: layout.yLabelOrigin.y, scale: s, color: text)
        }
        if !layout.title.isEmpty {
            canvas.drawText(layout.title, x: layout.titleOrigin.x, y: layout.titleOrigin.y, scale: s, color: text, bold: true)
        }
        if let legend = layout.legend { drawLegend(legend, scale: s, on: &canvas) }
    }

    private func drawLegend(_ legend: LegendLayout, scale s: Int, on canvas: inout Canvas) {
        let box = legend.box
        canvas.fill(box, .white)
        canvas.stroke(box, LinePlot.legendBorder)
        let inner = 8
        let capH = BitmapFont.ascent * s
        for (i, entry) in legend.entries.enumerated() {
            let rowTop = box.y + inner + i * legend.rowHeight
            let midY = Double(rowTop) + Double(capH) / 2
            let x0 = Double(box.x + inner), x1 = x0 + Double(legend.swatchWidth)
            var mask = CoverageMask(width: canvas.width, height: canvas.height, clip: box.insetBy(1))
            switch entry.kind {
            case .series(let color, let marker):
                mask.segment(x0 + 2, midY, x1 - 2, midY, lineWidth: lineWidth)
                if marker != .none { mask.marker(marker, cx: (x0 + x1) / 2, cy: midY, radius: markerRadius) }
                canvas.composite(mask, color)
            case .reference(let color, let dashed):
                if dashed {
                    let dash = 5.0 * Double(s), space = 3.0 * Double(s)
                    var x = x0
                    while x < x1 {
                        mask.segment(x + 0.75, midY, min(x + dash, x1) - 0.75, midY, lineWidth: 1.5)
                        x += dash + space
                    }
                } else {
                    mask.segment(x0, midY, x1, midY, lineWidth: 1.5)
                }
                canvas.composite(mask, color)
            case .more:
                break
            }
            canvas.drawText(entry.text, x: box.x + inner + legend.swatchWidth + inner, y: rowTop, scale: s,
                            color: LinePlot.textColor, clip: box.insetBy(1))
        }
    }
}
