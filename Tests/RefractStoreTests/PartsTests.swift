import Foundation
import RefractCheckpoint
@testable import RefractStore
import RefractTensor
import XCTest

/// Runs split into parts (`StorePart`), merged (`StoreMerge`), and the shards' statistics.
final class PartsTests: XCTestCase {
    /// Writes part `k` of `n` of `fx` into `dir`; `stopAfter` shards leaves it incomplete.
    @discardableResult
    func writePart(_ fx: Fixture, _ k: Int, of n: Int, to dir: URL, stopAfter: Int? = nil, resume: Bool = false) throws -> StoreWriter {
        let header = fx.header
        let writer = try StoreWriter.open(at: dir, header: header, constants: fx.constants, createdBy: "refract test",
                                          resume: resume, part: (k, n))
        for (done, s) in writer.pendingShards.enumerated() {
            if let stopAfter, done >= stopAfter { return writer }
            let a = fx.shardArguments(writer.shardRanges[s], header: header)
            try writer.writeShard(s, imageIndices: a.indices, rows: a.rows, skipped: a.skipped)
        }
        try writer.finish()
        return writer
    }

    func testSlicesFollowTheShardsAndCoverTheRunOnce() throws {
        // ⌊K·S/N⌋ ..< ⌊(K+1)·S/N⌋: contiguous, sizes differ by at most one, empty parts when N > S.
        for shards in [0, 1, 3, 7, 10, 196] {
            for n in [1, 2, 3, 4, 16] {
                var next = 0, sizes: [Int] = []
                for k in 0..<n {
                    let r = StorePart.shardSlice(index: k, count: n, shards: shards)
                    XCTAssertEqual(r.lowerBound, next)
                    next = r.upperBound
                    sizes.append(r.count)
                }
                XCTAssertEqual(next, shards)
                XCTAssertLessThanOrEqual((sizes.max() ?? 0) - (sizes.min() ?? 0), 1)
            }
        }
        let fx = Fixture(n: 10, shardSize: 3)                   // shards 0..<3, 3..<6, 6..<9, 9..<10
        let p = try StorePart(index: 1, count: 2, header: fx.header)
        XCTAssertEqual(p.shards, 2..<4)
        XCTAssertEqual(p.images, 6..<10)
        XCTAssertEqual(try StorePart(index: 0, count: 5, header: fx.header).imageCount, 0)
        assertStoreError(try StorePart(index: 4, count: 4, header: fx.header), contains: ["4/4", "0...3", "from 0"])
        assertStoreError(try StorePart(index: 0, count: 0, header: fx.header), contains: ["0/0"])
    }

    func testPartsMergeIntoTheRunOneWriterWrites() throws {
        let dir = try makeTempDirectory(self)
        for n in [3, 4] {
            let fx = Fixture(n: 11, shardSize: 2, dtype: .float16, skipped: [3, 8])     // 6 shards
            let whole = dir.appendingPathComponent("whole-\(n)")
            try fx.write(to: whole)
            var parts: [URL] = []
            for k in (0..<n).reversed() {                                          // any order
                let url = dir.appendingPathComponent("n\(n)-part-\(k)")
                let w = try writePart(fx, k, of: n, to: url)
                XCTAssertEqual(w.manifest.part?.label, "\(k)/\(n)")
                XCTAssertEqual(w.manifest.runId, fx.header.partRunId)
                parts.append(url)
            }
            // A part is not a run for the commands.
            assertStoreError(try StoreReader(run: parts[0]), kind: .isPart, contains: ["part \(n - 1)/\(n)", "refract merge"])
            let last = try StoreReader(run: parts[0], allowPart: true)             // its own rows, when asked for
            XCTAssertEqual(last.rowImageIndices, Array(last.manifest.part!.images).filter { ![3, 8].contains($0) })
            let merged = dir.appendingPathComponent("merged-\(n)")
            let s = try StoreMerge.merge(parts: parts, into: merged, createdBy: "refract merge")
            XCTAssertEqual(s.shards, 6)
            XCTAssertEqual(s.rows, 9)
            XCTAssertFalse(s.alreadyMerged)
            let a = try StoreReader(run: whole), b = try StoreReader(run: merged)
            XCTAssertEqual(a.rowImageIndices, b.rowImageIndices)
            XCTAssertEqual(a.manifest.skipped, b.manifest.skipped)
            XCTAssertEqual(a.manifest.header, b.manifest.header)
            XCTAssertNil(b.manifest.part)
            XCTAssertEqual(b.manifest.mergedFrom?.map(\.index), Array(0..<n))
            for name in ["attn", "mlp"] {
                XCTAssertEqual(try a.tensor(name).data.map(\.bitPattern), try b.tensor(name).data.map(\.bitPattern))
            }
            XCTAssertEqual(try a.constant("beta"), try b.constant("beta"))
            // The shards are the parts' files (hard links), and hold the same tensors as the single writer's.
            for record in b.manifest.shards {
                let x = try SafetensorsFile(url: whole.appendingPathComponent(record.file))
                let y = try SafetensorsFile(url: merged.appendingPathComponent(record.file))
                for key in x.keys { XCTAssertEqual(try x.withRawBytes(key) { Data($0) }, try y.withRawBytes(key) { Data($0) }, key) }
                let st = try FileManager.default.attributesOfItem(atPath: merged.appendingPathComponent(record.file).path)
                XCTAssertEqual((st[.referenceCount] as? NSNumber)?.intValue, 2)
            }
            // Idempotent: merging again does nothing and succeeds.
            XCTAssertTrue(try StoreMerge.merge(parts: parts, into: merged, createdBy: "refract merge").alreadyMerged)
            // The copy mode makes independent files with the same bytes.
            let copied = dir.appendingPathComponent("copied-\(n)")
            _ = try StoreMerge.merge(parts: parts, into: copied, copy: true, createdBy: "refract merge")
            let c = try StoreReader(run: copied)
            XCTAssertEqual(try c.tensor("attn").data.map(\.bitPattern), try a.tensor("attn").data.map(\.bitPattern))
            let st = try FileManager.default.attributesOfItem(atPath: copied.appendingPathComponent("shard-00000.safetensors").path)
            XCTAssertEqual((st[.referenceCount] as? NSNumber)?.intValue, 1)
        }
    }

