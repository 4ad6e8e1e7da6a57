import Foundation
import XCTest
import RefractTensor
@testable import RefractCheckpoint

final class SafetensorsTests: XCTestCase {
    // MARK: Round trips

    func testFloat32RoundTripWithMetadata() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("model.safetensors")
        let values = pseudoRandomFloats(3 * 5 * 7) + [.infinity, -.infinity, .nan, -0.0, .leastNonzeroMagnitude]
        var w = SafetensorsWriter(metadata: ["format": "pt", "note": "quote \" backslash \\ newline \n é"])
        try w.add("a.weight", float32: values, shape: [values.count])
        try w.add("b", Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6]))
        try w.add("scalar", float32: [42], shape: [])
        try w.add("empty", float32: [], shape: [0, 4])
        try w.write(to: url)

        let f = try SafetensorsFile(url: url)
        XCTAssertEqual(f.metadata, ["format": "pt", "note": "quote \" backslash \\ newline \n é"])
        XCTAssertEqual(Set(f.keys), ["a.weight", "b", "scalar", "empty"])
        let a = try f.floatTensor("a.weight")
        XCTAssertEqual(a.shape, [values.count])
        XCTAssertEqual(a.data.map(\.bitPattern), values.map(\.bitPattern))
        XCTAssertEqual(try f.floatTensor("b"), Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6]))
        XCTAssertEqual(try f.floatTensor("scalar"), Tensor(shape: [], data: [42]))
        XCTAssertEqual(try f.floatTensor("empty").shape, [0, 4])
        XCTAssertEqual(f.tensors["b"]?.dtype, .f32)
        // The writer pads the header to 8 bytes, so the data section is aligned.
        XCTAssertEqual(try SafetensorsFile.headerLength(of: url) % 8, 0)
    }

    func testFloat16FileRoundTripIsExactForEveryBitPattern() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("f16.safetensors")
        let bits = (0...0xFFFF).map { UInt16($0) }
        var w = SafetensorsWriter()
        try w.addRaw("all", dtype: .f16, shape: [256, 256], bytes: bits.withUnsafeBytes { Array($0) })
        try w.write(to: url)
        let t = try SafetensorsFile(url: url).floatTensor("all")
        XCTAssertEqual(t.shape, [256, 256])
        for h in 0...0xFFFF {
            XCTAssertEqual(t.data[h].bitPattern, HalfPrecisionTests.referenceFloat16(UInt16(h)))
        }
        XCTAssertEqual(t.data[0x0001], 0x1p-24)  // subnormal
        XCTAssertEqual(t.data[0x7C00], .infinity)
        XCTAssertTrue(t.data[0x7E00].isNaN)
    }

    func testBFloat16FileRoundTripIsExactForEveryBitPattern() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("bf16.safetensors")
        let bits = (0...0xFFFF).map { UInt16($0) }
        var w = SafetensorsWriter()
        try w.addRaw("all", dtype: .bf16, shape: [65536], bytes: bits.withUnsafeBytes { Array($0) })
        try w.write(to: url)
        let t = try SafetensorsFile(url: url).floatTensor("all")
        for b in 0...0xFFFF { XCTAssertEqual(t.data[b].bitPattern, UInt32(b) << 16) }
        XCTAssertEqual(t.data[0x0001], Float(bitPattern: 0x0001_0000))  // subnormal
        XCTAssertEqual(t.data[0xFF80], -.infinity)
        XCTAssertTrue(t.data[0x7FC0].isNaN)
    }

    func testWriterNarrowsToFloat16AndBFloat16WithRoundToNearestEven() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("narrow.safetensors")
        let values: [Float] = [1.0 / 3, 65504, 65520, 1e-8, 0x1p-24, 3 * 0x1p-25, -0.0, .infinity, .nan, 1 + 0x1p-11]
        var w = SafetensorsWriter()
        try w.add("h", float32: values, shape: [values.count], as: .f16)
        try w.add("b", float32: values, shape: [values.count], as: .bf16)
        try w.write(to: url)
        let f = try SafetensorsFile(url: url)
        let h = try f.floatTensor("h").data
        XCTAssertEqual(h[0], 0.333251953125)
        XCTAssertEqual(h[1], 65504)
        XCTAssertEqual(h[2], .infinity)
        XCTAssertEqual(h[3], 0)
        XCTAssertEqual(h[4], 0x1p-24)
        XCTAssertEqual(h[5], 0x1p-23)  // tie between 1 and 2 ulps -> even (2)
        XCTAssertEqual(h[6].bitPattern, (-Float(0)).bitPattern)
        XCTAssertEqual(h[7], .infinity)
        XCTAssertTrue(h[8].isNaN)
        XCTAssertEqual(h[9], 1)  // tie -> even
        let b = try f.floatTensor("b").data
        XCTAssertEqual(b[0], Float(bitPattern: 0x3EAB_0000))  // 0x3EAAAAAB rounds up
        XCTAssertEqual(b[1], 65536)
        XCTAssertTrue(b[8].isNaN)
        XCTAssertEqual(f.tensors["h"]?.dtype, .f16)
        XCTAssertEqual(f.tensors["b"]?.dtype, .bf16)
    }

    func testInt64Buffers() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("ids.safetensors")
        var w = SafetensorsWriter()
        try w.add("position_ids", int64: (0..<77).map(Int64.init), shape: [1, 77])
        try w.add("w", float32: [1, 2], shape: [2])
        try w.write(to: url)
        let f = try SafetensorsFile(url: url)
        XCTAssertEqual(try f.int64Values("position_ids"), (0..<77).map(Int64.init))
        assertCheckpointError(try f.floatTensor("position_ids"), contains: [url.path, "position_ids", "I64", "float32"])
        assertCheckpointError(try f.int64Values("w"), contains: [url.path, "'w'", "F32", "int64"])
    }

    func testUnalignedHalfDataIsConverted() throws {
        // Header of odd length puts the data section at an odd address in the mapping.
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("odd.safetensors")
        let bits: [UInt16] = [0x3C00, 0xC000, 0x0001, 0x7C00, 0x3555]
        var header = #"{"x":{"dtype":"F16","shape":[5],"data_offsets":[0,10]}}"#
        if header.utf8.count % 2 == 0 { header += " " }
        try write(rawSafetensors(header: header, data: bits.withUnsafeBytes { Array($0) }), to: url)
        let t = try SafetensorsFile(url: url).floatTensor("x")
        XCTAssertEqual(t.data.map(\.bitPattern), bits.map { HalfPrecision.float32Bits(fromFloat16: $0) })
    }

    func testAllReportedDTypesAreRecognised() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("dtypes.safetensors")
        var w = SafetensorsWriter()
        for d in SafetensorsDType.allCases {
            try w.addRaw("t_\(d.rawValue)", dtype: d, shape: [3], bytes: [UInt8](repeating: 1, count: 3 * d.byteSize))
        }
        try w.write(to: url)
        let f = try SafetensorsFile(url: url)
        for d in SafetensorsDType.allCases {
            XCTAssertEqual(f.tensors["t_\(d.rawValue)"]?.dtype, d)
            XCTAssertEqual(try f.withRawBytes("t_\(d.rawValue)") { $0.count }, 3 * d.byteSize)
            if !d.isConvertibleToFloat32 {
                assertCheckpointError(try f.floatTensor("t_\(d.rawValue)"), contains: [url.path, "t_\(d.rawValue)", d.rawValue]) {
                    if case .unconvertibleDType = $0 { return true } else { return false }
                }
            }
        }
    }

    func testWriterIsAtomicAndRejectsBadInput() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("w.safetensors")
        var w = SafetensorsWriter()
        try w.add("x", float32: [1, 2, 3], shape: [3])
        assertCheckpointError(try w.add("x", float32: [1], shape: [1]), contains: ["'x'", "twice"])
        assertCheckpointError(try w.add("y", float32: [1, 2], shape: [3]), contains: ["'y'", "[3]"])
        assertCheckpointError(try w.add("__metadata__", float32: [1], shape: [1]), contains: ["reserved"])
        try write([1, 2, 3], to: url)
        try w.write(to: url)
        XCTAssertEqual(try SafetensorsFile(url: url).keys, ["x"])
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("tmp") }
        XCTAssertEqual(leftovers, [])
        XCTAssertEqual(Array(try Data(contentsOf: url)), w.serialized())
    }

    // MARK: Malformed files

    private func check(_ bytes: [UInt8], _ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                       _ match: (CheckpointError) -> Bool = { _ in true }) throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("bad.safetensors")
        try write(bytes, to: url)
        assertCheckpointError(try SafetensorsFile(url: url), contains: [url.path] + fragments, file: file, line: line, match)
    }

    private func entry(_ key: String, _ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
        "\"\(key)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":[\(begin),\(end)]}"
    }

    func testZeroByteFile() throws {
        try check([], ["empty", "0 bytes"])
    }

    func testFileShorterThanLengthPrefix() throws {
        try check([1, 0, 0], ["3 bytes", "too short"])
    }

    func testHeaderLengthLargerThanFile() throws {
        try check(rawSafetensors(header: "{}", declaredLength: 1000), ["header length 1000", "larger than"])
        try check(rawSafetensors(header: "{}", declaredLength: UInt64.max), ["larger than"])
    }

    func testHeaderNotJSON() throws {
        try check(rawSafetensors(header: "hello world"), ["not JSON"])
        try check(rawSafetensors(header: "{not json}"), ["not valid JSON"])
        try check(rawSafetensors(header: #"{"a": [1, 2}"#), ["not valid JSON"])
        try check(rawSafetensors(header: "[]"), ["not JSON"])
        try check(rawSafetensors(header: "{}x"), ["not valid JSON", "trailing"])
        var invalidUTF8 = Array(#"{"a\#u{e9}":1}"#.utf8)
        invalidUTF8[3] = 0xFF
        try check(rawSafetensors(header: "") + [], ["too small"])
        var raw: [UInt8] = []
        withUnsafeBytes(of: UInt64(invalidUTF8.count).littleEndian) { raw.append(contentsOf: $0) }
        try check(raw + invalidUTF8, ["UTF-8"])
    }

    func testHeaderWithTrailingSpacesIsAccepted() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("pad.safetensors")
        try write(rawSafetensors(header: "{" + entry("x", "F32", [1], 0, 4) + "}     ", data: [0, 0, 128, 63]), to: url)
        XCTAssertEqual(try SafetensorsFile(url: url).floatTensor("x").data, [1])
    }

    func testDuplicateKey() throws {
        try check(rawSafetensors(header: "{" + entry("x", "F32", [1], 0, 4) + "," + entry("x", "F32", [1], 0, 4) + "}",
                                 data: [0, 0, 0, 0]), ["duplicate key 'x'"])
    }

    func testOffsetsOutOfRange() throws {
        try check(rawSafetensors(header: "{" + entry("big.weight", "F32", [4], 0, 16) + "}", data: [UInt8](repeating: 0, count: 8)),
                  ["'big.weight'", "out of range", "8 bytes"]) {
            if case .invalidEntry = $0 { return true } else { return false }
        }
    }

    func testOverlappingOffsets() throws {
        let header = "{" + entry("a", "F32", [2], 0, 8) + "," + entry("b", "F32", [2], 4, 12) + "}"
        try check(rawSafetensors(header: header, data: [UInt8](repeating: 0, count: 12)), ["'b'", "overlap", "'a'"])
    }

    func testGapBetweenTensorsIsRejected() throws {
        let header = "{" + entry("a", "F32", [1], 0, 4) + "," + entry("b", "F32", [1], 8, 12) + "}"
        try check(rawSafetensors(header: header, data: [UInt8](repeating: 0, count: 12)), ["'b'", "gap of 4 bytes"])
    }

    func testTrailingUnindexedBytesAreRejected() throws {
        try check(rawSafetensors(header: "{" + entry("a", "F32", [1], 0, 4) + "}", data: [UInt8](repeating: 0, count: 9)),
                  ["5 trailing bytes"])
    }

    func testUnknownDType() throws {
        try check(rawSafetensors(header: "{" + entry("w", "F4X", [1], 0, 1) + "}", data: [0]), ["'w'", "unknown dtype 'F4X'"]) {
            if case .unknownDType(_, "w", "F4X") = $0 { return true } else { return false }
        }
    }

    func testShapeByteLengthMismatch() throws {
        try check(rawSafetensors(header: "{" + entry("w", "F16", [2, 3], 0, 8) + "}", data: [UInt8](repeating: 0, count: 8)),
                  ["'w'", "[2, 3]", "F16", "needs 12 bytes", "span 8"])
    }

    func testMalformedEntries() throws {
        try check(rawSafetensors(header: #"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#), ["'w'", "non-negative integer"])
        try check(rawSafetensors(header: #"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,0]}}"#), ["'w'", "non-negative integer"])
        try check(rawSafetensors(header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: [0, 0, 0, 0]), ["'w'", "end before"])
        try check(rawSafetensors(header: #"{"w":{"dtype":"F32","shape":[1]}}"#), ["'w'", "missing 'data_offsets'"])
        try check(rawSafetensors(header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#, data: [0, 0, 0, 0]),
                  ["'w'", "unexpected field 'extra'"])
        try check(rawSafetensors(header: #"{"w":[1]}"#), ["'w'", "not an object"])
        try check(rawSafetensors(header: #"{"__metadata__":{"a":1}}"#), ["__metadata__", "not a string"])
        try check(rawSafetensors(header: #"{"w":{"dtype":"F32","shape":[99999999999,99999999999,99999999999],"data_offsets":[0,4]}}"#,
                                 data: [0, 0, 0, 0]), ["'w'", "too many elements"])
    }

    func testMissingTensorNamesFileAndKey() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("m.safetensors")
        var w = SafetensorsWriter()
        try w.add("visual.proj", float32: [1], shape: [1])
        try w.write(to: url)
        assertCheckpointError(try SafetensorsFile(url: url).floatTensor("proj"), contains: [url.path, "'proj'", "visual.proj"])
    }

    func testMissingFile() throws {
        let dir = try makeTempDirectory(self)
        let url = dir.appendingPathComponent("absent.safetensors")
        assertCheckpointError(try SafetensorsFile(url: url), contains: [url.path, "cannot open"])
    }

    func testJSONParserEscapes() throws {
        let text = #"{"k\u00e9y\ud83d\ude00\n\"": [true, false, null, -1.5e3, "\/"]}"#
        let v = try JSONParser.parse(Array(text.utf8))
        XCTAssertEqual(v, .object([("kéy😀\n\"", .array([.bool(true), .bool(false), .null, .number("-1.5e3"), .string("/")]))]))
        XCTAssertThrowsError(try JSONParser.parse(Array(#"{"a":"\ud800"}"#.utf8)))
        XCTAssertThrowsError(try JSONParser.parse(Array("{\"a\":\"\u{01}\"}".utf8)))
        XCTAssertThrowsError(try JSONParser.parse(Array(#"{"a":01}"#.utf8)))
        XCTAssertThrowsError(try JSONParser.parse(Array(String(repeating: "[", count: 100).utf8)))
    }
}

extension SafetensorsFile {
    /// The declared header length of a file (test helper).
    static func headerLength(of url: URL) throws -> Int {
        let d = try Data(contentsOf: url)
        return Int(d.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    }
}
