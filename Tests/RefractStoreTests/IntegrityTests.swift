import Foundation
import XCTest
import RefractCheckpoint
import RefractTensor
@testable import RefractStore

/// Shard SHA-256s are checked before any value of a shard is used, by every read path.
final class IntegrityTests: XCTestCase {
    /// Flips one bit of the byte `fromEnd` bytes before the end of `url` (in the data section).
    func flipByte(_ url: URL, fromEnd: Int = 3) throws {
        var data = try Data(contentsOf: url)
        data[data.count - fromEnd] ^= 0x10
        try data.write(to: url)
    }

    /// A complete run of 10 images in 3 shards, shard 1 damaged by one flipped bit.
    func damagedRun() throws -> (run: URL, shard: URL, recorded: String, actual: String, fx: Fixture) {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 10, shardSize: 4, dtype: .float16)
        try fx.write(to: run)
        let shard = run.appendingPathComponent("shard-00001.safetensors")
        try flipByte(shard)
        let recorded = try StoreReader(run: run).manifest.shards[1].sha256
        let actual = try SHA256.hexDigest(ofFileAt: shard)
        XCTAssertNotEqual(recorded, actual)
        return (run, shard, recorded, actual, fx)
    }

    func assertDamaged<T>(_ body: @autoclosure () throws -> T, _ d: (run: URL, shard: URL, recorded: String, actual: String, fx: Fixture),
                          file: StaticString = #filePath, line: UInt = #line) {
        assertStoreError(try body(), kind: .checksumMismatch,
                         contains: [d.shard.path, "the run is damaged", d.recorded, d.actual], file: file, line: line)
    }

    func testEveryReadPathRefusesADamagedShard() throws {
        let d = try damagedRun()
        // Opening checks structure only; the damage is found when the shard is first read.
        let reader = try StoreReader(run: d.run)
        assertDamaged(try reader.tensor("attn"), d)
        assertDamaged(try reader.tensor("mlp", rows: 3..<6), d)
        assertDamaged(try reader.slices(of: "attn", indices: [[1, 2], [0, 0]]), d)
        assertDamaged(try reader.summedSlices(of: "attn", indices: [[1]], rows: 4..<5), d)
        assertDamaged(try reader.verifyChecksums(), d)
        var seen: [Range<Int>] = []
        assertDamaged(try reader.forEachShard(["attn"]) { rows, _ in seen.append(rows) }, d)
        XCTAssertEqual(seen, [0..<4], "the damaged shard's rows must never reach the caller")
        // Every read of a fresh reader too (the check is not only on the first read of one reader).
        assertDamaged(try StoreReader(run: d.run).slices(of: "attn", indices: [[0, 1]]), d)

        // Rows of intact shards are still served, and are right.
        let first = try reader.tensor("attn", rows: 0..<4)
        XCTAssertEqual(first, d.fx.expected("attn", Array(0..<4)))
        let lastSlices = try reader.slices(of: "attn", indices: [[1, 2]], rows: 8..<10)
        XCTAssertEqual(lastSlices.shape, [2, 1])
    }

    func testExportOfADamagedRunIsRefusedAndLeavesNothing() throws {
        let d = try damagedRun()
        let parent = try makeTempDirectory(self)
        let out = parent.appendingPathComponent("export")
        assertDamaged(try StoreExport.npy(try StoreReader(run: d.run), to: out), d)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: parent.path), [], "no export, no temporary folder")
    }

    func testResumeRefusesADamagedShard() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 10, shardSize: 4)
        try fx.write(to: run, shards: 0..<2)
        let shard = run.appendingPathComponent("shard-00000.safetensors")
        try flipByte(shard)
        assertStoreError(try fx.write(to: run, resume: true), kind: .checksumMismatch, contains: [shard.path, "the run is damaged"])
        XCTAssertFalse(try StoreReader(run: run, allowIncomplete: true).isComplete)
    }

    /// An intact run reads as before; a shard replaced by another run's file with the same run id
    /// and shapes (so every header check passes) but one changed value is caught by its hash.
    func testIntactRunsReadAndSwappedShardsAreCaught() throws {
        let dir = try makeTempDirectory(self)
        let runId = UUID().uuidString.lowercased()
        let a = dir.appendingPathComponent("a"), b = dir.appendingPathComponent("b")
        let fx = Fixture(n: 10, shardSize: 4)
        try fx.write(to: a, runId: runId)
        XCTAssertEqual(try StoreReader(run: a).tensor("attn"), fx.expected("attn", Array(0..<10)))
        XCTAssertNoThrow(try StoreReader(run: a).verifyChecksums())
        // Same run id and shapes: every header check passes; one value differs, so only the hash does.
        var other = fx
        other.batchSize = 16
        try other.write(to: b, runId: runId)
        let name = "shard-00001.safetensors"
        var swapped = try Data(contentsOf: b.appendingPathComponent(name))
        swapped.withUnsafeMutableBytes { $0[$0.count - 1] ^= 1 }
        try swapped.write(to: a.appendingPathComponent(name))
        let reader = try StoreReader(run: a)
        assertStoreError(try reader.tensor("attn"), kind: .checksumMismatch, contains: [a.appendingPathComponent(name).path])
    }

    func testConstantsHashIsRecordedAndChecked() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 6, shardSize: 4)
        try fx.write(to: run, shards: 0..<1)
        let constants = run.appendingPathComponent("constants.safetensors")
        let reader = try StoreReader(run: run, allowIncomplete: true)
        XCTAssertEqual(reader.manifest.constantsSHA256, try SHA256.hexDigest(ofFileAt: constants))
        XCTAssertEqual(try reader.constant("beta"), fx.constants["beta"])
        try flipByte(constants, fromEnd: 2)
        assertStoreError(try StoreReader(run: run, allowIncomplete: true).constant("beta"), kind: .checksumMismatch,
                         contains: [constants.path, "the run is damaged"])
        assertStoreError(try fx.write(to: run, resume: true), kind: .checksumMismatch, contains: [constants.path])
    }

    /// A run written before the constants hash was recorded (the field null) reads as before, and a
    /// resume records the hash after comparing the stored constants with the given ones.
    func testRunsWithoutAConstantsHashStillReadAndResumeRecordsIt() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 6, shardSize: 4)
        try fx.write(to: run, shards: 0..<1)
        let manifestURL = run.appendingPathComponent("manifest.json")
        var manifest = try StoreReader(run: run, allowIncomplete: true).manifest
        let recorded = manifest.constantsSHA256
        manifest.constantsSHA256 = nil
        try manifest.encoded().write(to: manifestURL)
        XCTAssertEqual(try StoreReader(run: run, allowIncomplete: true).constant("beta"), fx.constants["beta"])
        try fx.write(to: run, resume: true)
        let done = try StoreReader(run: run)
        XCTAssertTrue(done.isComplete)
        XCTAssertEqual(done.manifest.constantsSHA256, recorded)
    }

    /// A FIFO planted as the manifest, a shard or the lock file is refused by type, never opened
    /// (opening a FIFO for reading blocks until a writer appears).
    func testFIFOsInARunAreRefusedWithoutBlocking() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 6, shardSize: 4)
        try fx.write(to: run, shards: 0..<1)
        let shard = run.appendingPathComponent("shard-00000.safetensors")
        try FileManager.default.removeItem(at: shard)
        XCTAssertEqual(mkfifo(shard.path, 0o644), 0)
        assertStoreError(try StoreReader(run: run, allowIncomplete: true), contains: [shard.path, "not a regular file"])
        assertStoreError(try fx.write(to: run, resume: true), contains: [shard.path, "not a regular file"])
        let lock = run.appendingPathComponent(RunLock.fileName)
        try FileManager.default.removeItem(at: lock)
        XCTAssertEqual(mkfifo(lock.path, 0o644), 0)
        assertStoreError(try fx.write(to: run, resume: true), kind: .io, contains: [lock.path, "not a regular file"])
        let manifest = run.appendingPathComponent("manifest.json")
        try FileManager.default.removeItem(at: manifest)
        XCTAssertEqual(mkfifo(manifest.path, 0o644), 0)
        assertStoreError(try StoreReader(run: run, allowIncomplete: true), contains: [manifest.path, "not a regular file"])
    }

    /// A verified shard leaves a stamp of its file status; an unchanged shard is then not hashed
    /// again, and any later write to it invalidates the stamp, so the damage is still refused.
    func testStampsSkipUnchangedShardsButNeverHideAnEdit() throws {
        let cache = try makeTempDirectory(self)
        let before = getenv("REFRACT_CACHE_DIR").map { String(cString: $0) }
        setenv("REFRACT_CACHE_DIR", cache.path, 1)
        defer { if let before { setenv("REFRACT_CACHE_DIR", before, 1) } else { unsetenv("REFRACT_CACHE_DIR") } }
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 10, shardSize: 4, dtype: .float16)
        try fx.write(to: run)
        let shard = run.appendingPathComponent("shard-00001.safetensors")
        let sha = try StoreReader(run: run).manifest.shards[1].sha256
        // A file verified within `settle` seconds of its last change gets no stamp (racy).
        _ = try StoreReader(run: run).tensor("attn")
        XCTAssertFalse(ShardStamps.isVerified(shard, sha256: sha), "a freshly written shard must not be stamped")
        Thread.sleep(forTimeInterval: ShardStamps.settle + 1.5)
        _ = try StoreReader(run: run).tensor("attn")
        XCTAssertTrue(ShardStamps.isVerified(shard, sha256: sha))
        XCTAssertTrue(FileManager.default.fileExists(atPath: cache.appendingPathComponent("verified-shards/\(sha)").path))
        // Same length, one bit: the file's times change, the stamp no longer matches, the hash refuses.
        try flipByte(shard)
        XCTAssertFalse(ShardStamps.isVerified(shard, sha256: sha))
        assertStoreError(try StoreReader(run: run).tensor("attn"), kind: .checksumMismatch, contains: [shard.path, "the run is damaged"])
        // REFRACT_VERIFY_SHARDS=always ignores stamps.
        setenv("REFRACT_VERIFY_SHARDS", "always", 1)
        defer { unsetenv("REFRACT_VERIFY_SHARDS") }
        XCTAssertFalse(ShardStamps.enabled)
    }
}