    func testAKilledPartResumesAndAKilledMergeFinishes() throws {
        let dir = try makeTempDirectory(self)
        let fx = Fixture(n: 12, shardSize: 2)                                     // 6 shards, 3 parts of 2
        let whole = dir.appendingPathComponent("whole")
        try fx.write(to: whole)
        let p1 = dir.appendingPathComponent("p1")
        try writePart(fx, 1, of: 3, to: p1, stopAfter: 1)
        // A leftover shard file of the part's next shard (killed between rename and manifest update).
        try Data("junk".utf8).write(to: p1.appendingPathComponent("shard-00003.safetensors"))
        assertStoreError(try StoreMerge.merge(parts: [p1], into: dir.appendingPathComponent("m0"), createdBy: "t"),
                         kind: .mergeRefused, contains: [p1.path, "part 1/3 is incomplete", "1 of 2", "--resume"])
        // Resuming as another part is refused; as itself it completes.
        assertStoreError(try writePart(fx, 2, of: 3, to: p1, resume: true), kind: .headerMismatch,
                         contains: ["part 1/3", "part 2/3"])
        try writePart(fx, 1, of: 3, to: p1, resume: true)
        let parts = [0, 2].map { dir.appendingPathComponent("p\($0)") }
        try writePart(fx, 0, of: 3, to: parts[0])
        try writePart(fx, 2, of: 3, to: parts[1])
        // A merge killed after linking some shards: the directory holds shards but no manifest.
        let merged = dir.appendingPathComponent("merged")
        try FileManager.default.createDirectory(at: merged, withIntermediateDirectories: true)
        try Data().write(to: merged.appendingPathComponent(".refract-merge"))
        try FileManager.default.linkItem(at: parts[0].appendingPathComponent("shard-00000.safetensors"),
                                         to: merged.appendingPathComponent("shard-00000.safetensors"))
        XCTAssertThrowsError(try StoreReader(run: merged))
        _ = try StoreMerge.merge(parts: [p1] + parts, into: merged, createdBy: "refract merge")
        XCTAssertEqual(try StoreReader(run: merged).tensor("mlp").data, try StoreReader(run: whole).tensor("mlp").data)
        XCTAssertFalse(FileManager.default.fileExists(atPath: merged.appendingPathComponent(".refract-merge").path))
        // A directory with other files is not a killed merge: refused, untouched.
        let other = dir.appendingPathComponent("other")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        try Data("mine".utf8).write(to: other.appendingPathComponent("notes.txt"))
        assertStoreError(try StoreMerge.merge(parts: [p1] + parts, into: other, createdBy: "t"), kind: .exists, contains: ["not empty"])
        // A run already there that is another merge: refused.
        assertStoreError(try StoreMerge.merge(parts: [p1] + parts, into: whole, createdBy: "t"), kind: .exists, contains: ["another run"])
    }

