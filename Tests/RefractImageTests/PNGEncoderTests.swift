import Foundation
import XCTest
import RefractImage

final class PNGEncoderTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("refract-png-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
    private func noise(_ count: Int, seed: UInt64) -> [UInt8] {
        var s = seed | 1
        return (0..<count).map { _ in
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            return UInt8(truncatingIfNeeded: s >> 24)
        }
    }

    private func contents(_ url: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: url.path).sorted()
    }

    func testRGBRoundTripsThroughTheDecoderExactly() throws {
        for (w, h) in [(1, 1), (3, 5), (5, 3), (64, 17), (257, 2)] {
            let image = RGBImage(width: w, height: h, pixels: noise(w * h * 3, seed: UInt64(w * 1000 + h)))
            for level in [0, 6, 9] {
                let bytes = try PNGEncoder.encode(image, compressionLevel: level)
                let info = try ImageDecoder.probe(data: Data(bytes), source: "mem")
                XCTAssertEqual(info, ImageInfo(format: .png, width: w, height: h, channels: 3, bitDepth: 8, progressive: false))
                let decoded = try ImageDecoder.decode(data: Data(bytes), source: "mem")
                XCTAssertEqual(decoded, image, "\(w)x\(h) level \(level)")
            }
        }
    }

    func testFlatImageCompressesAndRoundTrips() throws {
        let image = RGBImage(width: 300, height: 200, pixels: [UInt8](repeating: 255, count: 300 * 200 * 3))
        let bytes = try PNGEncoder.encode(image)
        XCTAssertLessThan(bytes.count, 2000)
        XCTAssertEqual(try ImageDecoder.decode(data: Data(bytes), source: "mem"), image)
    }

    func testEncodingIsDeterministic() throws {
        let image = RGBImage(width: 7, height: 9, pixels: noise(7 * 9 * 3, seed: 42))
        XCTAssertEqual(try PNGEncoder.encode(image), try PNGEncoder.encode(image))
    }

    func testWriteThenDecodeFromFile() throws {
        let image = RGBImage(width: 3, height: 5, pixels: noise(45, seed: 7))
        let url = directory.appendingPathComponent("small.png")
        try PNGEncoder.write(image, to: url)
        XCTAssertEqual(try ImageDecoder.decode(contentsOf: url), image)
        XCTAssertEqual(try contents(directory), ["small.png"], "temporary file left behind")
        // Overwriting replaces the file whole.
        let other = RGBImage(width: 1, height: 1, pixels: [1, 2, 3])
        try PNGEncoder.write(other, to: url)
        XCTAssertEqual(try ImageDecoder.decode(contentsOf: url), other)
        XCTAssertEqual(try contents(directory), ["small.png"])
    }

    func testRGBAKeepsAlphaExactly() throws {
        for (w, h) in [(1, 1), (3, 5), (31, 4)] {
            let image = RGBAImage(width: w, height: h, pixels: noise(w * h * 4, seed: UInt64(w + 31 * h)))
            let bytes = try PNGEncoder.encode(image, compressionLevel: 0)
            let info = try ImageDecoder.probe(data: Data(bytes), source: "mem")
            XCTAssertEqual(info.channels, 4)
            XCTAssertEqual(info.bitDepth, 8)
            XCTAssertFalse(info.progressive)
            // The decoder drops alpha (Pillow's convert("RGB")): the colour must survive.
            let rgb = try ImageDecoder.decode(data: Data(bytes), source: "mem")
            for i in 0..<(w * h) {
                XCTAssertEqual(Array(rgb.pixels[(3 * i)..<(3 * i + 3)]), Array(image.pixels[(4 * i)..<(4 * i + 3)]))
            }
            // Alpha checked by an independent reader (stored deflate blocks, PNG row filters).
            let raw = try StoredPNGReader.read(bytes)
            XCTAssertEqual(raw.width, w)
            XCTAssertEqual(raw.height, h)
            XCTAssertEqual(raw.colorType, 6)
            XCTAssertEqual(raw.pixels, image.pixels)
        }
        // The RGB reader agrees with the decoder too, for an RGB file.
        let rgb = RGBImage(width: 5, height: 3, pixels: noise(45, seed: 3))
        let raw = try StoredPNGReader.read(PNGEncoder.encode(rgb, compressionLevel: 0))
        XCTAssertEqual(raw.colorType, 2)
        XCTAssertEqual(raw.pixels, rgb.pixels)
    }

    func testRGBAWriteToFile() throws {
        let image = RGBAImage(RGBImage(width: 2, height: 2, pixels: Array(0..<12)), alpha: 128)
        XCTAssertEqual(image[1, 1].a, 128)
        XCTAssertEqual(image[1, 1].b, 11)
        let url = directory.appendingPathComponent("alpha.png")
        try PNGEncoder.write(image, to: url)
        XCTAssertEqual(try ImageDecoder.probe(contentsOf: url).channels, 4)
        XCTAssertEqual(try ImageDecoder.decode(contentsOf: url).pixels, Array(0..<12))
    }

    func testWritingIntoAMissingDirectoryFailsAndLeavesNothing() throws {
        let missing = directory.appendingPathComponent("does-not-exist", isDirectory: true)
        let url = missing.appendingPathComponent("plot.png")
        let image = RGBImage(width: 2, height: 2, pixels: [UInt8](repeating: 9, count: 12))
        XCTAssertThrowsError(try PNGEncoder.write(image, to: url)) { error in
            guard let e = error as? ImageError else { return XCTFail("not an ImageError: \(error)") }
            XCTAssertEqual(e.source, url.path)
            XCTAssertTrue(e.description.contains(url.path), e.description)
            XCTAssertTrue(e.description.contains("cannot write"), e.description)
            XCTAssertTrue(e.description.contains("No such file or directory"), e.description)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: missing.path))
        XCTAssertEqual(try contents(directory), [])
        XCTAssertThrowsError(try PNGEncoder.write(RGBAImage(image), to: url))
        XCTAssertEqual(try contents(directory), [])
    }

    func testWritingOverADirectoryFailsAndLeavesNoTemporaryFile() throws {
        let target = directory.appendingPathComponent("taken.png")
        try FileManager.default.createDirectory(at: target, withIntermediateDirectories: false)
        let image = RGBImage(width: 1, height: 1, pixels: [0, 0, 0])
        XCTAssertThrowsError(try PNGEncoder.write(image, to: target)) { error in
            XCTAssertTrue("\(error)".contains(target.path), "\(error)")
        }
        XCTAssertEqual(try contents(directory), ["taken.png"])
    }

    func testBadCompressionLevelIsRefused() {
        let image = RGBImage(width: 1, height: 1, pixels: [0, 0, 0])
        XCTAssertThrowsError(try PNGEncoder.encode(image, compressionLevel: 10)) { error in
            XCTAssertEqual((error as? ImageError)?.kind, .unsupported)
        }
    }
}

