import Foundation
import RefractCheckpoint
import RefractTensor
import XCTest

/// Runs split across processes (`decompose --part K/N`, `embed-images --part K/N`) and `refract
/// merge`, run as a user (or a scheduler) would.
extension CLITests {
    /// Runs the `refract` commands as parallel processes; fails the test for any that does not exit 0.
    func runInParallel(_ commands: [[String]], timeout: TimeInterval = 180) throws {
        let started = try commands.map { try start(Self.binary, $0, environment: environment(), label: "refract \($0.joined(separator: " "))") }
        for s in started {
            let r = try finish(s, timeout: timeout)
            XCTAssertEqual(r.status, 0, "\(s.label): \(r.stderr)")
        }
    }

    /// Exports both runs and checks every exported file but the manifest copy is byte-identical.
    func assertSameExports(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let ea = path(scratch, "export-\(UUID().uuidString)"), eb = path(scratch, "export-\(UUID().uuidString)")
        XCTAssertEqual(try refract(["export", "--run", a, "--output", ea]).status, 0, file: file, line: line)
        XCTAssertEqual(try refract(["export", "--run", b, "--output", eb]).status, 0, file: file, line: line)
        let names = try FileManager.default.contentsOfDirectory(atPath: ea).sorted()
        XCTAssertEqual(names, try FileManager.default.contentsOfDirectory(atPath: eb).sorted(), file: file, line: line)
        XCTAssertTrue(names.contains("attn.npy") || names.contains("components.npy"), "\(names)", file: file, line: line)
        for name in names where name != "manifest.json" {
            let x = try Data(contentsOf: URL(fileURLWithPath: ea).appendingPathComponent(name))
            let y = try Data(contentsOf: URL(fileURLWithPath: eb).appendingPathComponent(name))
            XCTAssertEqual(x, y, "\(name) differs", file: file, line: line)
        }
    }

