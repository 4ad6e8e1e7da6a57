import Foundation
import XCTest
import RefractImage
import RefractTensor

final class BadFileTests: XCTestCase {
    /// Words the description must contain for each kind.
    private func keyword(_ kind: ImageError.Kind) -> String {
        switch kind {
        case .unreadable: return "cannot read"
        case .empty: return "empty"
        case .truncated: return "truncated"
        case .unsupported: return "not a supported image"
        case .tooLarge: return "too large"
        case .corrupt: return "corrupt"
        case .unwritable: return "cannot write"
        }
    }

    private func expectError(_ kind: ImageError.Kind, _ file: String, maxPixels: Int = ImageDecoder.defaultMaxPixels,
                             line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("\(file): decoded, expected \(kind)", line: line)
        } catch let error as ImageError {
            XCTAssertEqual(error.kind, kind, "\(file): \(error)", line: line)
            XCTAssertTrue(error.description.contains(file), "\(error.description) does not name \(file)", line: line)
            XCTAssertTrue(error.description.contains(keyword(kind)), "\(error.description) does not say \(keyword(kind))", line: line)
        } catch {
            XCTFail("\(file): unexpected error type \(type(of: error)): \(error)", line: line)
        }
    }

    func testEveryBadFixtureGivesTheRightImageError() {
        let cases = Fixtures.manifest.bad
        XCTAssertGreaterThanOrEqual(cases.count, 10)
        for c in cases {
            guard let kind = ImageError.Kind(rawValue: c.kind) else { XCTFail("unknown kind \(c.kind)"); continue }
            expectError(kind, c.file) { _ = try ImageDecoder.decode(contentsOf: Fixtures.url(c.file)) }
        }
    }

    /// The declared size is checked from the header alone: the fixture has almost no pixel data,
    /// so any other outcome than `.tooLarge` would mean decoding was attempted.
    func testHugeDeclaredSizesAreRefusedBeforeDecoding() throws {
        for file in ["bad_huge.png", "bad_huge.jpg"] {
            let started = Date()
            expectError(.tooLarge, file) { _ = try ImageDecoder.decode(contentsOf: Fixtures.url(file)) }
            XCTAssertLessThan(Date().timeIntervalSince(started), 1.0, file)
            // The probe itself succeeds and reports the declared size.
            let info = try ImageDecoder.probe(contentsOf: Fixtures.url(file))
            XCTAssertGreaterThan(info.pixelCount, ImageDecoder.defaultMaxPixels)
        }
        let info = try ImageDecoder.probe(contentsOf: Fixtures.url("bad_huge.png"))
        XCTAssertEqual(info.width, 100_000)
        XCTAssertEqual(info.height, 100_000)
    }

    func testPixelLimitIsConfigurable() throws {
        let url = Fixtures.url("jpeg_baseline_420_64x48.jpg")
        expectError(.tooLarge, "jpeg_baseline_420_64x48.jpg") { _ = try ImageDecoder.decode(contentsOf: url, maxPixels: 64 * 48 - 1) }
        XCTAssertNoThrow(try ImageDecoder.decode(contentsOf: url, maxPixels: 64 * 48))
        XCTAssertEqual(ImageDecoder.defaultMaxPixels, 2 * 89_478_485)
    }

    func testMissingFileAndDirectory() {
        let missing = Fixtures.url("no_such_file.jpg")
        expectError(.unreadable, "no_such_file.jpg") { _ = try ImageDecoder.decode(contentsOf: missing) }
        expectError(.unreadable, "images") { _ = try ImageDecoder.decode(contentsOf: Fixtures.directory) }
    }

    func testEmptyDataWithLabel() {
        expectError(.empty, "label-for-empty") { _ = try ImageDecoder.decode(data: Data(), source: "label-for-empty") }
    }

    /// Every prefix of a JPEG and a PNG, and random damage, gives an ImageError or an image:
    /// never a crash, a hang or another error type.
    func testPrefixesAndDamageNeverCrash() throws {
        for file in ["jpeg_progressive_420_37x23.jpg", "jpeg_baseline_420_64x48.jpg", "png_rgb8_interlaced_37x23.png",
                     "png_palette_trns_37x23.png", "jpeg_cmyk_adobe_37x23.jpg"] {
            let data = try Data(contentsOf: Fixtures.url(file))
            let full = try ImageDecoder.decode(data: data, source: file)
            let step = max(1, data.count / 150)
            for n in stride(from: 0, to: data.count, by: step) {
                do {
                    let image = try ImageDecoder.decode(data: data.prefix(n), source: file)
                    // Only a PNG missing nothing but its tail may decode, and then completely.
                    XCTAssertTrue(file.hasSuffix(".png"), "\(file) prefix \(n) decoded")
                    XCTAssertEqual(image, full, "\(file) prefix \(n)")
                } catch let error as ImageError {
                    XCTAssertTrue([.empty, .truncated, .corrupt, .unsupported].contains(error.kind), "\(file) prefix \(n): \(error)")
                }
            }
            var rng = SplitMix64(seed: UInt64(data.count))
            for _ in 0..<60 {
                var damaged = [UInt8](data)
                for _ in 0..<4 { damaged[Int(rng.next() % UInt64(damaged.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                do {
                    let image = try ImageDecoder.decode(data: Data(damaged), source: file, maxPixels: 1 << 20)
                    XCTAssertEqual(image.pixels.count, image.width * image.height * 3)
                } catch is ImageError {
                }
            }
        }
    }
}

extension SplitMix64 {
    mutating func uniform(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
