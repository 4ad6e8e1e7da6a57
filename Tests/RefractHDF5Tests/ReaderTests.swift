import Foundation
import RefractHDF5
import XCTest

/// Tests/Fixtures/segment/data (written by scripts/fixtures/segmentation_data.py with h5py; the
/// values of hdf5_types.h5 are listed in that folder's README).
enum HDF5Fixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/segment/data", isDirectory: true)
    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
    static func types() throws -> HDF5File { try HDF5File(path: path("hdf5_types.h5")) }
}

/// The HDF5Error `body` throws (fails the test when it throws something else or nothing).
func hdf5Error<T>(_ body: @autoclosure () throws -> T, file: StaticString = #filePath, line: UInt = #line) -> HDF5Error? {
    do {
        _ = try body()
        XCTFail("expected an HDF5Error", file: file, line: line)
    } catch let error as HDF5Error {
        return error
    } catch {
        XCTFail("expected an HDF5Error, got \(error)", file: file, line: line)
    }
    return nil
}

final class ReaderTests: XCTestCase {
    func testIntegerDatasets() throws {
        let f = try HDF5Fixtures.types()
        let u8 = try f.dataset("/ints/u8")
        XCTAssertEqual(u8.shape, [2, 3])
        XCTAssertEqual(u8.rank, 2)
        XCTAssertEqual(u8.count, 6)
        XCTAssertEqual(u8.elementType, .integer(signed: false, bytes: 1))
        XCTAssertEqual(u8.elementSize, 1)
        XCTAssertEqual(try u8.read(as: UInt8.self), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try u8.read(as: Int32.self), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try u8.read(as: Double.self), [0, 1, 2, 3, 4, 5])

        let i16 = try f.dataset("ints/i16")  // relative paths are taken from the root
        XCTAssertEqual(i16.name, "/ints/i16")
        XCTAssertEqual(i16.elementType, .integer(signed: true, bytes: 2))
        XCTAssertEqual(try i16.read(as: Int16.self), [-3, 0, 300])
        XCTAssertEqual(try i16.read(as: Int64.self), [-3, 0, 300])
        let e = hdf5Error(try i16.read(as: UInt8.self))
        XCTAssertEqual(e?.kind, .conversion)
        XCTAssertTrue(e?.message.contains("/ints/i16[0,0] = -3") ?? false, e?.description ?? "")

        XCTAssertEqual(try f.dataset("/ints/u16_be").read(as: UInt16.self), [1, 256, 65535])
        XCTAssertEqual(try f.dataset("/ints/i32_be").read(as: Int32.self), [-70000, 5])
        XCTAssertEqual(hdf5Error(try f.dataset("/ints/i32_be").read(as: Int16.self))?.kind, .conversion)

        let big = try f.dataset("/ints/u64_big")
        XCTAssertEqual(try big.read(as: UInt64.self), [1, (1 << 63) + 1])
        XCTAssertEqual(hdf5Error(try big.read(as: Int64.self))?.kind, .conversion)
        // 2^63 + 1 has no exact Double.
        XCTAssertEqual(hdf5Error(try big.read(as: Double.self))?.kind, .conversion)
    }

    func testFloatDatasets() throws {
        let f = try HDF5Fixtures.types()
        let f32 = try f.dataset("/floats/f32")
        XCTAssertEqual(f32.elementType, .float(bytes: 4))
        XCTAssertEqual(try f32.read(as: Float.self), [0.5, -1.25, 3.0])
        XCTAssertEqual(try f32.read(as: Double.self), [0.5, -1.25, 3.0])
        XCTAssertEqual(hdf5Error(try f32.read(as: Int32.self))?.kind, .conversion)

        let integral = try f.dataset("/floats/f64_integral")
        XCTAssertEqual(try integral.read(as: Int16.self), [0, 1, 255, -2])
        let e = hdf5Error(try integral.read(as: UInt8.self))
        XCTAssertEqual(e?.kind, .conversion)
        XCTAssertTrue(e?.message.contains("[3]") ?? false, e?.description ?? "")

        let fraction = try f.dataset("/floats/f64_fraction")
        XCTAssertEqual(try fraction.read(as: Float.self), [1.0, 0.25])
        XCTAssertEqual(hdf5Error(try fraction.read(as: Int64.self))?.kind, .conversion)

        let gz = try f.dataset("/floats/f64_gzip")  // chunked, deflate filter
        XCTAssertEqual(gz.shape, [10, 10])
        let values = try gz.read(as: Double.self)
        XCTAssertEqual(values.count, 100)
        XCTAssertEqual(values.first, 0)
        XCTAssertEqual(values.last, 1)
        for (i, v) in values.enumerated() { XCTAssertEqual(v, Double(i) / 99, accuracy: 1e-15) }
    }

