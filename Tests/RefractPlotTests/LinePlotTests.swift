import Foundation
import XCTest
import RefractImage
@testable import RefractPlot

final class LinePlotTests: XCTestCase {
    // MARK: Helpers

    private func color(_ image: RGBImage, _ x: Int, _ y: Int) -> PlotColor {
        let p = image[x, y]
        return PlotColor(r: p.r, g: p.g, b: p.b)
    }

    /// Pixels of exactly `c`.
    private func pixels(of c: PlotColor, in image: RGBImage) -> [(Int, Int)] {
        var out: [(Int, Int)] = []
        for y in 0..<image.height {
            for x in 0..<image.width where color(image, x, y) == c { out.append((x, y)) }
        }
        return out
    }

    /// Distance from (px, py) to the polyline through `pts` (pixel coordinates).
    private func distance(_ px: Double, _ py: Double, to pts: [(Double, Double)]) -> Double {
        var best = Double.infinity
        for (i, a) in pts.enumerated() {
            best = min(best, hypot(px - a.0, py - a.1))
            guard i + 1 < pts.count else { continue }
            let b = pts[i + 1]
            let dx = b.0 - a.0, dy = b.1 - a.1
            let len2 = dx * dx + dy * dy
            guard len2 > 0 else { continue }
            let t = max(0, min(1, ((px - a.0) * dx + (py - a.1) * dy) / len2))
            best = min(best, hypot(px - (a.0 + t * dx), py - (a.1 + t * dy)))
        }
        return best
    }

    private func isNearWhite(_ c: PlotColor) -> Bool { c.r > 200 && c.g > 200 && c.b > 200 }

    private func inkBox(_ image: RGBImage, in r: PixelRect) -> PixelRect? {
        var minX = Int.max, maxX = Int.min, minY = Int.max, maxY = Int.min
        for y in max(0, r.y)..<min(image.height, r.maxY) {
            for x in max(0, r.x)..<min(image.width, r.maxX) where color(image, x, y) != .white {
                minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
            }
        }
        return minX == Int.max ? nil : PixelRect(x: minX, y: minY, width: maxX - minX + 1, height: maxY - minY + 1)
    }

    private let layers = (0..<12).map(Double.init)
    private let accuracy: [Double] = [68.3, 68.1, 67.9, 67.5, 67.2, 66.0, 64.1, 60.2, 52.3, 40.8, 22.5, 3.1]
    private let accuracyB: [Double] = [72.0, 71.9, 71.9, 71.6, 71.0, 70.2, 69.5, 66.0, 61.0, 49.9, 30.2, 8.0]

    private func figure() -> LinePlot {
        var plot = LinePlot(title: "Zero-shot accuracy vs attention layers mean-ablated",
                            xLabel: "Attention layers mean-ablated (from the first)",
                            yLabel: "Top-1 accuracy (%)")
        plot.series = [Series(name: "ViT-B-16 (OpenAI)", x: layers, y: accuracy),
                       Series(name: "ViT-B-16 (LAION-2B)", x: layers, y: accuracyB)]
        plot.horizontalLines = [ReferenceLine(y: 0.1, label: "chance (0.1%)")]
        return plot
    }

    // MARK: Figures

