import Foundation
import RefractHDF5
import XCTest

/// Inputs found by the fuzz harnesses (scripts/fuzz.sh, docs/Fuzzing.md), kept as regression tests.
final class FuzzFindingTests: XCTestCase {
    /// Tests/Fixtures/fuzz, found relative to this source file.
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fuzz", isDirectory: true)

    /// A damaged gtsegs_ijcv.mat whose groups link back to an ancestor while the stored link count
    /// says 1. Objects opened through a reference used to be named with libhdf5's H5Iget_name,
    /// whose recursive walk of the groups trusts those counts and never ended here: the process
    /// died of a stack overflow. Now every reference resolves or is refused with an HDF5Error
    /// naming the file, and resolved objects are named `<source> -> <path or address>`.
    func testReferencesInAFileWithAGroupCycleAreNamedWithoutRecursing() throws {
        let path = Self.directory.appendingPathComponent("hdf5_group_cycle.mat").path
        let file = try HDF5File(path: path)
        defer { file.close() }
        var resolved = 0
        for list in ["/value/img", "/value/gt"] {
            let references = try file.dataset(list).readObjectReferences()
            XCTAssertFalse(references.isEmpty, list)
            for reference in references {
                do {
                    let dataset = try file.dataset(referencedBy: reference)
                    XCTAssertTrue(dataset.name.hasPrefix("\(reference.source) -> "), dataset.name)
                    dataset.close()
                    resolved += 1
                } catch let error as HDF5Error {
                    XCTAssertEqual(error.file, path)
                    XCTAssertEqual(error.object?.hasPrefix(reference.source), true, "\(error)")
                }
            }
        }
        XCTAssertGreaterThan(resolved, 0)
    }

    /// Every HDF5 input the fuzzer ever kept (Fuzz/findings/hdf5-*: crashes, a stack overflow and
    /// out-of-memory inputs of libhdf5 1.10.8, which Refract used before its own reader; Refract's
    /// own: a 2.2 GB reference array, soft links whose targets run through other soft links, which
    /// branched exponentially before soft links were counted per lookup) is opened, walked and
    /// read as the fuzz harness does: each is refused with an HDF5Error naming the file, or read,
    /// within a second.
    func testEveryKeptFuzzFindingIsRefusedOrRead() throws {
        let findings = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/findings", isDirectory: true)
        let names = try FileManager.default.contentsOfDirectory(atPath: findings.path).filter { $0.hasPrefix("hdf5-") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 6)
        for name in names {
            let path = findings.appendingPathComponent(name).path
            let start = Date()
            defer { XCTAssertLessThan(Date().timeIntervalSince(start), 1, name) }
            if let file = try? HDF5File(path: path) { walk(file) }
            do {
                let file = try HDF5File(path: path)
                for list in ["/value/img", "/value/gt"] {
                    do {
                        let references = try file.dataset(list).readObjectReferences()
                        for reference in references.prefix(8) {
                            do { _ = try file.dataset(referencedBy: reference).read(as: Double.self) } catch let error as HDF5Error {
                                XCTAssertEqual(error.file, path)
                            }
                        }
                    } catch let error as HDF5Error {
                        XCTAssertEqual(error.file, path)
                        XCTAssertFalse(error.message.isEmpty, name)
                    }
                }
            } catch let error as HDF5Error {
                XCTAssertEqual(error.file, path)
            }
        }
    }

    /// Lists every group reachable from the root and reads every dataset (at most 2^20 elements),
    /// at most 64 objects, as the fuzz harness does; failures are ignored (only time and crashes count).
    private func walk(_ file: HDF5File) {
        var queue = ["/"]
        var visited = 0
        while !queue.isEmpty && visited < 64 {
            let group = queue.removeFirst()
            guard let members = try? file.members(ofGroup: group) else { continue }
            for name in members.prefix(64) {
                visited += 1
                let path = group == "/" ? "/" + name : group + "/" + name
                switch try? file.kind(of: path) {
                case .group: queue.append(path)
                case .dataset:
                    guard let dataset = try? file.dataset(path), dataset.count <= 1 << 20 else { continue }
                    _ = try? dataset.read(as: Double.self)
                default: continue
                }
            }
        }
    }
}