    func testScalarEmptyAndNonNumeric() throws {
        let f = try HDF5Fixtures.types()
        let scalar = try f.dataset("/scalar")
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(scalar.count, 1)
        XCTAssertTrue(scalar.hasData)
        XCTAssertEqual(try scalar.read(as: Double.self), [2.5])

        let empty = try f.dataset("/empty")
        XCTAssertFalse(empty.hasData)
        XCTAssertEqual(empty.count, 0)
        XCTAssertEqual(try empty.read(as: Double.self), [])

        let text = try f.dataset("/text")
        XCTAssertEqual(text.elementType, .string)
        XCTAssertEqual(hdf5Error(try text.read(as: UInt8.self))?.kind, .unsupportedType)
        let compound = try f.dataset("/compound")
        XCTAssertEqual(compound.elementType, .other("compound"))
        XCTAssertEqual(hdf5Error(try compound.read(as: Double.self))?.kind, .unsupportedType)
        XCTAssertEqual(hdf5Error(try compound.readObjectReferences())?.kind, .unsupportedType)
    }

    func testObjectReferences() throws {
        let f = try HDF5Fixtures.types()
        let refs = try f.dataset("/refs/objects")
        XCTAssertEqual(refs.elementType, .objectReference)
        XCTAssertEqual(refs.shape, [2, 2])
        XCTAssertEqual(hdf5Error(try refs.read(as: UInt64.self))?.kind, .unsupportedType)
        let r = try refs.readObjectReferences()
        XCTAssertEqual(r.map(\.source), ["/refs/objects[0,0]", "/refs/objects[0,1]", "/refs/objects[1,0]", "/refs/objects[1,1]"])
        XCTAssertEqual(r.map(\.isNull), [false, false, false, true])

        let u8 = try f.dataset(referencedBy: r[0])
        XCTAssertEqual(u8.name, "/refs/objects[0,0] -> /ints/u8")
        XCTAssertEqual(try u8.read(as: UInt8.self), [0, 1, 2, 3, 4, 5])
        let inner = try refs.dereference(at: 1)
        XCTAssertEqual(inner.name, "/refs/objects[0,1] -> /group/inner")
        XCTAssertEqual(try inner.read(as: Int32.self), [7, 8, 9])

        let group = hdf5Error(try f.dataset(referencedBy: r[2]))
        XCTAssertEqual(group?.kind, .wrongKind)
        XCTAssertEqual(group?.object, "/refs/objects[1,0] -> /group")
        XCTAssertTrue(group?.message.contains("group") ?? false)
        let null = hdf5Error(try f.dataset(referencedBy: r[3]))
        XCTAssertEqual(null?.kind, .badReference)
        XCTAssertEqual(null?.object, "/refs/objects[1,1]")
        XCTAssertEqual(hdf5Error(try refs.dereference(at: 4))?.kind, .badReference)
        // An address that is no object.
        XCTAssertEqual(hdf5Error(try f.dataset(referencedBy: HDF5ObjectReference(address: 3, source: "made up")))?.kind, .badReference)

        let region = try f.dataset("/refs/region")
        XCTAssertEqual(region.elementType, .otherReference)
        XCTAssertEqual(hdf5Error(try region.readObjectReferences())?.kind, .unsupportedType)
    }

    func testLookupAndMissingObjects() throws {
        let f = try HDF5Fixtures.types()
        XCTAssertEqual(try f.kind(of: "/"), .group)
        XCTAssertEqual(try f.kind(of: "/ints"), .group)
        XCTAssertEqual(try f.kind(of: "/ints/u8"), .dataset)
        XCTAssertNil(try f.kind(of: "/nope"))
        XCTAssertNil(try f.kind(of: "/ints/u8/below"))  // through a dataset
        XCTAssertNil(try f.kind(of: "/nope/deeper"))
        XCTAssertTrue(try f.contains("/group/inner"))
        XCTAssertEqual(try f.members(ofGroup: "/ints"), ["i16", "i32_be", "u16_be", "u64_big", "u8"])
        XCTAssertEqual(hdf5Error(try f.members(ofGroup: "/ints/u8"))?.kind, .wrongKind)

        let missing = hdf5Error(try f.dataset("/value/img"))
        XCTAssertEqual(missing?.kind, .noSuchObject)
        XCTAssertEqual(missing?.object, "/value/img")
        XCTAssertEqual(missing?.file, HDF5Fixtures.path("hdf5_types.h5"))
        // Names the first missing link and what its parent holds.
        XCTAssertTrue(missing?.message.contains("/value does not exist") ?? false, missing?.description ?? "")
        XCTAssertTrue(missing?.message.contains("/ints") ?? false, missing?.description ?? "")
        XCTAssertTrue(missing?.description.hasPrefix(HDF5Fixtures.path("hdf5_types.h5") + ": /value/img: ") ?? false)

        let deeper = hdf5Error(try f.dataset("/group/nothing"))
        XCTAssertTrue(deeper?.message.contains("/group/nothing does not exist (/group holds /group/inner)") ?? false,
                      deeper?.description ?? "")
        XCTAssertEqual(hdf5Error(try f.dataset("/group"))?.kind, .wrongKind)
    }