    /// Writes the example figure (and a few awkward ones) where REFRACT_PLOT_OUTPUT points, for
    /// looking at by eye; without the variable, into a temporary directory that is removed.
    func testExampleFiguresAreWrittenAndDecodable() throws {
        let env = ProcessInfo.processInfo.environment["REFRACT_PLOT_OUTPUT"]
        let dir = env.map { URL(fileURLWithPath: $0, isDirectory: true) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("refract-plot-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { if env == nil { try? FileManager.default.removeItem(at: dir) } }

        var many = LinePlot(title: "Eight series, floats on x", xLabel: "x", yLabel: "sin(x + k)")
        many.series = (0..<8).map { k in
            Series(name: "k = \(k)", points: stride(from: -3.0, through: 3.0, by: 0.25).map { (x: $0, y: sin($0 + Double(k))) })
        }
        var awkward = LinePlot(title: String(repeating: "A very long title that cannot fit ", count: 4),
                               xLabel: String(repeating: "long x label ", count: 12), yLabel: String(repeating: "long y label ", count: 8))
        awkward.series = [Series(name: String(repeating: "very long series name ", count: 6), y: [1, .nan, 3, 4, .infinity, 2]),
                          Series(name: "single", points: [(x: 2.5, y: 2.5)]),
                          Series(name: "non-ASCII: αβγ → ∞", y: [2, 2, 2, 2, 2, 2])]
        var flat = LinePlot(title: "All equal", xLabel: "layer", yLabel: "%")
        flat.series = [Series(name: "constant", y: [50, 50, 50])]
        let empty = LinePlot(title: "No data", xLabel: "x", yLabel: "y")
        var small = figure()
        small.width = 420
        small.height = 280
        small.title = "Small figure"

        for (name, plot) in [("figure", figure()), ("many", many), ("awkward", awkward), ("flat", flat), ("empty", empty), ("small", small)] {
            let url = dir.appendingPathComponent("\(name).png")
            try plot.write(png: url)
            let decoded = try ImageDecoder.decode(contentsOf: url)
            XCTAssertEqual(decoded, plot.render(), name)
            XCTAssertEqual(decoded.width, plot.width)
            XCTAssertEqual(decoded.height, plot.height)
        }
    }

    func testWritingIntoAMissingDirectoryFailsWithTheImageError() {
        let url = URL(fileURLWithPath: "/nonexistent-refract-dir/\(UUID().uuidString)/plot.png")
        XCTAssertThrowsError(try figure().write(png: url)) { error in
            XCTAssertEqual((error as? ImageError)?.source, url.path)
        }
    }

    // MARK: Where things are drawn

    /// Each series' colour appears at each of its data points and nowhere except near its line
    /// (or in its legend swatch).
    func testSeriesAreDrawnAtTheirDataAndNowhereElse() {
        let plot = figure()
        let layout = plot.layout()
        let image = plot.render()
        XCTAssertEqual(layout.colors, Array(PlotColor.okabeIto.prefix(2)))
        let legend = try! XCTUnwrap(layout.legend)
        for (i, s) in plot.series.enumerated() {
            let c = layout.colors[i]
            let pts = s.points.map { (layout.x.pixel($0.x), layout.y.pixel($0.y)) }
            for (px, py) in pts {
                var found = false
                for dy in -1...1 {
                    for dx in -1...1 where color(image, Int(px) + dx, Int(py) + dy) == c { found = true }
                }
                XCTAssertTrue(found, "no \(c) at data point (\(px), \(py))")
            }
            let reach = plot.markerRadius * 1.6 + 1.5
            var inLegend = 0
            for (x, y) in pixels(of: c, in: image) {
                if legend.box.contains(x: x, y: y) { inLegend += 1; continue }
                let d = distance(Double(x) + 0.5, Double(y) + 0.5, to: pts)
                XCTAssertLessThanOrEqual(d, reach, "stray \(c) pixel at (\(x), \(y))")
            }
            XCTAssertGreaterThan(inLegend, 20, "legend swatch of series \(i)")
        }
        // Midway between two points the line passes through the interpolated position.
        let c0 = layout.colors[0]
        let mx = layout.x.pixel(9.5), my = layout.y.pixel((accuracy[9] + accuracy[10]) / 2)
        XCTAssertTrue((-1...1).contains { dy in (-1...1).contains { dx in color(image, Int(mx) + dx, Int(my) + dy) == c0 } })
    }

    func testLegendAvoidsTheData() {
        let plot = figure()
        let layout = plot.layout()
        let legend = try! XCTUnwrap(layout.legend)
        XCTAssertEqual(legend.entries.map(\.text), ["ViT-B-16 (OpenAI)", "ViT-B-16 (LAION-2B)", "chance (0.1%)"])
        for s in plot.series {
            let pts = s.points.map { (layout.x.pixel($0.x), layout.y.pixel($0.y)) }
            for y in legend.box.y..<legend.box.maxY {
                for x in legend.box.x..<legend.box.maxX {
                    XCTAssertGreaterThan(distance(Double(x), Double(y), to: pts), plot.lineWidth, "legend covers data")
                }
            }
        }
        // Data along the bottom leaves the first choice, top right, free; data along the top
        // sends the legend to the bottom right.
        let low = LinePlot(series: [Series(name: "low", y: [0, 0.1, 0, 0.1, 0]), Series(name: "", y: [1])]).layout()
        let lowBox = try! XCTUnwrap(low.legend).box
        XCTAssertEqual(lowBox.maxX, low.plot.maxX - 8)
        XCTAssertEqual(lowBox.y, low.plot.y + 8)
        let high = LinePlot(series: [Series(name: "high", y: [1, 0.9, 1, 0.9, 1]), Series(name: "", y: [0])]).layout()
        let highBox = try! XCTUnwrap(high.legend).box
        XCTAssertEqual(highBox.maxX, high.plot.maxX - 8)
        XCTAssertEqual(highBox.maxY, high.plot.maxY - 8)
        // Curves everywhere: the legend moves right of the plot, which narrows.
        var crowded = LinePlot(series: (0..<8).map { k in
            Series(name: "k = \(k)", points: stride(from: -3.0, through: 3.0, by: 0.25).map { (x: $0, y: sin($0 + Double(k))) })
        })
        let inside = crowded.layout()
        let box = try! XCTUnwrap(inside.legend).box
        XCTAssertGreaterThan(box.x, inside.plot.maxX)
        XCTAssertLessThanOrEqual(box.maxX, inside.width)
        XCTAssertEqual(box.y, inside.plot.y)
        XCTAssertEqual(inside.legend?.entries.count, 8)
        // ... unless that would leave the plot less than half the image.
        crowded.series[0].name = String(repeating: "long name ", count: 30)
        crowded.width = 500
        let kept = crowded.layout()
        XCTAssertGreaterThanOrEqual(kept.plot.width, 250)
        if let l = kept.legend { XCTAssertLessThan(l.box.maxX, kept.plot.maxX) }
    }

    func testAxesTicksAndLabels() {
        var plot = figure()
        plot.yRange = 0...100
        let layout = plot.layout()
        XCTAssertEqual(layout.y.labels, ["0", "20", "40", "60", "80", "100"])
        XCTAssertEqual(layout.x.ticks.first, 0)
        XCTAssertEqual(layout.x.ticks.last, 10)
        XCTAssertTrue(layout.x.ticks.allSatisfy { $0 == $0.rounded() }, "layer axis has integer ticks")
        XCTAssertEqual(layout.x.pixel(layout.x.lower), Double(layout.plot.x) + 0.5)
        XCTAssertEqual(layout.y.pixel(100), Double(layout.plot.y) + 0.5)
        let image = plot.render()
        let frame = LinePlot.frameColor
        // Frame corners, and each tick mark below/left of the frame.
        XCTAssertEqual(color(image, layout.plot.x, layout.plot.y), frame)
        XCTAssertEqual(color(image, layout.plot.maxX - 1, layout.plot.maxY - 1), frame)
        for v in layout.x.ticks {
            let px = Int(layout.x.pixel(v))
            XCTAssertEqual(color(image, px, layout.plot.maxY + 2), frame)
            // Its label just below.
            let box = PixelRect(x: px - 30, y: layout.plot.maxY + 5, width: 60, height: 28)
            XCTAssertNotNil(inkBox(image, in: PixelRect(x: box.x, y: box.y + 4, width: box.width, height: box.height)), "x label \(v)")
        }
        for (v, label) in zip(layout.y.ticks, layout.y.labels) {
            let py = Int(layout.y.pixel(v))
            XCTAssertEqual(color(image, layout.plot.x - 2, py), frame)
            let w = BitmapFont.width(of: label, scale: 2)
            let right = layout.plot.x - LinePlot.tickLength - LinePlot.tickGap
            let ink = try! XCTUnwrap(inkBox(image, in: PixelRect(x: right - w - 6, y: py - 12, width: w + 6, height: 24)))
            let cols = inkColumns(label, scale: 2)
            XCTAssertEqual(ink.x, right - w + cols.first, "y label \(label)")
            XCTAssertEqual(ink.maxX, right - w + cols.last + 1, "y label \(label) right-aligned")
            XCTAssertEqual(ink.y, py - 7, "y label \(label) centred on its tick")
        }
        // Grid lines are light and inside the frame.
        let gy = Int(layout.y.pixel(60))
        XCTAssertEqual(color(image, layout.plot.x + 3, gy), LinePlot.gridColor)
    }

    func testTitleAndAxisLabelsAreDrawnWhereLaidOut() {
        let plot = figure()
        let layout = plot.layout()
        let image = plot.render()
        let s = 2
        let titleBox = PixelRect(x: 0, y: 0, width: image.width, height: layout.plot.y - 2)
        let title = try! XCTUnwrap(inkBox(image, in: titleBox))
        let titleInk = inkColumns(plot.title, scale: s)
        XCTAssertEqual(title.x, layout.titleOrigin.x + titleInk.first)
        XCTAssertEqual(title.y, layout.titleOrigin.y)
        XCTAssertEqual(title.maxX, layout.titleOrigin.x + titleInk.last + 2, "bold title is one pixel wider")
        XCTAssertLessThanOrEqual(abs((title.x + title.maxX) / 2 - (layout.plot.x + layout.plot.maxX) / 2), 2, "centred over the plot")
        // x label under the tick labels, y label to the left of the tick labels, reading upwards.
        let xl = try! XCTUnwrap(inkBox(image, in: PixelRect(x: 0, y: layout.xLabelOrigin.y, width: image.width, height: image.height - layout.xLabelOrigin.y)))
        let xInk = inkColumns(plot.xLabel, scale: s)
        XCTAssertEqual(xl.x, layout.xLabelOrigin.x + xInk.first)
        XCTAssertEqual(xl.maxX, layout.xLabelOrigin.x + xInk.last + 1)
        let yl = try! XCTUnwrap(inkBox(image, in: PixelRect(x: 0, y: layout.plot.y, width: layout.yLabelOrigin.x + BitmapFont.height(scale: s), height: layout.plot.height)))
        let yInk = inkColumns(plot.yLabel, scale: s)
        XCTAssertEqual(yl.height, yInk.last - yInk.first + 1)
        // Reading upwards: the first character is at the bottom.
        XCTAssertEqual(yl.maxY, layout.yLabelOrigin.y + BitmapFont.width(of: plot.yLabel, scale: s) - yInk.first)
        XCTAssertGreaterThan(yl.height, yl.width * 5, "turned text is tall and narrow")
        // Without a title the band above the plot is empty.
        var untitled = plot
        untitled.title = ""
        let u = untitled.render()
        XCTAssertNil(inkBox(u, in: PixelRect(x: 0, y: 0, width: u.width, height: 6)))
    }

    func testReferenceLineIsDashedAtItsValue() {
        var plot = LinePlot(title: "t", xLabel: "x", yLabel: "y", series: [Series(name: "", y: [10, 20, 30])],
                            horizontalLines: [ReferenceLine(y: 15, label: "", color: PlotColor(hex: 0x112233))])
        plot.showGrid = false
        let layout = plot.layout()
        XCTAssertNil(layout.legend, "nothing named, no legend")
        let image = plot.render()
        let row = Int(layout.y.pixel(15))
        var runs: [Bool] = []
        for x in (layout.plot.x + 1)..<(layout.plot.maxX - 1) {
            let hit = (row - 1...row + 1).contains { color(image, x, $0) != .white && !isNearWhite(color(image, x, $0)) }
            if runs.last != hit { runs.append(hit) }
        }
        XCTAssertGreaterThan(runs.count, 40, "dashes alternate along the line")
        // Only that row band carries the reference colour.
        for (x, y) in pixels(of: PlotColor(hex: 0x112233), in: image) {
            XCTAssertLessThanOrEqual(abs(y - row), 1, "(\(x), \(y))")
        }
    }

    // MARK: Degenerate input

    func testDegenerateInputsRenderWithoutTrapping() {
        let long = String(repeating: "Very long label text ", count: 20)
        var cases: [(String, LinePlot)] = []
        cases.append(("empty", LinePlot()))
        cases.append(("empty series", LinePlot(series: [Series(name: "none", points: [])])))
        cases.append(("single", LinePlot(series: [Series(name: "one", points: [(x: 3, y: 42)])])))
        cases.append(("zero single", LinePlot(series: [Series(name: "", points: [(x: 0, y: 0)])])))
        cases.append(("equal", LinePlot(series: [Series(name: "flat", y: [7, 7, 7, 7])])))
        cases.append(("all NaN", LinePlot(series: [Series(name: "nan", y: [.nan, .nan, .infinity, -.infinity])])))
        cases.append(("huge", LinePlot(series: [Series(name: "big", y: [1e300, -1e300, .greatestFiniteMagnitude, -.greatestFiniteMagnitude])])))
        cases.append(("tiny spread", LinePlot(series: [Series(name: "t", y: [1, 1 + 1e-15, 1 - 1e-15])])))
        cases.append(("long", LinePlot(title: long, xLabel: long, yLabel: long, series: [Series(name: long, y: [1, 2])],
                                       horizontalLines: [ReferenceLine(y: 1.5, label: long)])))
        cases.append(("non-ASCII", LinePlot(title: "Ünïcødé ✓ 🎉", series: [Series(name: "名前", y: [1, 2])])))
        var ranged = LinePlot(series: [Series(name: "a", y: [-1e9, 1e9, 5])])
        ranged.xRange = 0.5...1.5
        ranged.yRange = 0...10
        cases.append(("clipped", ranged))
        var bad = LinePlot(series: [Series(name: "a", y: [1, 2])])
        bad.xRange = 3...3
        bad.yRange = -Double.infinity...0
        cases.append(("bad ranges", bad))
        for (w, h) in [(1, 1), (0, -5), (10, 10), (60, 40), (120, 80), (3000, 200)] {
            var p = figure()
            p.width = w
            p.height = h
            cases.append(("size \(w)x\(h)", p))
        }
        var many = LinePlot(series: (0..<40).map { Series(name: "series \($0)", y: [Double($0), Double($0 + 1)]) })
        many.height = 300
        cases.append(("many", many))
        var big = LinePlot(series: [Series(name: "s", y: [1, 2])])
        big.textScale = 100
        big.lineWidth = 0
        big.markerRadius = -3
        cases.append(("odd settings", big))

        for (name, plot) in cases {
            let image = plot.render()
            XCTAssertEqual(image.width, max(1, plot.width), name)
            XCTAssertEqual(image.height, max(1, plot.height), name)
            _ = try? PNGEncoder.encode(image)
        }
    }

    func testSinglePointAndEqualValuesAreCentredInAPaddedRange() {
        let single = LinePlot(series: [Series(name: "", points: [(x: 3, y: 42)])])
        let l = single.layout()
        XCTAssertLessThan(l.x.lower, 3)
        XCTAssertGreaterThan(l.x.upper, 3)
        XCTAssertLessThan(l.y.lower, 42)
        XCTAssertGreaterThan(l.y.upper, 42)
        XCTAssertFalse(l.y.ticks.isEmpty)
        let image = single.render()
        let c = PlotColor.okabeIto[0]
        let (px, py) = (Int(l.x.pixel(3)), Int(l.y.pixel(42)))
        XCTAssertEqual(color(image, px, py), c)
        XCTAssertEqual(abs(px - (l.plot.x + l.plot.maxX) / 2), 0, accuracy: 1)
        let flat = LinePlot(series: [Series(name: "", y: [50, 50, 50])]).layout()
        XCTAssertEqual((flat.y.lower + flat.y.upper) / 2, 50, accuracy: 1e-9)
        XCTAssertGreaterThan(flat.y.upper - flat.y.lower, 1)
    }

    func testNonFiniteValuesAreSkippedAndBreakTheLine() {
        let plot = LinePlot(series: [Series(name: "", y: [1, 2, .nan, 4, 5])])
        let layout = plot.layout()
        XCTAssertEqual(layout.x.lower, -0.2, accuracy: 1e-9, "x range from finite points 0...4 plus 5%")
        let image = plot.render()
        let c = layout.colors[0]
        // Around x = 2 (the NaN) there is no line: the gap between x = 1 and x = 3.
        let gapX = Int(layout.x.pixel(2)), gapY = Int(layout.y.pixel(3))
        for dy in -12...12 {
            for dx in -12...12 {
                XCTAssertNotEqual(color(image, gapX + dx, gapY + dy), c)
            }
        }
        // The segments on either side are drawn.
        XCTAssertEqual(color(image, Int(layout.x.pixel(0.5)), Int(layout.y.pixel(1.5))), c)
        XCTAssertEqual(color(image, Int(layout.x.pixel(3.5)), Int(layout.y.pixel(4.5))), c)
    }

    func testManySeriesGetDistinctColoursAndMarkers() {
        let plot = LinePlot(series: (0..<9).map { Series(name: "s\($0)", y: [Double($0), Double($0) + 1]) })
        let layout = plot.layout()
        XCTAssertEqual(Set(layout.colors.prefix(8)).count, 8)
        XCTAssertEqual(layout.colors[8], layout.colors[0])
        XCTAssertEqual(Set(layout.markers.prefix(5)).count, 5)
        // A caller's colour wins.
        let own = LinePlot(series: [Series(name: "", y: [1, 2], color: PlotColor(hex: 0x123456), marker: MarkerShape.none)]).layout()
        XCTAssertEqual(own.colors, [PlotColor(hex: 0x123456)])
        XCTAssertEqual(own.markers, [MarkerShape.none])
    }

    func testLinesAreAntiAliased() {
        let plot = LinePlot(series: [Series(name: "", points: [(x: 0, y: 0), (x: 1, y: 0.37)], marker: MarkerShape.none)])
        let image = plot.render()
        let layout = plot.layout()
        let c = layout.colors[0]
        // Along a column crossing the sloped line: full colour in the core, blended shades at
        // the edges (not only fully on or off).
        let x = Int(layout.x.pixel(0.5))
        var core = 0, partial = 0
        for y in layout.plot.y..<layout.plot.maxY {
            let p = color(image, x, y)
            if p == c { core += 1 } else if p != .white && p != LinePlot.gridColor && !isNearWhite(p) || (p != .white && p.b > p.r + 10) { partial += 1 }
        }
        XCTAssertGreaterThanOrEqual(core, 1)
        XCTAssertGreaterThanOrEqual(partial, 1)
    }

    func testRenderingIsDeterministic() {
        XCTAssertEqual(figure().render(), figure().render())
    }
}
