import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractTensor
import XCTest
@testable import RefractTextSpan

/// The text-embedding cache is verified on every use; a damaged entry is noted, recomputed and
/// rewritten, never trusted and never a crash.
final class CacheTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-cache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    func entry(_ dir: URL? = nil) -> TextEmbeddingCache {
        TextEmbeddingCache(directory: dir ?? scratch.appendingPathComponent("cache"), poolPath: "pool.txt",
                           poolSHA256: String(repeating: "cd", count: 32), rows: 3, modelID: "tiny",
                           weightsSHA256: String(repeating: "ab", count: 32), width: 4)
    }

    let embeddings = Tensor(shape: [3, 4], data: [1, 0, 0, 0, 0, 0.6, 0.8, 0, 0.5, 0.5, 0.5, 0.5])

    /// Loads, collecting the notes.
    func load(_ e: TextEmbeddingCache) -> (Tensor?, [String]) {
        var notes: [String] = []
        let t = e.load { notes.append($0) }
        return (t, notes)
    }

    /// Rewrites the side-car's recorded SHA-256 to match the array file as it is now (a damage
    /// the hash alone cannot catch: the array's own checks must).
    func resign(_ e: TextEmbeddingCache) throws {
        var record = try JSONDecoder().decode(TextEmbeddingCache.Record.self, from: Data(contentsOf: e.sidecar))
        record.embeddingsSHA256 = try SHA256.hexDigest(ofFileAt: e.npy)
        try JSONEncoder().encode(record).write(to: e.sidecar)
    }

    func testRoundTripAndNoNoteWhenAbsent() throws {
        let e = entry()
        var (t, notes) = load(e)
        XCTAssertNil(t)
        XCTAssertEqual(notes, [], "a missing entry is not worth a note")
        e.store(embeddings) { XCTFail("unexpected note \($0)") }
        (t, notes) = load(e)
        XCTAssertEqual(t, embeddings)
        XCTAssertEqual(notes, [])
        let record = try JSONDecoder().decode(TextEmbeddingCache.Record.self, from: Data(contentsOf: e.sidecar))
        XCTAssertEqual(record.embeddingsSHA256, try SHA256.hexDigest(ofFileAt: e.npy))
        XCTAssertEqual([record.rows, record.width], [3, 4])
    }

    func testEveryKindOfDamageIsNotedAndRefused() throws {
        let e = entry()
        func damaged(_ why: String, _ fragments: [String], _ damage: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) throws {
            e.store(embeddings) { XCTFail("unexpected note \($0)") }
            try damage()
            let (t, notes) = load(e)
            XCTAssertNil(t, why, file: file, line: line)
            XCTAssertEqual(notes.count, 1, why, file: file, line: line)
            let note = notes.first ?? ""
            for f in [e.npy.path, "recomputing"] + fragments where !note.contains(f) {
                XCTFail("\(why): note '\(note)' does not mention '\(f)'", file: file, line: line)
            }
        }
        // One flipped bit in a value.
        try damaged("flipped bit", ["SHA-256"]) {
            var d = try Data(contentsOf: e.npy)
            d[d.count - 2] ^= 0x04
            try d.write(to: e.npy)
        }
        // Truncated array.
        try damaged("truncated", ["SHA-256"]) { try Data(try Data(contentsOf: e.npy).prefix(70)).write(to: e.npy) }
        // The crash of issue 11: a header whose shape overflows, with a side-car that matches it.
        try damaged("overflowing shape", ["more elements than can be addressed"]) {
            let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }"
            var h = Array(header.utf8)
            while (10 + h.count + 1) % 64 != 0 { h.append(0x20) }
            h.append(0x0A)
            try Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h + [0, 0, 0, 0]).write(to: e.npy)
            try resign(e)
        }
        // Right hash, wrong shape.
        try damaged("wrong shape", ["shape [4, 3]"]) {
            try NPY.write(.float32(shape: [4, 3], values: embeddings.data), to: e.npy)
            try resign(e)
        }
        // Non-finite values.
        try damaged("NaN", ["non-finite value at row 1"]) {
            var values = embeddings.data
            values[5] = .nan
            try NPY.write(.float32(shape: [3, 4], values: values), to: e.npy)
            try resign(e)
        }
        // Side-car missing, damaged, from an older refract (no checksum), or for other weights.
        try damaged("no side-car", ["side-car", "missing"]) { try FileManager.default.removeItem(at: e.sidecar) }
        try damaged("garbage side-car", ["not a valid cache record"]) { try Data("{\"model\": ".utf8).write(to: e.sidecar) }
        try damaged("old side-car", ["not a valid cache record"]) {
            try Data(#"{"model": "tiny", "pool": "pool.txt", "poolSHA256": "cd", "rows": 3, "weightsSHA256": "ab", "width": 4}"#.utf8)
                .write(to: e.sidecar)
        }
        try damaged("other weights", ["other weights"]) {
            var record = try JSONDecoder().decode(TextEmbeddingCache.Record.self, from: Data(contentsOf: e.sidecar))
            record.weightsSHA256 = String(repeating: "ef", count: 32)
            try JSONEncoder().encode(record).write(to: e.sidecar)
        }
        // A FIFO in place of the array or the side-car: refused by type, not read (which would block).
        try damaged("FIFO array", ["is not a regular file"]) {
            try FileManager.default.removeItem(at: e.npy)
            XCTAssertEqual(mkfifo(e.npy.path, 0o644), 0)
        }
        try damaged("FIFO side-car", ["is not a regular file"]) {
            try FileManager.default.removeItem(at: e.sidecar)
            XCTAssertEqual(mkfifo(e.sidecar.path, 0o644), 0)
        }
        // Rewritten, the entry is good again.
        e.store(embeddings) { XCTFail("unexpected note \($0)") }
        XCTAssertEqual(load(e).0, embeddings)
    }

    func testACacheThatCannotBeWrittenIsANoteNotAnError() throws {
        let blocker = scratch.appendingPathComponent("blocker")
        try Data("x".utf8).write(to: blocker)
        let e = entry(blocker)
        var notes: [String] = []
        e.store(embeddings) { notes.append($0) }
        XCTAssertEqual(notes.count, 1)
        XCTAssertTrue(notes.first?.contains("\(blocker.path) is a file, not a folder") ?? false, "\(notes)")
    }

    /// Through `TextEmbeddings.load` with a real (tiny) model: a damaged entry is recomputed (the
    /// model's own embeddings, not the damaged ones) and rewritten, then served from the cache.
    func testDamagedEntryIsRebuiltThroughTextEmbeddings() throws {
        let dir = fixtures.appendingPathComponent("openclip-tiny")
        let clip = try CLIP(location: ModelLocation(directory: dir, layout: .openCLIP, modelId: dir.path))
        let poolURL = scratch.appendingPathComponent("pool.txt")
        try "a dog\na cat\nsnow\n".write(to: poolURL, atomically: true, encoding: .utf8)
        let pool = try DescriptionPool.load(poolURL)
        let cache = scratch.appendingPathComponent("cache")
        let (first, s1) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "w", cache: cache)
        XCTAssertEqual(s1, .computed)
        let e = TextEmbeddingCache(directory: cache, pool: pool, model: clip, weightsSHA256: "w")
        var d = try Data(contentsOf: e.npy)
        d[d.count - 1] ^= 0x40                    // the last value's exponent: a large, silent error
        try d.write(to: e.npy)
        let (second, s2) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "w", cache: cache)
        XCTAssertEqual(s2, .computed)
        XCTAssertEqual(second, first)
        let (third, s3) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "w", cache: cache)
        XCTAssertEqual(s3, .cache)
        XCTAssertEqual(third, first)
    }
}
