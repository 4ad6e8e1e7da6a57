import Foundation
import XCTest
import RefractImage
import RefractTensor

final class ResampleTests: XCTestCase {
    /// Plain `Image.resize` references: up, down, one axis, both filters: identical bytes.
    func testResizeMatchesPillowExactly() throws {
        let cases = Fixtures.manifest.resize
        XCTAssertGreaterThanOrEqual(cases.count, 16)
        var cache: [String: RGBImage] = [:]
        for c in cases {
            let source = try cache[c.file] ?? ImageDecoder.decode(contentsOf: Fixtures.url(c.file))
            cache[c.file] = source
            let out = PILResampler.resize(source, width: c.width, height: c.height, filter: c.interpolation)
            let ref = try NPYArray(contentsOf: Fixtures.url(c.reference))
            XCTAssertEqual(ref.shape, [c.height, c.width, 3])
            let differing = zip(out.pixels, ref.bytes).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(c.reference): \(differing) bytes differ")
        }
    }

    /// Windows of the output equal the same region of the full output.
    func testWindowEqualsCropOfFullResize() throws {
        let image = try ImageDecoder.decode(contentsOf: Fixtures.url("png_large_97x61.png"))
        for filter in ResampleFilter.allCases {
            for (w, h) in [(50, 31), (150, 90), (97, 40), (60, 61)] {
                let full = PILResampler.resize(image, width: w, height: h, filter: filter)
                let cols = (w / 5)..<(w - w / 7), rows = (h / 3)..<(h - 1)
                let window = PILResampler.resizeWindow(image, width: w, height: h, columns: cols, rows: rows, filter: filter)
                var expected = [UInt8]()
                for y in rows { expected += full.pixels[(y * w + cols.lowerBound) * 3..<(y * w + cols.upperBound) * 3] }
                XCTAssertEqual(window, expected, "\(filter) \(w)x\(h)")
            }
        }
    }

    /// An obviously-correct float64 resampler (no fixed point, taps found by scanning every
    /// input pixel) against the fast one. Each pass rounds to uint8, so the comparison is per
    /// pass: every single-axis resize is within one level of float64, and so is the second pass
    /// of a two-pass resize when fed the fast first pass. (End to end, an off-by-one in the
    /// intermediate image can reach two levels after the second pass; that bound is checked too.)
    func testFastResamplerAgreesWithFloatReference() {
        var rng = SplitMix64(seed: 7)
        var compared = 0, offByOne = 0, endToEndWorst = 0
        for trial in 0..<40 {
            let w = 1 + rng.uniform(70), h = 1 + rng.uniform(70)
            var pixels = [UInt8](repeating: 0, count: w * h * 3)
            let smooth = trial % 2 == 0
            for y in 0..<h {
                for x in 0..<w {
                    for c in 0..<3 {
                        let base = smooth ? (x * 255 / max(w, 1) + y * 3 + c * 40) % 256 : rng.uniform(256)
                        pixels[(y * w + x) * 3 + c] = UInt8(base)
                    }
                }
            }
            let image = RGBImage(width: w, height: h, pixels: pixels)
            let ow = 1 + rng.uniform(90), oh = 1 + rng.uniform(90)
            for filter in ResampleFilter.allCases {
                func check(_ fast: [UInt8], _ slow: [UInt8], _ what: String) {
                    XCTAssertEqual(fast.count, slow.count)
                    for i in 0..<fast.count {
                        let d = abs(Int(fast[i]) - Int(slow[i]))
                        XCTAssertLessThanOrEqual(d, 1, "\(w)x\(h) -> \(ow)x\(oh) \(filter) \(what) at \(i)")
                        if d == 1 { offByOne += 1 }
                        compared += 1
                    }
                }
                // Single-axis resizes.
                check(PILResampler.resize(image, width: ow, height: h, filter: filter).pixels,
                      referencePass(image, width: ow, height: h, filter: filter), "horizontal only")
                check(PILResampler.resize(image, width: w, height: oh, filter: filter).pixels,
                      referencePass(image, width: w, height: oh, filter: filter), "vertical only")
                // Second pass of the two-pass resize, in Pillow's order.
                let fast = PILResampler.resize(image, width: ow, height: oh, filter: filter)
                let vFirst = PILResampler.PassOrder.pillow13.verticalFirst(inWidth: w, inHeight: h, outWidth: ow, outHeight: oh)
                let mid = vFirst ? PILResampler.resize(image, width: w, height: oh, filter: filter)
                                 : PILResampler.resize(image, width: ow, height: h, filter: filter)
                check(fast.pixels, referencePass(mid, width: ow, height: oh, filter: filter), "second pass")
                // End to end in float64.
                let slowMid = vFirst ? referencePass(image, width: w, height: oh, filter: filter)
                                     : referencePass(image, width: ow, height: h, filter: filter)
                let slow = referencePass(RGBImage(width: vFirst ? w : ow, height: vFirst ? oh : h, pixels: slowMid),
                                         width: ow, height: oh, filter: filter)
                for i in 0..<slow.count { endToEndWorst = max(endToEndWorst, abs(Int(fast.pixels[i]) - Int(slow[i]))) }
            }
        }
        XCTAssertLessThanOrEqual(endToEndWorst, 2)
        print("float reference: \(compared) values per pass, \(offByOne) differ by one level; end to end worst \(endToEndWorst)")
    }