    func testPartsWrittenInParallelMergeIntoTheSingleProcessRun() throws {
        let data = try classFolders()                                  // 5 images, 2 classes
        let common = ["decompose", "--model", tinyModel, "--shard-size", "1", "--batch-size", "2", "--tokens", "last:1",
                      "--dtype", "float16", data.path]
        let whole = path(scratch, "whole")
        XCTAssertEqual(try refract(common + ["--output", whole]).status, 0)
        for n in [3, 4] {
            let parts = (0..<n).map { path(scratch, "n\(n)-part-\($0)") }
            try runInParallel((0..<n).map { common + ["--part", "\($0)/\(n)", "--output", parts[$0]] })
            // A part is not a run: commands refuse it and say how to merge.
            let r = try refract(["export", "--run", parts[0], "--output", path(scratch, "e-part")])
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains("is part 0/\(n)") && r.stderr.contains("refract merge"), r.stderr)
            let merged = path(scratch, "merged-\(n)")
            var m = try refract(["merge", "--output", merged] + parts.reversed())
            XCTAssertEqual(m.status, 0, m.stderr)
            XCTAssertTrue(m.stderr.contains("merged \(n) part(s)") && m.stderr.contains("5 rows in 5 shard(s)"), m.stderr)
            m = try refract(["merge", "--output", merged] + parts)                        // again: nothing to do
            XCTAssertEqual(m.status, 0, m.stderr)
            XCTAssertTrue(m.stderr.contains("already holds this merge"), m.stderr)
            try assertSameExports(whole, merged)
        }
        // The mean-ablation study reads its means from the merged shards' statistics: the same study.
        let classes = path(scratch, "classes.txt")
        try "cat\ndog\n".write(toFile: classes, atomically: true, encoding: .utf8)
        for (run, out) in [(whole, "ab-whole"), (path(scratch, "merged-3"), "ab-merged")] {
            XCTAssertEqual(try refract(["ablate", "--run", run, "--classes", classes, "--output", path(scratch, out)]).status, 0)
        }
        let a = try String(contentsOfFile: path(scratch, "ab-whole/ablation.csv"), encoding: .utf8)
        let b = try String(contentsOfFile: path(scratch, "ab-merged/ablation.csv"), encoding: .utf8)
        XCTAssertEqual(a, b)
    }

    func testAKilledPartContinuesAndMergeRefusesWhatDoesNotFit() throws {
        let data = try classFolders()
        let common = ["decompose", "--model", tinyModel, "--shard-size", "1", "--batch-size", "1", data.path]
        let whole = path(scratch, "whole")
        XCTAssertEqual(try refract(common + ["--output", whole]).status, 0)
        let p0 = path(scratch, "p0"), p1 = path(scratch, "p1"), merged = path(scratch, "merged")
        XCTAssertEqual(try refract(common + ["--part", "0/2", "--output", p0]).status, 0)
        // Part 1/2 (shards 2..<5) killed after one shard.
        var r = try refract(common + ["--part", "1/2", "--output", p1], environment: ["REFRACT_FAULT_AFTER_SHARDS": "1"])
        XCTAssertEqual(lastTerminationReason, .uncaughtSignal, r.stderr)
        r = try refract(["merge", "--output", merged, p0, p1])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains(p1) && r.stderr.contains("part 1/2 is incomplete (1 of 3 shards"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: merged))
        // --continue resumes it; once complete, --continue does nothing and succeeds (a requeued task).
        r = try refract(common + ["--part", "1/2", "--continue", "--output", p1])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("(part 1/2)") && r.stderr.contains("2 written now"), r.stderr)
        r = try refract(common + ["--part", "1/2", "--continue", "--output", p1])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("already complete"), r.stderr)
        // --continue with another K, or other options, over a complete part: refused.
        r = try refract(common + ["--part", "0/2", "--continue", "--output", p1])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("part 1/2") && r.stderr.contains("part 0/2"), r.stderr)
        // Bad --part values.
        for bad in ["2/2", "1", "a/b", "0/0"] {
            r = try refract(common + ["--part", bad, "--output", path(scratch, "bad")])
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains("--part"), r.stderr)
        }
        // Refusals: a missing part, an overlapping part, a part with other options, of another image
        // list, of another model; each names the part and the problem, and writes nothing.
        func refused(_ parts: [String], _ fragments: [String], line: UInt = #line) throws {
            let out = path(scratch, "refused-\(UUID().uuidString)")
            let r = try refract(["merge", "--output", out] + parts)
            XCTAssertNotEqual(r.status, 0, line: line)
            for f in fragments { XCTAssertTrue(r.stderr.contains(f), "\(f) not in: \(r.stderr)", line: line) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), line: line)
        }
        try refused([p1], ["do not cover", "images 0..<2", "missing part(s) 0/2"])
        let q = path(scratch, "q1of3")
        XCTAssertEqual(try refract(common + ["--part", "1/3", "--output", q]).status, 0)
        try refused([p0, p1, q], [q, "overlaps"])
        let o = path(scratch, "other-options")
        XCTAssertEqual(try refract(common + ["--part", "0/2", "--dtype", "float16", "--output", o]).status, 0)
        try refused([o, p1], ["other settings", "dtype"])
        let l = path(scratch, "other-list")
        XCTAssertEqual(try refract(["decompose", "--model", tinyModel, "--shard-size", "1", "--batch-size", "1", "--part", "0/2",
                                    "--output", l, data.appendingPathComponent("dog").path]).status, 0)
        try refused([l, p1], [l, "another image list"])
        let copy = path(scratch, "model-copy")
        try FileManager.default.copyItem(atPath: tinyModel, toPath: copy)
        let m = path(scratch, "other-model")
        XCTAssertEqual(try refract(["decompose", "--model", copy, "--shard-size", "1", "--batch-size", "1", "--part", "0/2",
                                    "--output", m, data.path]).status, 0)
        try refused([m, p1], [m, "another model", "model.id"])
        try refused([whole, p1], [whole, "whole run, not a part"])
        // A merge killed after linking two shards leaves no run; merging again finishes it.
        r = try refract(["merge", "--output", merged, p1, p0], environment: ["REFRACT_FAULT_AFTER_SHARDS": "2"])
        XCTAssertEqual(lastTerminationReason, .uncaughtSignal, r.stderr)
        r = try refract(["export", "--run", merged, "--output", path(scratch, "e-killed")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("manifest.json"), r.stderr)
        r = try refract(["merge", "--output", merged, p1, p0])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("merged 2 part(s)"), r.stderr)
        try assertSameExports(whole, merged)
        // --copy: the same run, independent files.
        r = try refract(["merge", "--copy", "--output", path(scratch, "copied"), p0, p1])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("(copied)"), r.stderr)
        try assertSameExports(whole, path(scratch, "copied"))
        // An empty part (more parts than shards) is written, said so, and merges.
        r = try refract(common + ["--shard-size", "4", "--part", "0/3", "--output", path(scratch, "empty")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("this part is empty"), r.stderr)
    }

    func testEmbeddingPartsAndAlignmentOverAMergedRun() throws {
        let data = try labelledImages("cat", "dog")                    // 4 images
        let deit = Self.timmFixtures.appendingPathComponent("deit-tiny").path
        let clip = path(Self.models, "openclip-tiny")
        // The run: single, and in 3 parts merged.
        let whole = path(scratch, "whole"), merged = path(scratch, "merged")
        let common = ["decompose", "--model", deit, "--shard-size", "1", data]
        XCTAssertEqual(try refract(common + ["--output", whole]).status, 0)
        let parts = (0..<3).map { path(scratch, "part-\($0)") }
        try runInParallel((0..<3).map { common + ["--part", "\($0)/3", "--output", parts[$0]] })
        XCTAssertEqual(try refract(["merge", "--output", merged] + parts).status, 0)
        try assertSameExports(whole, merged)
        // The CLIP targets: single, and in 3 parts merged.
        let e = path(scratch, "clip.npy"), em = path(scratch, "clip-merged.npy")
        // Batches of 1, so that the 4 images make parts of 1, 1 and 2 (parts are cut at batch boundaries).
        XCTAssertEqual(try refract(["embed-images", "--model", clip, "--batch-size", "1", "--output", e, data]).status, 0)
        let eparts = (0..<3).map { path(scratch, "clip.\($0).npy") }
        try runInParallel((0..<3).map { ["embed-images", "--model", clip, "--batch-size", "1", "--part", "\($0)/3", "--output", eparts[$0], data] })
        XCTAssertEqual(try NPY.read(URL(fileURLWithPath: eparts[0])).shape, [1, 24])
        // A part is not the targets; missing parts are named.
        var r = try refract(["align", "--run", merged, "--clip-embeddings", eparts[2], "--output", path(scratch, "al-part")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("part 2/3") && r.stderr.contains("refract merge"), r.stderr)
        r = try refract(["merge", "--output", em, eparts[0], eparts[2]])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("images 1..<2 are in no part"), r.stderr)
        r = try refract(["merge", "--output", em, eparts[2], eparts[0], eparts[1]])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: em)), try Data(contentsOf: URL(fileURLWithPath: e)))
        XCTAssertEqual(try String(contentsOfFile: path(scratch, "clip-merged.paths.txt"), encoding: .utf8),
                       try String(contentsOfFile: path(scratch, "clip.paths.txt"), encoding: .utf8))
        // CompAlign over the merged run and merged targets: the single run's maps, for the same seed.
        let a = path(scratch, "align-whole"), b = path(scratch, "align-merged")
        r = try refract(["align", "--run", whole, "--clip-embeddings", e, "--output", a] + Self.smallTraining)
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try refract(["align", "--run", merged, "--clip-embeddings", em, "--output", b] + Self.smallTraining)
        XCTAssertEqual(r.status, 0, r.stderr)
        struct Manifest: Decodable { var steps: Int }
        let ma = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: a).appendingPathComponent("manifest.json")))
        let mb = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: b).appendingPathComponent("manifest.json")))
        XCTAssertEqual(ma.steps, mb.steps)
        // The maps' tensors, byte for byte (the files' metadata name their runs, which differ).
        let fa = try SafetensorsFile(url: URL(fileURLWithPath: a).appendingPathComponent("maps.safetensors"))
        let fb = try SafetensorsFile(url: URL(fileURLWithPath: b).appendingPathComponent("maps.safetensors"))
        XCTAssertEqual(fa.keys.sorted(), ["bias", "weights"])
        for key in fa.keys { XCTAssertEqual(try fa.withRawBytes(key) { Data($0) }, try fb.withRawBytes(key) { Data($0) }, key) }
    }
}
