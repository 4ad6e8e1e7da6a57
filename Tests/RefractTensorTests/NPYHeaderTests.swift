import Foundation
import XCTest
@testable import RefractTensor

/// The .npy reader refuses every malformed header with an error naming the file (never a crash),
/// and the writer reports output failures in words.
final class NPYHeaderTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-npy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// A .npy file with the given header text (padded as NumPy does) and data bytes.
    func npy(_ header: String, body: [UInt8] = [], version: UInt8 = 1) -> Data {
        var h = header
        let prefix = version == 1 ? 10 : 12
        let unpadded = prefix + h.utf8.count + 1
        h += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = [0x93] + Array("NUMPY".utf8) + [version, 0]
        let n = h.utf8.count
        out += (0..<(prefix - 8)).map { UInt8(truncatingIfNeeded: n >> (8 * $0)) }
        out += Array(h.utf8) + body
        return Data(out)
    }

    func assertRefused(_ data: Data, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try NPY.parse(data, file: "bad.npy"), file: file, line: line) { error in
            guard let e = error as? NPYError else { return XCTFail("not an NPYError: \(error)", file: file, line: line) }
            XCTAssertEqual(e.file, "bad.npy", file: file, line: line)
            for f in fragments where !e.description.contains(f) {
                XCTFail("'\(e.description)' does not mention '\(f)'", file: file, line: line)
            }
        }
    }

    func testRoundTripEveryDTypeAndVersion() throws {
        let arrays: [NPYArray] = [
            .float32(shape: [2, 3], values: [1, 2, 3, 4, 5, -6.5]), .float64(shape: [3], values: [1, 2, 3]),
            .int64(shape: [1, 2], values: [-1, 1 << 40]), .int32(shape: [2], values: [7, -7]),
            .uint8(shape: [0, 4], values: []), .bool(shape: [], values: [true]),
        ]
        for a in arrays {
            XCTAssertEqual(try NPY.parse(NPY.encode(a), file: "x"), a)
            let url = scratch.appendingPathComponent("a.npy")
            try NPY.write(a, to: url)
            XCTAssertEqual(try NPY.read(url), a)
        }
        // Version 2 and 3 headers, a Python 2 long, a list shape.
        XCTAssertEqual(try NPY.parse(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2L,), }", body: [1, 0, 0, 0, 2, 0, 0, 0],
                                         version: 2), file: "x"), .int32(shape: [2], values: [1, 2]))
        XCTAssertEqual(try NPY.parse(npy("{\"shape\": [1], \"fortran_order\": False, \"descr\": \"|u1\"}", body: [9], version: 3),
                                     file: "x"), .uint8(shape: [1], values: [9]))
    }

    func testOverflowingAndImpossibleShapesAreRefused() {
        let f4 = "'descr': '<f4', 'fortran_order': False"
        // The product of the dimensions overflows Int (this crashed before).
        assertRefused(npy("{\(f4), 'shape': (4611686018427387904, 4611686018427387904), }"), ["more elements than can be addressed"])
        assertRefused(npy("{\(f4), 'shape': (3037000500, 3037000500, 3), }"), ["more elements than can be addressed"])
        // Elements fit, bytes do not.
        assertRefused(npy("{\(f4), 'shape': (4611686018427387904,), }"), ["more bytes than can be addressed"])
        // A dimension beyond Int.
        assertRefused(npy("{\(f4), 'shape': (99999999999999999999999,), }"), ["out of range"])
        // Negative, and absurd but representable: the data length decides.
        assertRefused(npy("{\(f4), 'shape': (-2, -3), }", body: [UInt8](repeating: 0, count: 24)), ["negative dimension -2"])
        assertRefused(npy("{\(f4), 'shape': (1000000000, 1000000), }", body: [0, 0, 0, 0]),
                      ["needs 4000000000000000 data bytes", "the file has 4", "truncated or wrong shape"])
        assertRefused(npy("{\(f4), 'shape': (2,), }", body: [UInt8](repeating: 0, count: 12)), ["needs 8", "has 12", "trailing"])
        assertRefused(npy("{\(f4), 'shape': (0, 5), }", body: [1]), ["needs 0 data bytes"])
        assertRefused(npy("{\(f4), 'shape': (\(Array(repeating: "1", count: 65).joined(separator: ","))), }", body: [0, 0, 0, 0]),
                      ["65 dimensions", "at most 64"])
    }

    func testMalformedHeadersAreRefused() {
        let ok = "'descr': '<f4', 'fortran_order': False, 'shape': (1,)"
        let four: [UInt8] = [0, 0, 128, 63]
        XCTAssertEqual(try NPY.parse(npy("{\(ok)}", body: four), file: "x"), .float32(shape: [1], values: [1]))
        assertRefused(Data([0x93, 0x4E]), ["bad magic"])
        assertRefused(Data("PK\u{3}\u{4}not numpy at all".utf8), ["bad magic"])
        var v9 = npy("{\(ok)}", body: four); v9[6] = 9
        assertRefused(v9, ["unsupported .npy version 9"])
        var long = npy("{\(ok)}", body: four); long[8] = 0xFF; long[9] = 0xFF
        assertRefused(long, ["header length 65535 runs past the end"])
        assertRefused(Data([0x93] + Array("NUMPY".utf8) + [2, 0, 0xFF, 0xFF]), ["ends inside the header length"])
        assertRefused(npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,)}", body: four), ["unsupported dtype '>f4'"])
        assertRefused(npy("{'descr': '<U8', 'fortran_order': False, 'shape': (1,)}", body: four), ["unsupported dtype"])
        assertRefused(npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,)}", body: four), ["Fortran-order"])
        assertRefused(npy("{'descr': '<f4', 'fortran_order': 1, 'shape': (1,)}", body: four), ["malformed header"])
        assertRefused(npy("{'descr': '<f4', 'fortran_order': False}", body: four), ["header keys", "shape"])
        assertRefused(npy("{\(ok), 'extra': 'x'}", body: four), ["header keys"])
        assertRefused(npy("{\(ok), 'shape': (1,)}", body: four), ["appears twice"])
        assertRefused(npy("{'descr': '<f4', 'fortran_order': False, 'shape': 1}", body: four), ["malformed header"])
        assertRefused(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}", body: four), ["malformed header"])
        assertRefused(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,", body: four), ["malformed header"])
        assertRefused(npy("{'descr': <f4, 'fortran_order': False, 'shape': (1,)}", body: four), ["malformed header"])
        assertRefused(npy("{\(ok)} trailing", body: four), ["text after the closing brace"])
        assertRefused(npy("{'descr': '<f4', 'fortran_order': False, 'shape': ('1',)}", body: four), ["malformed header"])
        assertRefused(npy("{'descr': 5, 'fortran_order': False, 'shape': (1,)}", body: four), ["malformed header"])
        assertRefused(npy("{'descr': (1,), 'fortran_order': False, 'shape': (1,)}", body: four), ["descr is not a string"])
        var notASCII = npy("{\(ok)}", body: four); notASCII[12] = 0xFF
        assertRefused(notASCII, ["not ASCII"])
    }

    /// Every byte of a valid file's header replaced by every value, and the file cut at every
    /// length: each either parses (to an array whose data length matches its shape) or is an
    /// `NPYError` naming the file.
    func testEveryOneByteEditAndTruncationIsParsedOrRefused() throws {
        let valid = NPY.encode(.float32(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]))
        let headerEnd = valid.count - 24
        func check(_ data: Data) {
            do {
                let a = try NPY.parse(data, file: "edited.npy")
                XCTAssertEqual(a.shape.reduce(1, *), a.floats.count)
            } catch let e as NPYError {
                XCTAssertEqual(e.file, "edited.npy")
            } catch {
                XCTFail("unexpected error \(error)")
            }
        }
        for i in 0..<headerEnd {
            for v in [0, 0x20, 0x27, 0x28, 0x29, 0x2C, 0x2D, 0x30, 0x39, 0x7B, 0x7D, 0x80, 0xFF] as [UInt8] {
                var d = valid
                d[i] = v
                check(d)
            }
        }
        for n in 0..<valid.count { check(valid.prefix(n)) }
    }

    func testReadRefusesFoldersAndFIFOsWithoutBlocking() throws {
        XCTAssertThrowsError(try NPY.read(scratch)) { XCTAssertTrue("\($0)".contains("is a directory"), "\($0)") }
        let fifo = scratch.appendingPathComponent("pipe.npy")
        XCTAssertEqual(mkfifo(fifo.path, 0o644), 0)
        XCTAssertThrowsError(try NPY.read(fifo)) {
            XCTAssertTrue("\($0)".contains(fifo.path) && "\($0)".contains("not a regular file"), "\($0)")
        }
        XCTAssertThrowsError(try NPY.read(scratch.appendingPathComponent("missing.npy"))) {
            XCTAssertTrue("\($0)".contains("missing.npy") && "\($0)".contains("no such file"), "\($0)")
        }
    }

    // MARK: Writing

    func testWriteFailuresAreHumanMessagesAndLeaveNothing() throws {
        let a = NPYArray.float32(shape: [2], values: [1, 2])
        // A file where a folder belongs.
        let file = scratch.appendingPathComponent("plain")
        try Data("x".utf8).write(to: file)
        let under = file.appendingPathComponent("out.npy")
        XCTAssertThrowsError(try NPY.write(a, to: under)) { error in
            XCTAssertEqual("\(error)", "cannot write \(under.path): creating the file: \(file.path) is a file, not a folder")
        }
        // A folder where the file belongs: refused, the folder untouched.
        let folder = scratch.appendingPathComponent("folder.npy")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: false)
        XCTAssertThrowsError(try NPY.write(a, to: folder)) { error in
            XCTAssertEqual("\(error)", "cannot write \(folder.path): writing the .npy array: \(folder.path) is a folder, not a file")
        }
        // A missing folder.
        let missing = scratch.appendingPathComponent("no/such/dir/x.npy")
        XCTAssertThrowsError(try NPY.write(a, to: missing)) { error in
            XCTAssertTrue("\(error)".contains("the folder \(scratch.path)/no/such/dir does not exist"), "\(error)")
        }
        // A place even root cannot create files in (sysfs refuses creation with EACCES).
        if FileManager.default.fileExists(atPath: "/sys/kernel") {
            XCTAssertThrowsError(try NPY.write(a, to: URL(fileURLWithPath: "/sys/kernel/refract-test.npy"))) { error in
                XCTAssertTrue("\(error)".hasPrefix("cannot write /sys/kernel/refract-test.npy: creating the file: "), "\(error)")
                XCTAssertFalse("\(error)".contains("NSCocoaErrorDomain"), "\(error)")
            }
        }
        // Nothing half-written was left anywhere.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted(), ["folder.npy", "plain"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), [])
    }

    func testFoundationErrorsAreRestatedFromTheirPOSIXCause() throws {
        let missing = scratch.appendingPathComponent("nope.txt")
        do {
            _ = try Data(contentsOf: missing)
            XCTFail("read a missing file")
        } catch {
            XCTAssertEqual(FileOutput.reason(of: error, path: missing.path), "No such file or directory")
        }
    }
}
