import Foundation
import XCTest
import RefractImage

final class DecodeTests: XCTestCase {
    /// Every fixture decodes to exactly Pillow's `Image.open(f).convert("RGB")`.
    func testEveryFixtureMatchesPillowExactly() throws {
        let cases = Fixtures.manifest.decode
        XCTAssertGreaterThanOrEqual(cases.count, 40)
        var jpeg = 0, png = 0
        for c in cases {
            let image = try ImageDecoder.decode(contentsOf: Fixtures.url(c.file))
            let reference = try NPYArray(contentsOf: Fixtures.url(c.rgb))
            XCTAssertEqual(reference.shape, [c.height, c.width, 3], c.file)
            XCTAssertEqual(image.width, c.width, c.file)
            XCTAssertEqual(image.height, c.height, c.file)
            let ref = reference.bytes
            var maxDiff = 0, differing = 0
            for i in 0..<min(ref.count, image.pixels.count) where ref[i] != image.pixels[i] {
                differing += 1
                maxDiff = max(maxDiff, abs(Int(ref[i]) - Int(image.pixels[i])))
            }
            XCTAssertEqual(differing, 0, "\(c.file) (Pillow mode \(c.pilMode)): \(differing) bytes differ, max \(maxDiff)")
            if c.file.hasSuffix(".jpg") { jpeg += 1 } else { png += 1 }
        }
        XCTAssertGreaterThan(jpeg, 15)
        XCTAssertGreaterThan(png, 25)
    }

    /// The 500x375 photo stand-in matches Pillow too (checked by hash; the array would be big).
    func testBenchImageMatchesPillowHash() throws {
        let bench = Fixtures.manifest.bench
        let image = try ImageDecoder.decode(contentsOf: Fixtures.url(bench.file))
        XCTAssertEqual(image.width, bench.width)
        XCTAssertEqual(image.height, bench.height)
        XCTAssertEqual(fnv1a64(image.pixels), bench.rgbFNV1a64)
    }

    func testFormatIsSniffedNotTakenFromTheExtension() throws {
        let png = try Data(contentsOf: Fixtures.url("png_rgb8_37x23.png"))
        let jpeg = try Data(contentsOf: Fixtures.url("jpeg_baseline_444_37x23.jpg"))
        let a = try ImageDecoder.decode(data: png, source: "actually-a-png.jpg")
        let b = try ImageDecoder.decode(contentsOf: Fixtures.url("png_rgb8_37x23.png"))
        XCTAssertEqual(a, b)
        XCTAssertEqual(try ImageDecoder.probe(data: png, source: "x.jpeg").format, .png)
        XCTAssertEqual(try ImageDecoder.probe(data: jpeg, source: "x.png").format, .jpeg)
    }

    func testProbeReportsHeaderFacts() throws {
        let p = try ImageDecoder.probe(contentsOf: Fixtures.url("jpeg_progressive_420_37x23.jpg"))
        XCTAssertEqual(p, ImageInfo(format: .jpeg, width: 37, height: 23, channels: 3, bitDepth: 8, progressive: true))
        let g = try ImageDecoder.probe(contentsOf: Fixtures.url("png_gray16_37x23.png"))
        XCTAssertEqual(g, ImageInfo(format: .png, width: 37, height: 23, channels: 1, bitDepth: 16, progressive: false))
        let c = try ImageDecoder.probe(contentsOf: Fixtures.url("jpeg_cmyk_adobe_37x23.jpg"))
        XCTAssertEqual(c.channels, 4)
        let i = try ImageDecoder.probe(contentsOf: Fixtures.url("png_rgb8_interlaced_37x23.png"))
        XCTAssertTrue(i.progressive)
    }

    /// PNG data whose rows are all present decodes even when the tail (IEND, the end of the
    /// zlib stream) is missing, as in Pillow; see bad-file tests for the truncated case.
    func testMissingPNGTailIsToleratedLikePillow() throws {
        let data = try Data(contentsOf: Fixtures.url("png_rgb8_37x23.png"))
        let full = try ImageDecoder.decode(data: data, source: "full.png")
        let cut = try ImageDecoder.decode(data: data.dropLast(12), source: "no-iend.png")
        XCTAssertEqual(full, cut)
    }

    func testCodecVersionsAreReported() {
        let v = ImageDecoder.codecVersions
        XCTAssertTrue(v.contains("libpng"), v)
        XCTAssertTrue(v.contains("jpeg"), v)
    }
}