    func testFileErrors() throws {
        let nowhere = HDF5Fixtures.path("no_such_file.h5")
        let e1 = hdf5Error(try HDF5File(path: nowhere))
        XCTAssertEqual(e1?.kind, .fileNotFound)
        XCTAssertEqual(e1?.file, nowhere)
        XCTAssertEqual(hdf5Error(try HDF5File(path: HDF5Fixtures.directory.path))?.kind, .fileNotFound)

        let v5 = hdf5Error(try HDF5File(path: HDF5Fixtures.path("bad_v5.mat")))
        XCTAssertEqual(v5?.kind, .notHDF5)
        XCTAssertFalse(HDF5File.hasSignature(path: HDF5Fixtures.path("bad_v5.mat")))
        XCTAssertTrue(HDF5File.hasSignature(path: HDF5Fixtures.path("hdf5_types.h5")))
        XCTAssertTrue(HDF5File.hasSignature(path: HDF5Fixtures.path("gtsegs_ijcv.mat")))  // after the 512-byte user block

        // A truncated HDF5 file: the signature is there, the rest is not; the message says what is cut short.
        let data = try Data(contentsOf: HDF5Fixtures.directory.appendingPathComponent("hdf5_types.h5"))
        let cut = FileManager.default.temporaryDirectory.appendingPathComponent("refract-hdf5-truncated-\(getpid()).h5")
        try data.prefix(600).write(to: cut)
        defer { try? FileManager.default.removeItem(at: cut) }
        let truncated = hdf5Error(try HDF5File(path: cut.path))
        XCTAssertEqual(truncated?.kind, .openFailed)
        XCTAssertFalse(truncated?.message.isEmpty ?? true)
    }

    func testMatlabUserBlockAndCells() throws {
        // A MATLAB v7.3 file: HDF5 after a 512-byte user block; cells are datasets of references.
        let f = try HDF5File(path: HDF5Fixtures.path("gtsegs_ijcv.mat"))
        XCTAssertEqual(try f.members(ofGroup: "/"), ["#refs#", "value"])
        let img = try f.dataset("/value/img")
        XCTAssertEqual(img.shape, [4, 1])
        XCTAssertEqual(img.elementType, .objectReference)
        let first = try img.dereference(at: 0)
        XCTAssertEqual(first.shape, [3, 40, 28])  // an H x W x 3 = 28 x 40 x 3 MATLAB array, column-major
        XCTAssertEqual(first.elementType, .integer(signed: false, bytes: 1))
        XCTAssertEqual(try first.read(as: UInt8.self).count, 3 * 40 * 28)
        let compressed = try img.dereference(at: 3)  // gzip chunks
        XCTAssertEqual(compressed.shape, [3, 45, 35])
        XCTAssertEqual(try compressed.read(as: UInt8.self).count, 3 * 45 * 35)

        let cell = try f.dataset("/value/gt").dereference(at: 1)
        XCTAssertEqual(cell.shape, [1, 1])
        XCTAssertEqual(cell.elementType, .objectReference)
        let mask = try cell.dereference(at: 0)
        XCTAssertTrue(mask.name.hasPrefix("/value/gt[1,0] -> /#refs#/"), mask.name)
        XCTAssertTrue(mask.name.contains("[0,0] -> /#refs#/"), mask.name)
        XCTAssertEqual(mask.shape, [24, 36])
        XCTAssertTrue(try mask.read(as: UInt8.self).allSatisfy { $0 <= 1 })
    }

    func testClosing() throws {
        let f = try HDF5Fixtures.types()
        let d = try f.dataset("/ints/u8")
        XCTAssertTrue(f.isOpen)
        f.close()
        f.close()  // idempotent
        XCTAssertFalse(f.isOpen)
        XCTAssertEqual(hdf5Error(try f.dataset("/ints/u8"))?.kind, .closed)
        // A dataset opened before keeps the file readable until it is closed itself.
        XCTAssertEqual(try d.read(as: UInt8.self), [0, 1, 2, 3, 4, 5])
        d.close()
        XCTAssertEqual(hdf5Error(try d.read(as: UInt8.self))?.kind, .closed)
    }

    func testConcurrentReadsAreSerialised() throws {
        let f = try HDF5Fixtures.types()
        let expected = try f.dataset("/floats/f64_gzip").read(as: Double.self)
        let failures = Counter()
        DispatchQueue.concurrentPerform(iterations: 64) { i in
            do {
                let values: [Double]
                if i % 2 == 0 {
                    values = try f.dataset("/floats/f64_gzip").read(as: Double.self)
                } else {
                    let g = try HDF5File(path: HDF5Fixtures.path("hdf5_types.h5"))
                    values = try g.dataset("/floats/f64_gzip").read(as: Double.self)
                    _ = try g.dataset("/refs/objects").dereference(at: 1).read(as: Int32.self)
                }
                if values != expected { failures.add() }
            } catch { failures.add() }
        }
        XCTAssertEqual(failures.value, 0)
    }
}

private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