/// A minimal PNG reader for 8-bit, non-interlaced files whose zlib stream uses stored
/// (uncompressed) blocks only, i.e. what compression level 0 writes. Checks every chunk CRC and
/// the Adler-32, and undoes the five row filters. Independent of libpng.
enum StoredPNGReader {
    struct Failure: Error, CustomStringConvertible { let description: String }
    struct Raw { var width: Int; var height: Int; var colorType: Int; var pixels: [UInt8] }

    static func read(_ b: [UInt8]) throws -> Raw {
        guard b.count > 8, Array(b[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else {
            throw Failure(description: "no signature")
        }
        func be32(_ i: Int) -> Int { Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3]) }
        var pos = 8
        var width = 0, height = 0, colorType = -1
        var idat: [UInt8] = []
        var sawEnd = false
        while pos + 12 <= b.count {
            let length = be32(pos)
            let type = String(decoding: b[(pos + 4)..<(pos + 8)], as: UTF8.self)
            let data = Array(b[(pos + 8)..<(pos + 8 + length)])
            guard crc32(Array(b[(pos + 4)..<(pos + 8 + length)])) == UInt32(be32(pos + 8 + length)) else {
                throw Failure(description: "bad CRC in \(type)")
            }
            switch type {
            case "IHDR":
                width = be32(pos + 8); height = be32(pos + 12)
                guard data[8] == 8, data[12] == 0 else { throw Failure(description: "not 8-bit non-interlaced") }
                colorType = Int(data[9])
            case "IDAT": idat += data
            case "IEND": sawEnd = true
            default: break
            }
            pos += 12 + length
        }
        guard sawEnd, pos == b.count else { throw Failure(description: "missing IEND or trailing bytes") }
        let channels: Int
        switch colorType {
        case 0: channels = 1
        case 2: channels = 3
        case 4: channels = 2
        case 6: channels = 4
        default: throw Failure(description: "colour type \(colorType)")
        }
        // zlib: header, stored blocks, Adler-32.
        guard idat.count >= 6, (Int(idat[0]) << 8 | Int(idat[1])) % 31 == 0, idat[0] & 0x0F == 8 else {
            throw Failure(description: "bad zlib header")
        }
        var q = 2
        var inflated: [UInt8] = []
        while true {
            let header = idat[q]
            guard header & 0x06 == 0 else { throw Failure(description: "not a stored block") }
            let len = Int(idat[q + 1]) | Int(idat[q + 2]) << 8
            let nlen = Int(idat[q + 3]) | Int(idat[q + 4]) << 8
            guard len ^ nlen == 0xFFFF else { throw Failure(description: "bad stored block length") }
            inflated += idat[(q + 5)..<(q + 5 + len)]
            q += 5 + len
            if header & 1 == 1 { break }
        }
        var a: UInt32 = 1, s: UInt32 = 0
        for v in inflated { a = (a + UInt32(v)) % 65521; s = (s + a) % 65521 }
        let adler = UInt32(idat[q]) << 24 | UInt32(idat[q + 1]) << 16 | UInt32(idat[q + 2]) << 8 | UInt32(idat[q + 3])
        guard adler == s << 16 | a else { throw Failure(description: "bad Adler-32") }
        // Row filters.
        let stride = width * channels
        guard inflated.count == height * (stride + 1) else { throw Failure(description: "wrong amount of image data") }
        var out = [UInt8](repeating: 0, count: height * stride)
        for y in 0..<height {
            let filter = inflated[y * (stride + 1)]
            for x in 0..<stride {
                let raw = Int(inflated[y * (stride + 1) + 1 + x])
                let left = x >= channels ? Int(out[y * stride + x - channels]) : 0
                let up = y > 0 ? Int(out[(y - 1) * stride + x]) : 0
                let upLeft = (x >= channels && y > 0) ? Int(out[(y - 1) * stride + x - channels]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = left
                case 2: predictor = up
                case 3: predictor = (left + up) / 2
                case 4:
                    let p = left + up - upLeft
                    let pa = abs(p - left), pb = abs(p - up), pc = abs(p - upLeft)
                    predictor = (pa <= pb && pa <= pc) ? left : (pb <= pc ? up : upLeft)
                default: throw Failure(description: "filter \(filter)")
                }
                out[y * stride + x] = UInt8((raw + predictor) & 0xFF)
            }
        }
        return Raw(width: width, height: height, colorType: colorType, pixels: out)
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for v in bytes {
            c ^= UInt32(v)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return c ^ 0xFFFF_FFFF
    }
}
