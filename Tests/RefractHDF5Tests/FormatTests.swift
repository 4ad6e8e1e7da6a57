import Foundation
import RefractHDF5
import XCTest

/// The storage variants of Tests/Fixtures/hdf5 (scripts/fixtures/hdf5_formats.py, h5py with
/// libhdf5 2.0): every dataset read back as h5py reads it, in both the oldest and the newest
/// file format, and the two stores the reader does not support refused by name.
final class FormatTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/hdf5", isDirectory: true)

    struct Expected: Decodable {
        struct Dataset: Decodable {
            var shape: [Int]
            var dtype: String
            var values: [Value]
        }
        enum Value: Decodable {
            case number(Double), path(String)
            init(from decoder: Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let d = try? c.decode(Double.self) { self = .number(d) } else { self = .path(try c.decode(String.self)) }
            }
        }
        var files: [String: [String: Dataset]]
    }

    func expected() throws -> Expected {
        try JSONDecoder().decode(Expected.self, from: Data(contentsOf: Self.directory.appendingPathComponent("expected.json")))
    }

    func testEveryDatasetReadsAsH5pyReadsIt() throws {
        let expected = try expected()
        for name in ["earliest.h5", "latest.h5"] {
            let file = try HDF5File(path: Self.directory.appendingPathComponent(name).path)
            let datasets = try XCTUnwrap(expected.files[name])
            XCTAssertGreaterThan(datasets.count, 12)
            for (path, want) in datasets {
                let dataset = try file.dataset(path)
                XCTAssertEqual(dataset.shape, want.shape, "\(name) \(path)")
                if want.dtype == "ref" {
                    let targets = try (0..<dataset.count).map { try dataset.dereference(at: $0).name }
                    let wanted = want.values.map { v -> String in if case .path(let p) = v { return p } else { return "" } }
                    XCTAssertEqual(targets, zip(0..<wanted.count, wanted).map { "\(path)[\($0)] -> \($1)" }, "\(name) \(path)")
                    continue
                }
                let values = try dataset.read(as: Double.self)
                let wanted = want.values.map { v -> Double in if case .number(let d) = v { return d } else { return .nan } }
                XCTAssertEqual(values, wanted, "\(name) \(path)")
            }
        }
    }

    func testLinksAndNamedTypes() throws {
        for name in ["earliest.h5", "latest.h5"] {
            let file = try HDF5File(path: Self.directory.appendingPathComponent(name).path)
            XCTAssertEqual(try file.kind(of: "/links/soft"), .dataset, name)
            XCTAssertEqual(try file.dataset("/links/soft").read(as: UInt8.self), (0..<24).map(UInt8.init), name)
            XCTAssertNil(try file.kind(of: "/links/dangling"), name)
            XCTAssertNil(try file.kind(of: "/links/external"), name)
            XCTAssertEqual(try file.kind(of: "/types/be_u32"), .namedDatatype, name)
            XCTAssertEqual(try file.members(ofGroup: "/links"), ["dangling", "external", "soft"], name)
            XCTAssertEqual(try file.dataset("/plain/f16").elementType, .float(bytes: 2))
            XCTAssertEqual(try file.dataset("/types/uses_named").elementType, .integer(signed: false, bytes: 4))
        }
    }

    func testUnsupportedStoresAreRefusedByName() throws {
        let path = Self.directory.appendingPathComponent("refused.h5").path
        let file = try HDF5File(path: path)
        let dense = hdf5Error(try file.members(ofGroup: "/dense"))
        XCTAssertEqual(dense?.kind, .readFailed)
        XCTAssertEqual(dense?.file, path)
        XCTAssertTrue(dense?.message.contains("densely") ?? false, dense?.description ?? "")
        let extensible = try file.dataset("/extensible")
        XCTAssertEqual(extensible.shape, [10])
        let e = hdf5Error(try extensible.read(as: Float.self))
        XCTAssertEqual(e?.kind, .readFailed)
        XCTAssertTrue(e?.message.contains("extensible array") ?? false, e?.description ?? "")
    }

    /// Every prefix of a file is refused or read without a crash, and so is every single-byte
    /// change of its first 4 KB (the structures: superblock, headers, B-trees, heaps).
    func testDamagedCopiesAreRefusedNotCrashed() throws {
        let data = try Data(contentsOf: Self.directory.appendingPathComponent("earliest.h5"))
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-hdf5-damaged-\(getpid()).h5")
        defer { try? FileManager.default.removeItem(at: scratch) }
        func exercise(_ bytes: Data) throws {
            try bytes.write(to: scratch)
            guard let file = try? HDF5File(path: scratch.path) else { return }
            for path in ["/chunked/shuffle_gzip", "/plain/u8", "/refs", "/links/soft", "/chunked/sparse_fill"] {
                guard let dataset = try? file.dataset(path) else { continue }
                _ = try? dataset.read(as: Double.self)
                if let refs = try? dataset.readObjectReferences() {
                    for r in refs { _ = try? file.dataset(referencedBy: r).read(as: Int64.self) }
                }
            }
        }
        for cut in stride(from: 0, to: data.count, by: 97) { try exercise(data.prefix(cut)) }
        for offset in stride(from: 0, to: min(4096, data.count), by: 3) {
            var copy = data
            copy[offset] ^= 0xA5
            try exercise(copy)
        }
    }
}
