import XCTest
@testable import RefractPlot

/// First and last pixel columns of `text` that carry ink, from the glyph table.
func inkColumns(_ text: String, scale: Int) -> (first: Int, last: Int) {
    let font = BitmapFont.standard
    var first = Int.max, last = Int.min
    for (i, c) in text.enumerated() {
        for x in 0..<BitmapFont.glyphWidth {
            for y in 0..<(BitmapFont.ascent + BitmapFont.descent) where font.ink(c, x: x, y: y) {
                let col = i * BitmapFont.advance + x
                first = min(first, col * scale)
                last = max(last, col * scale + scale - 1)
            }
        }
    }
    return (first, last)
}

final class FontTests: XCTestCase {
    private let font = BitmapFont.standard

    func testEveryPrintableASCIICharacterHasItsOwnGlyph() {
        var seen: [[UInt8]: Character] = [:]
        for code in 32..<127 {
            let c = Character(UnicodeScalar(UInt8(code)))
            XCTAssertTrue(font.characters.contains(c), "no glyph for \(c)")
            var rows = font.glyph(c)
            while rows.last == 0 { rows.removeLast() }
            if c == " " { XCTAssertTrue(rows.isEmpty); continue }
            XCTAssertFalse(rows.isEmpty, "glyph \(c) has no ink")
            if let other = seen[rows] { XCTFail("\(c) and \(other) look the same") }
            seen[rows] = c
        }
        // Descenders only where expected.
        for code in 32..<127 {
            let c = Character(UnicodeScalar(UInt8(code)))
            let hasDescender = font.glyph(c).count > BitmapFont.ascent && font.glyph(c)[BitmapFont.ascent...].contains { $0 != 0 }
            XCTAssertEqual(hasDescender, "gjpqy,;_".contains(c), "descender of \(c)")
        }
    }

    func testCharactersOutsideASCIIDrawAsQuestionMark() {
        func draw(_ s: String) -> [UInt8] {
            var c = Canvas(width: 40, height: 30, background: .white)
            c.drawText(s, x: 2, y: 2, scale: 2, color: .black)
            return c.pixels
        }
        XCTAssertEqual(draw("é"), draw("?"))
        XCTAssertEqual(draw("α"), draw("?"))
        XCTAssertNotEqual(draw("e"), draw("?"))
        // The plot sanitises labels the same way (control characters become spaces).
        XCTAssertEqual(LinePlot().sanitized("Top-1 (%) – ΔZ\tok"), "Top-1 (%) ? ?Z ok")
    }

    /// Ink stays inside the measured box and reaches its edges.
    func testTextInkLiesInItsMeasuredBox() {
        for (text, scale) in [("Accuracy (%)", 2), ("gjpqy", 2), ("0.25", 3), ("W", 1), ("Layer 11", 2)] {
            var c = Canvas(width: 300, height: 60, background: .white)
            let x0 = 7, y0 = 9
            c.drawText(text, x: x0, y: y0, scale: scale, color: .black)
            let w = BitmapFont.width(of: text, scale: scale), h = BitmapFont.height(scale: scale)
            var minX = Int.max, maxX = Int.min, minY = Int.max, maxY = Int.min
            for y in 0..<c.height {
                for x in 0..<c.width where c.color(x: x, y: y) != .white {
                    minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
                }
            }
            XCTAssertGreaterThanOrEqual(minX, x0, text)
            XCTAssertLessThan(maxX, x0 + w, text)
            XCTAssertGreaterThanOrEqual(minY, y0, text)
            XCTAssertLessThan(maxY, y0 + h, text)
            XCTAssertEqual(minY, y0, "capitals or ascenders start at the top: \(text)")
            let ink = inkColumns(text, scale: scale)
            XCTAssertEqual(minX, x0 + ink.first, "first inked column: \(text)")
            XCTAssertEqual(maxX, x0 + ink.last, "last inked column: \(text)")
            XCTAssertLessThanOrEqual(ink.last, w - 1)
        }
    }

    func testUpwardTextIsTheHorizontalTextTurned() {
        let text = "y (%)"
        let w = BitmapFont.width(of: text, scale: 2), h = BitmapFont.height(scale: 2)
        var flat = Canvas(width: w, height: h, background: .white)
        flat.drawText(text, x: 0, y: 0, scale: 2, color: .black)
        var turned = Canvas(width: h, height: w, background: .white)
        turned.drawTextUpwards(text, x: 0, y: 0, scale: 2, color: .black)
        for y in 0..<h {
            for x in 0..<w {
                // Counter-clockwise: (x, y) -> (y, w - 1 - x).
                XCTAssertEqual(flat.color(x: x, y: y), turned.color(x: y, y: w - 1 - x))
            }
        }
    }

    func testTruncationAddsAnEllipsisAndFits() {
        let long = String(repeating: "Mean-ablated attention layers ", count: 10)
        for maxWidth in [0, 5, 11, 12, 30, 100, 640] {
            let t = BitmapFont.truncated(long, toWidth: maxWidth, scale: 2)
            XCTAssertLessThanOrEqual(BitmapFont.width(of: t, scale: 2), maxWidth)
            if !t.isEmpty { XCTAssertTrue(t.hasSuffix("…")) }
        }
        XCTAssertEqual(BitmapFont.truncated("short", toWidth: 640, scale: 2), "short")
        XCTAssertEqual(BitmapFont.truncated("abc", toWidth: BitmapFont.width(of: "abc", scale: 2), scale: 2), "abc")
        XCTAssertEqual(BitmapFont.truncated("abcd", toWidth: BitmapFont.width(of: "abc", scale: 2), scale: 2), "ab…")
    }
}