    func testMergeRefusalsNameThePartAndTheProblem() throws {
        let dir = try makeTempDirectory(self)
        let fx = Fixture(n: 12, shardSize: 2)
        var parts: [URL] = []
        for k in 0..<4 {
            parts.append(dir.appendingPathComponent("p\(k)"))
            try writePart(fx, k, of: 4, to: parts[k])
        }
        func refused(_ list: [URL], _ fragments: [String], kind: StoreError.Kind = .mergeRefused) {
            assertStoreError(try StoreMerge.merge(parts: list, into: dir.appendingPathComponent("out-\(UUID().uuidString)"),
                                                  createdBy: "t"), kind: kind, contains: fragments)
        }
        // Missing: names the images, shards and the missing part.
        refused([parts[0], parts[1], parts[3]], ["do not cover", "images 6..<8", "shards 3..<4", "missing part(s) 2/4"])
        // Overlapping: another split of the same run.
        let q = dir.appendingPathComponent("q1of3")
        try writePart(fx, 1, of: 3, to: q)
        refused(parts + [q], [q.path, "part 1/3", "overlaps", "images"])
        // Another model (weights), another image list, other options: each named.
        var other = fx
        other.weightsSHA256 = String(repeating: "cd", count: 32)
        let m = dir.appendingPathComponent("model")
        try writePart(other, 2, of: 4, to: m)
        refused([parts[0], parts[1], m, parts[3]], [m.path, "part 2/4", "another model", "model.weightsSHA256"])
        let l = dir.appendingPathComponent("list")
        try writePart(Fixture(n: 13, shardSize: 2), 2, of: 4, to: l)
        refused([parts[0], parts[1], l, parts[3]], [l.path, "another image list", "images"])
        var opts = fx
        opts.batchSize = 4
        let o = dir.appendingPathComponent("options")
        try writePart(opts, 2, of: 4, to: o)
        refused([parts[0], parts[1], o, parts[3]], [o.path, "other settings", "options.batchSize"])
        // A whole run is not a part; a part given twice; a damaged part.
        let whole = dir.appendingPathComponent("whole")
        try fx.write(to: whole)
        refused([whole] + parts, [whole.path, "whole run, not a part"])
        refused(parts + [parts[0]], [parts[0].path, "given twice"])
        let shard = parts[1].appendingPathComponent("shard-00001.safetensors")
        var bytes = try Data(contentsOf: shard)
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: shard)
        refused(parts, [shard.path, "damaged"], kind: .checksumMismatch)
        // Nothing was created by a refused merge.
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir.path).contains { $0.hasPrefix("out-") })
    }

    func testStatisticsOfAMergedRunEqualAPassOverItsData() throws {
        let dir = try makeTempDirectory(self)
        let fx = Fixture(n: 23, shardSize: 4, dtype: .float16, skipped: [5, 17])
        var parts: [URL] = []
        for k in 0..<3 {
            parts.append(dir.appendingPathComponent("p\(k)"))
            try writePart(fx, k, of: 3, to: parts[k])
        }
        let merged = dir.appendingPathComponent("merged")
        _ = try StoreMerge.merge(parts: parts, into: merged, createdBy: "t")
        let reader = try StoreReader(run: merged)
        let stats = try XCTUnwrap(try reader.statistics(["attn", "mlp"]))
        XCTAssertEqual(stats.rows, 21)
        for name in ["attn", "mlp"] {
            let t = try reader.tensor(name)                                   // one pass, float64
            let w = t.data.count / t.shape[0]
            var sum = [Double](repeating: 0, count: w), sq = sum
            for r in 0..<t.shape[0] { for j in 0..<w { let v = Double(t.data[r * w + j]); sum[j] += v; sq[j] += v * v } }
            let mean = stats.mean(name)
            for j in 0..<w {
                XCTAssertEqual(mean[j], sum[j] / 21, accuracy: 1e-12 * max(1, abs(sum[j] / 21)), "\(name)[\(j)]")
                XCTAssertEqual(stats.sumsOfSquares[name]![j], sq[j], accuracy: 1e-12 * max(1, sq[j]))
            }
            var total = 0.0
            for j in 0..<w { total += sq[j] / 21 - (sum[j] / 21) * (sum[j] / 21) }
            XCTAssertEqual(stats.totalVariance(name, elements: 0..<w), total, accuracy: 1e-9 * max(1, total))
        }
        // The merged run's statistics are those of the run one writer writes, bit for bit.
        let whole = dir.appendingPathComponent("whole")
        try fx.write(to: whole)
        let single = try XCTUnwrap(try StoreReader(run: whole).statistics(["attn", "mlp"]))
        XCTAssertEqual(single.sums, stats.sums)
        XCTAssertEqual(single.sumsOfSquares, stats.sumsOfSquares)
    }

    func testCPUAllocationIsTheSmallestLimit() throws {
        let root = try makeTempDirectory(self)
        func put(_ path: String, _ text: String) throws {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(CPUAllocation.detect(environment: [:], root: root.path, online: 16), CPUAllocation(cpus: 16, source: "online CPUs"))
        try put("proc/self/status", "Name:\trefract\nCpus_allowed_list:\t0-5,8,10-11\n")
        XCTAssertEqual(CPUAllocation.detect(environment: [:], root: root.path, online: 16).cpus, 9)
        try put("proc/self/cgroup", "0::/kubepods/pod1/c1\n")
        try put("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "250000 100000\n")       // a 2.5-CPU limit → 3
        XCTAssertEqual(CPUAllocation.detect(environment: [:], root: root.path, online: 16), CPUAllocation(cpus: 3, source: "cgroup cpu.max"))
        try put("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "max 100000\n")           // no limit
        XCTAssertEqual(CPUAllocation.detect(environment: [:], root: root.path, online: 16).source, "affinity")
        XCTAssertEqual(CPUAllocation.detect(environment: ["SLURM_CPUS_PER_TASK": "4"], root: root.path, online: 16),
                       CPUAllocation(cpus: 4, source: "SLURM_CPUS_PER_TASK"))
        XCTAssertEqual(CPUAllocation.detect(environment: ["SLURM_CPUS_PER_TASK": "junk"], root: root.path, online: 16).cpus, 9)
    }
}
