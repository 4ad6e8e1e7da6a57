import Foundation
import RefractTensor
import XCTest

/// Runs the built `refract` binary as a user would.
final class CLITests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let models = root.appendingPathComponent("Tests/Fixtures/models")
    static let images = root.appendingPathComponent("Tests/Fixtures/images")

    /// The executable sits beside the test bundle in the build products folder.
    static var binary: URL {
        // The bundle URL is the .xctest (macOS) or the folder holding it (Linux): look in it and above.
        var dir = Bundle(for: CLITests.self).bundleURL
        while dir.path != "/" {
            var isDir: ObjCBool = false
            let candidate = dir.appendingPathComponent("refract")
            if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDir), !isDir.boolValue,
               FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return root.appendingPathComponent(".build/debug/refract")
    }

    var scratch: URL!
    /// How the last `refract` run ended (exit or signal).
    var lastTerminationReason: Process.TerminationReason = .exit

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    struct Run { var status: Int32; var stdout: String; var stderr: String }

    /// Runs with a time limit (a hang fails the test instead of blocking CI).
    func refract(_ args: [String], timeout: TimeInterval = 120, environment extra: [String: String] = [:],
                 unsetting removed: Set<String> = []) throws -> Run {
        try finish(try start(Self.binary, args, environment: environment(extra, unsetting: removed),
                             label: "refract \(args.joined(separator: " "))"), timeout: timeout)
    }

    /// A process started by `start`, its output going to files.
    struct Started {
        var process: Process
        var stdout: URL
        var stderr: URL
        var label: String
    }

    /// Starts `executable args` without waiting for it; output goes to files (no pipe can fill up
    /// and block the child). `directory`: its working directory (default: the test's own).
    func start(_ executable: URL, _ args: [String], environment: [String: String], label: String,
               directory: URL? = nil) throws -> Started {
        let p = Process()
        p.executableURL = executable
        p.arguments = args
        p.environment = environment
        if let directory { p.currentDirectoryURL = directory }
        let tag = UUID().uuidString
        let out = scratch.appendingPathComponent("stdout-\(tag)"), err = scratch.appendingPathComponent("stderr-\(tag)")
        guard FileManager.default.createFile(atPath: out.path, contents: nil),
              FileManager.default.createFile(atPath: err.path, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: scratch.path])
        }
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return Started(process: p, stdout: out, stderr: err, label: label)
    }

    /// Waits for a started process with a time limit (a hang fails the test instead of blocking
    /// CI) and returns how it ended and what it printed.
    func finish(_ s: Started, timeout: TimeInterval = 120) throws -> Run {
        let deadline = Date().addingTimeInterval(timeout)
        while s.process.isRunning && Date() < deadline { usleep(20_000) }
        if s.process.isRunning {
            s.process.terminate()
            XCTFail("\(s.label) did not finish within \(timeout) s")
        }
        s.process.waitUntilExit()
        try (s.process.standardOutput as? FileHandle)?.close()
        try (s.process.standardError as? FileHandle)?.close()
        lastTerminationReason = s.process.terminationReason
        return Run(status: s.process.terminationStatus,
                   stdout: String(decoding: try Data(contentsOf: s.stdout), as: UTF8.self),
                   stderr: String(decoding: try Data(contentsOf: s.stderr), as: UTF8.self))
    }

    /// The environment `refract` runs in: offline, with caches in the scratch folder (never the
    /// user's own), plus `extra`, minus `removed`.
    func environment(_ extra: [String: String] = [:], unsetting removed: Set<String> = []) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["HF_HUB_OFFLINE"] = "1"
        env["HF_HUB_CACHE"] = scratch.appendingPathComponent("hf-cache").path
        env["REFRACT_CACHE_DIR"] = scratch.appendingPathComponent("refract-cache").path
        env.merge(extra) { $1 }
        for name in removed { env[name] = nil }
        return env
    }

    func path(_ base: URL, _ rel: String) -> String { base.appendingPathComponent(rel).path }

    // MARK: Happy paths

    func testHelpListsCommands() throws {
        let r = try refract(["--help"])
        XCTAssertEqual(r.status, 0)
        for cmd in ["embed-images", "embed-texts", "tokenize", "classify", "env"] { XCTAssertTrue(r.stdout.contains(cmd), cmd) }
        let sub = try refract(["embed-images", "--help"])
        XCTAssertEqual(sub.status, 0)
        XCTAssertTrue(sub.stdout.contains("--no-normalize"))
    }

    func testEnvShowsBLAS() throws {
        let r = try refract(["env", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertNotNil(json["blasCore"] as? String)
        XCTAssertGreaterThanOrEqual(json["blasThreads"] as? Int ?? 0, 1)
        XCTAssertNotNil((json["cpu"] as? [String: Any])?["modelName"] as? String)
        XCTAssertNotNil((json["blasCoreChoice"] as? [String: Any])?["source"] as? String)
    }

    /// Who chose the kernel set, as `refract env` says it: the user's OPENBLAS_CORETYPE wins,
    /// REFRACT_KEEP_BLAS_CORETYPE=1 keeps OpenBLAS's own, otherwise the CPU's flags decide.
    func testEnvSaysWhoChoseTheKernelSet() throws {
        let keys: Set<String> = ["OPENBLAS_CORETYPE", "REFRACT_KEEP_BLAS_CORETYPE"]
        let user = try refract(["env"], environment: ["OPENBLAS_CORETYPE": "Prescott"], unsetting: ["REFRACT_KEEP_BLAS_CORETYPE"])
        XCTAssertEqual(user.status, 0, user.stderr)
        XCTAssertTrue(user.stdout.contains("set by the user: OPENBLAS_CORETYPE=Prescott"), user.stdout)
        XCTAssertTrue(user.stdout.contains("CPU:"), user.stdout)
        let keep = try refract(["env"], environment: ["REFRACT_KEEP_BLAS_CORETYPE": "1"], unsetting: ["OPENBLAS_CORETYPE"])
        XCTAssertEqual(keep.status, 0, keep.stderr)
        XCTAssertTrue(keep.stdout.contains("own choice: REFRACT_KEEP_BLAS_CORETYPE=1"), keep.stdout)
        let rule = try refract(["env", "--json"], unsetting: keys)
        XCTAssertEqual(rule.status, 0, rule.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(rule.stdout.utf8)) as! [String: Any]
        let choice = try XCTUnwrap(json["blasCoreChoice"] as? [String: Any])
        let flags = Set((json["cpu"] as? [String: Any])?["flags"] as? [String] ?? [])
        let expected = OpenBLASCoreRule.table.first { $0.needs.allSatisfy(flags.contains) }?.core
        XCTAssertEqual(choice["core"] as? String, expected)
        XCTAssertEqual(choice["source"] as? String, expected == nil ? "openblas" : "refract")
        #if os(Linux)
        if let expected, (json["blasLibrary"] as? String)?.contains("openblas") == true {
            XCTAssertEqual(json["blasCore"] as? String, expected, "OpenBLAS runs the kernel set Refract named")
        }
        #endif
    }

    func testEmbedImagesWritesNormalisedRowsAndPaths() throws {
        let out = scratch.appendingPathComponent("e.npy")
        let r = try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--output", out.path,
                             path(Self.models, "inputs")])
        XCTAssertEqual(r.status, 0, r.stderr)
        let e = try NPY.read(out).tensor
        XCTAssertEqual(e.shape, [4, 24])
        for i in 0..<4 { XCTAssertEqual(e.row(i).reduce(0) { $0 + $1 * $1 }, 1, accuracy: 1e-5) }
        let paths = try String(contentsOf: scratch.appendingPathComponent("e.paths.txt"), encoding: .utf8)
            .split(separator: "\n").map { URL(fileURLWithPath: String($0)).lastPathComponent }
        XCTAssertEqual(paths, ["img0_40x32.png", "img1_32x48.png", "img2_64x64.png", "img3_33x31.png"])
        // --no-normalize gives the raw features of the reference.
        let raw = scratch.appendingPathComponent("raw.npy")
        XCTAssertEqual(try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--no-normalize",
                                    "--output", raw.path, path(Self.models, "inputs")]).status, 0)
        let ref = try NPY.read(Self.models.appendingPathComponent("expected/openclip-tiny/image_embeds.npy")).tensor
        let got = try NPY.read(raw).tensor
        for i in 0..<ref.count { XCTAssertEqual(got.data[i], ref.data[i], accuracy: 1e-6 + 1e-5 * abs(ref.data[i])) }
    }

    func testTokenizeAndEmbedTexts() throws {
        let ids = scratch.appendingPathComponent("ids.npy")
        let texts = path(Self.models, "inputs/texts.txt")
        XCTAssertEqual(try refract(["tokenize", "--model", path(Self.models, "hf-tiny"), "--texts", texts, "--output", ids.path]).status, 0)
        XCTAssertEqual(try NPY.read(ids), try NPY.read(Self.models.appendingPathComponent("expected/hf-tiny/token_ids.npy")))
        let emb = scratch.appendingPathComponent("t.npy")
        let r = try refract(["embed-texts", "--model", path(Self.models, "hf-tiny"), "--texts", texts, "--output", emb.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try NPY.read(emb).shape, [12, 24])
    }

    func testClassifyJSON() throws {
        let r = try refract(["classify", "--model", path(Self.models, "openclip-tiny"),
                             "--classes", path(Self.models, "inputs/classes.txt"),
                             "--templates", path(Self.models, "inputs/templates.txt"),
                             "--top-k", "3", "--json", path(Self.models, "inputs/img2_64x64.png")])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let results = json["results"] as! [[String: Any]]
        XCTAssertEqual(results.count, 1)
        XCTAssertEqual((results[0]["predictions"] as! [Any]).count, 3)
    }

    // MARK: Bad input: clear message, non-zero exit, nothing written

    func assertFailure(_ r: Run, mentions parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(r.status, 0, "expected failure", file: file, line: line)
        XCTAssertFalse(r.stderr.contains("Fatal error"), "crashed: \(r.stderr)", file: file, line: line)
        for p in parts { XCTAssertTrue(r.stderr.contains(p), "stderr should mention '\(p)': \(r.stderr)", file: file, line: line) }
    }

    func testUnreadableImageStopsWithItsPathAndWritesNothing() throws {
        let folder = scratch.appendingPathComponent("imgs")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.models.appendingPathComponent("inputs/img0_40x32.png"),
                                         to: folder.appendingPathComponent("a.png"))
        try Data().write(to: folder.appendingPathComponent("b.jpg"))
        try FileManager.default.copyItem(at: Self.images.appendingPathComponent("bad_truncated.png"),
                                         to: folder.appendingPathComponent("c.png"))
        let out = scratch.appendingPathComponent("e.npy")
        let r = try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--output", out.path, folder.path])
        assertFailure(r, mentions: ["b.jpg"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.appendingPathComponent("e.paths.txt").path))
    }

    func testNonImageAndHugeImage() throws {
        for bad in ["bad_text.jpg", "bad_huge.png"] {
            let r = try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--output",
                                 scratch.appendingPathComponent("x.npy").path, path(Self.images, bad)])
            assertFailure(r, mentions: [bad])
        }
    }

    func testEmptyTextFile() throws {
        let empty = scratch.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        let r = try refract(["embed-texts", "--model", path(Self.models, "hf-tiny"), "--texts", empty.path,
                             "--output", scratch.appendingPathComponent("t.npy").path])
        assertFailure(r, mentions: ["empty.txt", "empty"])
    }

    func testMissingModelAndOfflineHubId() throws {
        let r = try refract(["embed-texts", "--model", scratch.appendingPathComponent("no-such-model").path,
                             "--texts", path(Self.models, "inputs/texts.txt"), "--output", scratch.appendingPathComponent("t.npy").path])
        assertFailure(r, mentions: ["no-such-model"])
        let hub = try refract(["embed-texts", "--model", "openai/clip-vit-base-patch16",
                               "--texts", path(Self.models, "inputs/texts.txt"), "--output", scratch.appendingPathComponent("t.npy").path])
        assertFailure(hub, mentions: ["openai/clip-vit-base-patch16"])
    }

    func testBadArguments() throws {
        assertFailure(try refract(["classify", "--model", path(Self.models, "openclip-tiny"), "--classes",
                                   path(Self.models, "inputs/classes.txt"), "--top-k", "0", path(Self.models, "inputs")]),
                      mentions: ["top-k"])
        assertFailure(try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--output",
                                   scratch.appendingPathComponent("x.npy").path, scratch.appendingPathComponent("missing.png").path]),
                      mentions: ["missing.png"])
    }
}
