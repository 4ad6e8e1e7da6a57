import Foundation
import RefractStore
import RefractTensor
import XCTest

/// Damaged runs, two writers on one output, and output-side failures, through the binary.
extension CLITests {
    /// Starts a process that takes `lockPath`'s flock the way another refract would (its pid
    /// recorded first) and holds it until killed. Returns it with a cleanup that kills it.
    func holdLock(_ lockPath: String) throws -> (Process, () -> Void) {
        guard let flock = ["/usr/bin/flock", "/bin/flock"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("flock(1) is not installed")
        }
        let ready = path(scratch, "ready-\(UUID().uuidString)"), child = path(scratch, "child-\(UUID().uuidString)")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "printf 'pid %s\\ncommand other-writer\\nstarted now\\n' $$ > '\(lockPath)'; "
            + "exec \(flock) -o '\(lockPath)' sh -c 'echo $$ > \"\(child)\"; touch \"\(ready)\"; exec sleep 60'"]
        try p.run()
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: ready) && Date() < deadline { usleep(10_000) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: ready), "the other process did not take the lock")
        let stop = {
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            if let text = try? String(contentsOfFile: child, encoding: .utf8),
               let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) { kill(pid, SIGKILL) }
            p.waitUntilExit()
        }
        return (p, stop)
    }

    func testDamagedShardIsRefusedByExport() throws {
        let data = try classFolders()
        let run = path(scratch, "run")
        var r = try refract(["decompose", "--model", tinyModel, "--output", run, "--shard-size", "2", data.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let shard = path(URL(fileURLWithPath: run), "shard-00001.safetensors")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: shard))
        bytes[bytes.count - 5] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: shard))
        let out = path(scratch, "export")
        r = try refract(["export", "--run", run, "--output", out])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains(shard) && r.stderr.contains("the run is damaged") && r.stderr.contains("SHA-256"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    func testSecondWriterIsRefusedNamingTheFirstProcess() throws {
        let data = try classFolders()
        let run = path(scratch, "run")
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: false)
        let (holder, stop) = try holdLock(path(URL(fileURLWithPath: run), RunLock.fileName))
        defer { stop() }
        var r = try refract(["decompose", "--model", tinyModel, "--output", run, data.path])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains(run) && r.stderr.contains("being written by another process")
                        && r.stderr.contains("pid \(holder.processIdentifier)"), r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: run), [RunLock.fileName], "nothing was written")
        stop()                                   // killed: the OS releases its lock
        r = try refract(["decompose", "--model", tinyModel, "--output", run, data.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertNoThrow(try StoreReader(run: URL(fileURLWithPath: run)).verifyChecksums())
    }

    /// Two `decompose` started together on one output: never both successful; the run that is left
    /// is complete, intact and one run's.
    func testTwoConcurrentDecomposeRunsNeverBothSucceed() throws {
        let data = try classFolders()
        for round in 0..<3 {
            let run = path(scratch, "race-\(round)")
            let args = ["decompose", "--model", tinyModel, "--output", run, "--shard-size", "1", "--batch-size", "1", data.path]
            // Both processes started before either is waited for.
            var started: [(Process, URL)] = []
            for k in 0..<2 {
                let p = Process()
                p.executableURL = Self.binary
                p.arguments = args
                var env = ProcessInfo.processInfo.environment
                env["HF_HUB_OFFLINE"] = "1"
                p.environment = env
                let err = scratch.appendingPathComponent("race-\(round)-\(k).stderr")
                _ = FileManager.default.createFile(atPath: err.path, contents: nil)
                p.standardError = try FileHandle(forWritingTo: err)
                p.standardOutput = FileHandle.nullDevice
                p.standardInput = FileHandle.nullDevice
                started.append((p, err))
            }
            for (p, _) in started { try p.run() }
            var runs: [Run] = []
            for (p, err) in started {
                let deadline = Date().addingTimeInterval(120)
                while p.isRunning && Date() < deadline { usleep(20_000) }
                if p.isRunning { p.terminate(); XCTFail("a racing decompose did not finish") }
                p.waitUntilExit()
                runs.append(Run(status: p.terminationStatus, stdout: "", stderr: String(decoding: try Data(contentsOf: err), as: UTF8.self)))
            }
            XCTAssertEqual(runs.count, 2)
            let ok = runs.filter { $0.status == 0 }
            XCTAssertEqual(ok.count, 1, runs.map(\.stderr).joined(separator: "\n---\n"))
            for failed in runs where failed.status != 0 {
                XCTAssertTrue(failed.stderr.contains("being written by another process (pid ")
                                || failed.stderr.contains("holds a run"), failed.stderr)
            }
            let reader = try StoreReader(run: URL(fileURLWithPath: run))
            XCTAssertTrue(reader.isComplete)
            XCTAssertNoThrow(try reader.verifyChecksums())
        }
    }

    func testOutputFailuresAreHumanMessages() throws {
        let plain = scratch.appendingPathComponent("plain")
        try Data("x".utf8).write(to: plain)
        let images = path(Self.models, "inputs")
        // A file where a folder belongs.
        var r = try refract(["embed-images", "--model", tinyModel, "--output", path(plain, "e.npy"), images])
        XCTAssertNotEqual(r.status, 0)
        // (E.npy or its side-car E.paths.txt, whichever the command writes first.)
        XCTAssertTrue(r.stderr.contains("cannot write \(path(plain, "e."))")
                        && r.stderr.contains(": creating the file: \(plain.path) is a file, not a folder"), r.stderr)
        // A folder where the file belongs.
        let folder = path(scratch, "folder.npy")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        r = try refract(["embed-images", "--model", tinyModel, "--output", folder, images])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("cannot write \(folder)") && r.stderr.contains("is a folder, not a file"), r.stderr)
        // The run store and the export.
        r = try refract(["decompose", "--model", tinyModel, "--output", path(plain, "run"), images])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("cannot write: creating the run directory: \(plain.path) is a file, not a folder"), r.stderr)
        let run = path(scratch, "run")
        XCTAssertEqual(try refract(["decompose", "--model", tinyModel, "--output", run, images]).status, 0)
        r = try refract(["export", "--run", run, "--output", path(plain, "export")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(plain.path) is a file, not a folder"), r.stderr)
        for text in [r.stderr] { XCTAssertFalse(text.contains("NSCocoaErrorDomain"), text) }
    }

    /// A write that fails half-way (the file-size limit stands in for a full disk: the same failed
    /// `write`, with EFBIG instead of ENOSPC): a message in words, and nothing that looks complete.
    func testAWriteThatFailsHalfWayLeavesNothingThatLooksComplete() throws {
        guard FileManager.default.isExecutableFile(atPath: "/bin/bash") else { throw XCTSkip("no /bin/bash") }
        func limited(_ kib: Int, _ args: [String]) throws -> Run {
            // bash counts `ulimit -f` in KiB; SIGXFSZ ignored, so write() fails with EFBIG instead.
            let wrapper = scratch.appendingPathComponent("limited.sh")
            try "#!/bin/bash\nulimit -f \(kib)\ntrap '' XFSZ\nexec \"$@\"\n".write(to: wrapper, atomically: true, encoding: .utf8)
            chmod(wrapper.path, 0o755)
            let p = Process()
            p.executableURL = wrapper
            p.arguments = [Self.binary.path] + args
            var env = ProcessInfo.processInfo.environment
            env["HF_HUB_OFFLINE"] = "1"
            p.environment = env
            // stderr through a pipe: the size limit applies to regular files, so a file would be cut.
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let text = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return Run(status: p.terminationStatus, stdout: "", stderr: String(decoding: text, as: UTF8.self))
        }
        let images = path(Self.models, "inputs")
        let out = scratch.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: false)
        var r = try limited(0, ["embed-images", "--model", tinyModel, "--output", path(out, "e.npy"), images])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("cannot write \(path(out, "e."))") && r.stderr.contains("File too large"), r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path), [], "no file, no temporary file")

        let run = path(scratch, "run")
        r = try limited(1, ["decompose", "--model", tinyModel, "--output", run, images])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("cannot write: writing the data: File too large"), r.stderr)
        let names = try FileManager.default.contentsOfDirectory(atPath: run)
        XCTAssertFalse(names.contains { $0.contains(".tmp-") }, "\(names)")
        if let reader = try? StoreReader(run: URL(fileURLWithPath: run), allowIncomplete: true) {
            XCTAssertFalse(reader.isComplete)
        }
        XCTAssertThrowsError(try StoreReader(run: URL(fileURLWithPath: run)))
    }

    /// `refract segment` appends to progress.jsonl in its --output: a second one is refused.
    func testSecondSegmentOnOneOutputIsRefused() throws {
        let data = try makeSegmentationFolder()
        let out = path(scratch, "seg")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        let (holder, stop) = try holdLock(path(URL(fileURLWithPath: out), RunLock.fileName))
        defer { stop() }
        let args = ["segment", "--model", tinyModel, "--dataset", data.path, "--output", out,
                    "--classes", path(Self.models, "inputs/classes.txt"), "--templates", path(Self.models, "inputs/templates.txt")]
        var r = try refract(args, environment: cacheEnvironment)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains(out) && r.stderr.contains("the segmentation output is being written by another process")
                        && r.stderr.contains("pid \(holder.processIdentifier)"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path(URL(fileURLWithPath: out), "progress.jsonl")))
        stop()
        r = try refract(args, environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
    }
}
