import Foundation
import XCTest
import RefractImage

/// Inputs found by the fuzz harnesses (scripts/fuzz.sh, docs/Fuzzing.md), kept as regression tests.
final class FuzzFindingTests: XCTestCase {
    /// Tests/Fixtures/fuzz, found relative to this source file.
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fuzz", isDirectory: true)

    /// An interlaced PNG whose image data stops short, followed by a second IHDR chunk. libpng's
    /// progressive reader calls the header callback again for it; the shim used to set itself up a
    /// second time (leaking the interlace buffer, found by LeakSanitizer). Only the first image
    /// header is accepted now, so the file is refused as corrupt, naming the second header.
    func testSecondImageHeaderAfterIncompleteDataIsCorrupt() {
        let url = Self.directory.appendingPathComponent("png_second_ihdr.png")
        do {
            let image = try ImageDecoder.decode(contentsOf: url)
            XCTFail("decoded a \(image.width)x\(image.height) image, expected a corrupt-file error")
        } catch let error as ImageError {
            XCTAssertEqual(error.kind, .corrupt, "\(error)")
            XCTAssertTrue(error.description.contains(url.path), error.description)
            XCTAssertTrue(error.description.contains("second image header (IHDR)"), error.description)
        } catch {
            XCTFail("unexpected error \(type(of: error)): \(error)")
        }
    }

    /// A second IHDR after a complete image is ignored like any other trailing chunk (Pillow reads
    /// the first image only): the pixels are the original file's.
    func testSecondImageHeaderAfterCompleteImageIsIgnored() throws {
        for name in ["png_rgb8_37x23.png", "png_rgb8_interlaced_37x23.png"] {
            let original = try Data(contentsOf: Fixtures.url(name))
            // Signature (8 bytes), then IHDR: length (4) + type (4) + 13 data bytes + CRC (4).
            let ihdr = original[8..<(8 + 25)]
            XCTAssertEqual(String(decoding: ihdr[(8 + 4)..<(8 + 8)], as: UTF8.self), "IHDR")
            // Insert a copy of the IHDR chunk before IEND (the last 12 bytes).
            var doubled = original.prefix(original.count - 12)
            doubled.append(ihdr)
            doubled.append(original.suffix(12))
            let expected = try ImageDecoder.decode(data: original, source: name)
            let decoded = try ImageDecoder.decode(data: doubled, source: name + " (second IHDR)")
            XCTAssertEqual(decoded, expected, name)
        }
    }
}
