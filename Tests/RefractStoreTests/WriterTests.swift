import Foundation
import XCTest
import RefractCheckpoint
import RefractTensor
@testable import RefractStore

final class WriterTests: XCTestCase {
    /// Write 2 of 4 shards, drop the writer (as a kill would), leave the debris a kill between a
    /// shard's rename and the manifest update leaves, resume, finish: every file equals the one of
    /// an uninterrupted run byte for byte.
    func testResumeAfterKillEqualsUninterruptedRun() throws {
        let dir = try makeTempDirectory(self)
        let fx = Fixture(n: 14, shardSize: 4, dtype: .float16, skipped: [1, 6, 13])
        let runId = UUID().uuidString.lowercased()

        let straight = dir.appendingPathComponent("straight")
        try fx.write(to: straight, runId: runId)

        let resumed = dir.appendingPathComponent("resumed")
        do {
            let w = try fx.write(to: resumed, shards: 0..<2, runId: runId)
            XCTAssertEqual(w.completedShards, 2)
            XCTAssertFalse(w.isComplete)
        }
        // Debris: a half-written temporary file and a renamed shard the manifest never recorded.
        try Data(repeating: 7, count: 100).write(to: resumed.appendingPathComponent(".shard-00002.safetensors.tmp-1-2"))
        try Data(repeating: 9, count: 50).write(to: resumed.appendingPathComponent("shard-00002.safetensors"))
        try Data("x".utf8).write(to: resumed.appendingPathComponent(".manifest.json.tmp-3-4"))

        let w = try StoreWriter.open(at: resumed, header: fx.header, constants: fx.constants, createdBy: "refract test",
                                     resume: true)
        XCTAssertEqual(w.completedShards, 2)
        XCTAssertEqual(w.manifest.runId, runId)
        XCTAssertFalse(FileManager.default.fileExists(atPath: resumed.appendingPathComponent("shard-00002.safetensors").path))
        for s in 2..<4 {
            let a = fx.shardArguments(w.shardRanges[s], header: fx.header)
            try w.writeShard(s, imageIndices: a.indices, rows: a.rows, skipped: a.skipped)
        }
        try w.finish()

        let a = try filesByName(straight), b = try filesByName(resumed)
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted())
        XCTAssertEqual(a.keys.sorted(), ["constants.safetensors", "manifest.json", "shard-00000.safetensors",
                                         "shard-00001.safetensors", "shard-00002.safetensors", "shard-00003.safetensors"])
        for (name, data) in a { XCTAssertEqual(data, b[name], "\(name) differs after resume") }
        XCTAssertEqual(try StoreReader(run: resumed).tensor("attn"), try StoreReader(run: straight).tensor("attn"))
    }

    /// Without a fixed run id the two runs differ only in the id (and the shard hashes it feeds).
    func testResumedRunDiffersOnlyInRunId() throws {
        let dir = try makeTempDirectory(self)
        let fx = Fixture(n: 9, shardSize: 3)
        let a = dir.appendingPathComponent("a"), b = dir.appendingPathComponent("b")
        try fx.write(to: a)
        try fx.write(to: b, shards: 0..<1)
        try fx.write(to: b, resume: true)
        let ma = try StoreReader(run: a).manifest, mb = try StoreReader(run: b).manifest
        XCTAssertNotEqual(ma.runId, mb.runId)
        XCTAssertEqual(ma.header, mb.header)
        XCTAssertEqual(ma.skipped, mb.skipped)
        XCTAssertEqual(ma.shards.map(\.rows), mb.shards.map(\.rows))
        for name in ["shard-00000.safetensors", "shard-00002.safetensors"] {
            let da = try Data(contentsOf: a.appendingPathComponent(name))
            let db = try Data(contentsOf: b.appendingPathComponent(name))
            // Same length; byte-equal once the run id in the header metadata is swapped.
            var swapped = db
            let range = try XCTUnwrap(swapped.range(of: Data(mb.runId.utf8)))
            swapped.replaceSubrange(range, with: Data(ma.runId.utf8))
            XCTAssertNotEqual(da, db)
            XCTAssertEqual(da, swapped)
        }
    }

    func testResumeWithDifferentHeaderIsRefusedNamingTheField() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 8, shardSize: 4)
        try fx.write(to: run, shards: 0..<1)
        func resume(_ f: Fixture, _ edit: (inout StoreHeader) -> Void = { _ in }) throws {
            var h = f.header
            edit(&h)
            _ = try StoreWriter.open(at: run, header: h, constants: f.constants, createdBy: "x", resume: true)
        }
        var other = fx
        other.batchSize = 16
        assertStoreError(try resume(other), kind: .headerMismatch,
                         contains: ["\(run.path)/manifest.json", "options.batchSize", "stored 8", "requested 16"])
        other = fx
        other.weightsSHA256 = String(repeating: "cd", count: 32)
        assertStoreError(try resume(other), kind: .headerMismatch, contains: ["model.weightsSHA256"])
        assertStoreError(try resume(fx) { $0.images[3].path = "elsewhere.jpg" }, kind: .headerMismatch,
                         contains: ["images[3].path", "elsewhere.jpg"])
        assertStoreError(try resume(fx) { $0.shardSize = 2 }, kind: .headerMismatch, contains: ["shardSize"])
        assertStoreError(try resume(fx) { $0.tensors[1].shape = [5] }, kind: .headerMismatch, contains: ["tensors.mlp.shape"])
        assertStoreError(try resume(fx) { $0.dimensions["heads"] = 4 }, kind: .headerMismatch, contains: ["dimensions.heads"])
        assertStoreError(try resume(fx) { $0.images.append(StoreImage(path: "new.jpg")) }, kind: .headerMismatch,
                         contains: ["images", "8 images", "9"])
        // Different constants are refused too.
        var constants = fx.constants
        constants["beta"]?.data[2] = 4
        assertStoreError(try StoreWriter.open(at: run, header: fx.header, constants: constants, createdBy: "x", resume: true),
                         kind: .headerMismatch, contains: ["constants.safetensors", "constant 'beta'"])
        // The run is untouched and still resumable with the right header.
        let w = try fx.write(to: run, resume: true)
        XCTAssertTrue(w.isComplete)
    }

    func testResumeOfCompleteRunIsRefused() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 5, shardSize: 4)
        try fx.write(to: run)
        assertStoreError(try fx.write(to: run, resume: true), kind: .alreadyComplete, contains: [run.path, "already complete"])
    }

    func testResumeOfMissingRunIsRefused() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("nothing")
        assertStoreError(try Fixture(n: 5, shardSize: 4).write(to: run, resume: true), kind: .missingFile,
                         contains: [run.path, "does not exist"])
    }

    func testNewRunIntoNonEmptyDirectoryIsRefused() throws {
        let dir = try makeTempDirectory(self)
        let fx = Fixture(n: 5, shardSize: 4)
        let busy = dir.appendingPathComponent("busy")
        try FileManager.default.createDirectory(at: busy, withIntermediateDirectories: true)
        try Data("x".utf8).write(to: busy.appendingPathComponent("notes.txt"))
        assertStoreError(try fx.write(to: busy), kind: .exists, contains: [busy.path, "exists", "use --resume or another path"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: busy.path), ["notes.txt"])

        let existing = dir.appendingPathComponent("existing")
        try fx.write(to: existing, shards: 0..<1)
        assertStoreError(try fx.write(to: existing), kind: .exists, contains: [existing.path, "--resume"])

        let file = dir.appendingPathComponent("file")
        try Data().write(to: file)
        assertStoreError(try fx.write(to: file), kind: .exists, contains: [file.path, "not a directory"])

        // An existing empty directory is fine.
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        XCTAssertTrue(try fx.write(to: empty).isComplete)
    }

    func testWriteShardArgumentsAreChecked() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 8, shardSize: 4)
        let header = fx.header
        let w = try StoreWriter.open(at: run, header: header, constants: fx.constants, createdBy: "x", resume: false)
        let good = fx.shardArguments(0..<4, header: header)
        func write(_ index: Int = 0, indices: [Int]? = nil, rows: [String: Tensor]? = nil, skipped: [SkippedImage]? = nil) throws {
            try w.writeShard(index, imageIndices: indices ?? good.indices, rows: rows ?? good.rows, skipped: skipped ?? good.skipped)
        }
        assertStoreError(try write(1), kind: .invalidArgument, contains: ["shard 1", "next shard to write is 0"])
        assertStoreError(try write(indices: [0, 1, 2]), kind: .invalidArgument, contains: ["do not cover"])
        assertStoreError(try write(indices: [0, 2, 1, 3]), kind: .invalidArgument, contains: ["ascending"])
        assertStoreError(try write(indices: [0, 1, 2, 4]), kind: .invalidArgument, contains: ["outside the shard's range"])
        assertStoreError(try write(rows: ["attn": good.rows["attn"]!]), kind: .invalidArgument, contains: ["no rows for tensor 'mlp'"])
        var extra = good.rows
        extra["other"] = Tensor(zeros: [4])
        assertStoreError(try write(rows: extra), kind: .invalidArgument, contains: ["'other'"])
        var wrong = good.rows
        wrong["mlp"] = Tensor(zeros: [4, 5])
        assertStoreError(try write(rows: wrong), kind: .invalidArgument, contains: ["'mlp'", "[4, 5]", "[4, 4]"])
        let skip = SkippedImage(index: 3, path: header.images[3].path, error: "bad")
        assertStoreError(try write(indices: [0, 1, 2, 3], skipped: [skip]), kind: .invalidArgument, contains: ["both a row and skipped"])
        assertStoreError(try write(indices: [0, 1, 2], skipped: [SkippedImage(index: 3, path: "other.jpg", error: "bad")]),
                         kind: .invalidArgument, contains: ["other.jpg"])
        assertStoreError(try w.finish(), kind: .incomplete, contains: [run.path, "0 of 2 shards"])
        // Nothing was written by the refused calls.
        XCTAssertEqual(w.completedShards, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: run.path).sorted(),
                       [".refract.lock", "constants.safetensors", "manifest.json"])
        try write()
        assertStoreError(try write(), kind: .invalidArgument, contains: ["already written"])
        let second = fx.shardArguments(4..<8, header: header)
        try w.writeShard(1, imageIndices: second.indices, rows: second.rows, skipped: second.skipped)
        assertStoreError(try w.writeShard(2, imageIndices: [], rows: [:], skipped: []), kind: .invalidArgument,
                         contains: ["only 2 shards"])
        try w.finish()
        try w.finish()  // idempotent
        assertStoreError(try w.writeShard(1, imageIndices: second.indices, rows: second.rows, skipped: second.skipped),
                         kind: .alreadyComplete, contains: ["already finished"])
    }

    func testHeaderAndConstantsAreValidated() throws {
        let dir = try makeTempDirectory(self)
        let fx = Fixture(n: 4, shardSize: 2)
        var h = fx.header
        h.tensors[0].name = "image_index"
        assertStoreError(try StoreWriter.open(at: dir.appendingPathComponent("a"), header: h, constants: fx.constants,
                                              createdBy: "x", resume: false), kind: .invalidArgument, contains: ["reserved"])
        h = fx.header
        h.tensors[0].name = "../escape"
        assertStoreError(try StoreWriter.open(at: dir.appendingPathComponent("a"), header: h, constants: fx.constants,
                                              createdBy: "x", resume: false), kind: .invalidArgument, contains: ["'../escape'"])
        h = fx.header
        h.constants[0].name = "mlp"
        assertStoreError(try StoreWriter.open(at: dir.appendingPathComponent("a"), header: h, constants: ["mlp": Tensor(zeros: [4])],
                                              createdBy: "x", resume: false), kind: .invalidArgument, contains: ["used twice"])
        h = fx.header
        h.shardSize = 0
        assertStoreError(try StoreWriter.open(at: dir.appendingPathComponent("a"), header: h, constants: fx.constants,
                                              createdBy: "x", resume: false), kind: .invalidArgument, contains: ["shardSize"])
        assertStoreError(try StoreWriter.open(at: dir.appendingPathComponent("a"), header: fx.header, constants: [:],
                                              createdBy: "x", resume: false), kind: .invalidArgument, contains: ["'beta'", "not given"])
        assertStoreError(try StoreWriter.open(at: dir.appendingPathComponent("a"), header: fx.header,
                                              constants: ["beta": Tensor(zeros: [3])], createdBy: "x", resume: false),
                         kind: .invalidArgument, contains: ["'beta'", "[3]"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("a").path))
    }

    /// A kill after the first manifest write but before the constants: resume writes them.
    func testResumeWritesMissingConstants() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 4, shardSize: 2)
        try fx.write(to: run, shards: 0..<0)
        try FileManager.default.removeItem(at: run.appendingPathComponent("constants.safetensors"))
        XCTAssertEqual(try StoreReader(run: run, allowIncomplete: true).rowCount, 0)
        try fx.write(to: run, resume: true)
        XCTAssertEqual(try StoreReader(run: run).constant("beta"), fx.constants["beta"])
    }
}