    func testIdentitySizeIsACopy() throws {
        let image = try ImageDecoder.decode(contentsOf: Fixtures.url("jpeg_baseline_444_37x23.jpg"))
        XCTAssertEqual(PILResampler.resize(image, width: 37, height: 23, filter: .bicubic), image)
    }

    /// Pillow 13 filters vertically first for this shape; Pillow 12's order gives other bytes.
    func testPassOrderMatters() throws {
        let image = try ImageDecoder.decode(contentsOf: Fixtures.url("png_small_20x27.png"))
        XCTAssertTrue(PILResampler.PassOrder.pillow13.verticalFirst(inWidth: 20, inHeight: 27, outWidth: 21, outHeight: 26))
        XCTAssertFalse(PILResampler.PassOrder.pillow13.verticalFirst(inWidth: 500, inHeight: 375, outWidth: 298, outHeight: 224))
        XCTAssertTrue(PILResampler.PassOrder.pillow13.verticalFirst(inWidth: 300, inHeight: 700, outWidth: 224, outHeight: 522))
        let new = PILResampler.resize(image, width: 21, height: 26, filter: .bicubic)
        let old = PILResampler.resize(image, width: 21, height: 26, filter: .bicubic, passOrder: .horizontalFirst)
        XCTAssertNotEqual(new, old)
        let worst = zip(new.pixels, old.pixels).map { abs(Int($0) - Int($1)) }.max()!
        print("pass order: 20x27 -> 21x26 bicubic, Pillow 13 vs Pillow 12 order differ by up to \(worst) levels")
    }

    // MARK: Float64 reference

    /// One pass written for clarity: exactly one of width/height differs from the image's. For
    /// each output sample, weight every input sample on that axis by the filter stretched by the
    /// reduction factor, normalise the weights, sum in float64, round half up, clip to 0...255.
    private func referencePass(_ image: RGBImage, width ow: Int, height oh: Int, filter: ResampleFilter) -> [UInt8] {
        let iw = image.width, ih = image.height
        precondition(ow == iw || oh == ih)
        if ow == iw && oh == ih { return image.pixels }
        func weights(inSize: Int, outSize: Int, index: Int) -> [(Int, Double)] {
            let scale = Double(inSize) / Double(outSize)
            let stretch = max(scale, 1.0)
            let center = (Double(index) + 0.5) * scale
            var taps: [(Int, Double)] = []
            var total = 0.0
            for i in 0..<inSize {
                let w = filter.weight((Double(i) + 0.5 - center) / stretch)
                if w != 0 { taps.append((i, w)); total += w }
            }
            return taps.map { ($0.0, $0.1 / total) }
        }
        func round8(_ v: Double) -> UInt8 { UInt8(max(0, min(255, (v + 0.5).rounded(.down)))) }
        var out = [UInt8](repeating: 0, count: oh * ow * 3)
        if ow != iw {
            for x in 0..<ow {
                let taps = weights(inSize: iw, outSize: ow, index: x)
                for y in 0..<ih {
                    for c in 0..<3 {
                        var s = 0.0
                        for (i, w) in taps { s += Double(image.pixels[(y * iw + i) * 3 + c]) * w }
                        out[(y * ow + x) * 3 + c] = round8(s)
                    }
                }
            }
        } else {
            for y in 0..<oh {
                let taps = weights(inSize: ih, outSize: oh, index: y)
                for x in 0..<ow {
                    for c in 0..<3 {
                        var s = 0.0
                        for (i, w) in taps { s += Double(image.pixels[(i * iw + x) * 3 + c]) * w }
                        out[(y * ow + x) * 3 + c] = round8(s)
                    }
                }
            }
        }
        return out
    }
}
