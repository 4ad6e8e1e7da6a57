import Foundation
import XCTest
import RefractTensor
@testable import RefractStore

/// One writer per run: a second writer, in this process or another, is refused naming the first.
final class LockTests: XCTestCase {
    func testSecondWriterInTheSameProcessIsRefusedAndTheFirstCompletes() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 10, shardSize: 4, dtype: .float16)
        let first = try fx.write(to: run, shards: 0..<1)
        // A second writer through its own open file description: resume, or a new run.
        assertStoreError(try fx.write(to: run, resume: true), kind: .locked,
                         contains: [run.path, "the run is being written by another process", "pid \(getpid())"])
        assertStoreError(try fx.write(to: run), kind: .exists, contains: [run.path, "holds a run"])
        // The first writer goes on undisturbed and its run is exactly the uninterrupted one.
        for s in 1..<first.shardRanges.count {
            let a = fx.shardArguments(first.shardRanges[s], header: fx.header)
            try first.writeShard(s, imageIndices: a.indices, rows: a.rows, skipped: a.skipped)
        }
        try first.finish()
        let reader = try StoreReader(run: run)
        XCTAssertEqual(try reader.tensor("attn"), fx.expected("attn", Array(0..<10)))
        XCTAssertNoThrow(try reader.verifyChecksums())
        // Once released, the next writer gets past the lock (and is told the run is complete).
        first.close()
        assertStoreError(try fx.write(to: run, resume: true), kind: .alreadyComplete, contains: ["already complete"])
    }

    /// A writer that has created the directory and taken the lock but written nothing yet (the
    /// moment a racing second writer arrives): the second is refused, not let into the same run.
    func testNewRunIntoALockedEmptyDirectoryIsRefused() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: false)
        let held = try RunLock.acquire(run, what: "the run")
        let fx = Fixture(n: 5, shardSize: 4)
        assertStoreError(try fx.write(to: run), kind: .locked, contains: [run.path, "pid \(getpid())"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: run.path), [RunLock.fileName])
        held.release()
        // The lock file left behind does not make the directory "not empty".
        try fx.write(to: run)
        XCTAssertTrue(try StoreReader(run: run).isComplete)
    }

    /// A real second process holds the lock: refused naming its pid; once it is killed, the OS
    /// releases the lock and writing goes ahead.
    func testLockHeldByAnotherProcessIsReleasedWhenItIsKilled() throws {
        let dir = try makeTempDirectory(self)
        let run = dir.appendingPathComponent("run")
        let fx = Fixture(n: 6, shardSize: 4)
        try fx.write(to: run, shards: 0..<1)
        let lockPath = run.appendingPathComponent(RunLock.fileName).path
        let ready = dir.appendingPathComponent("ready").path, childPid = dir.appendingPathComponent("child").path
        guard let flock = ["/usr/bin/flock", "/bin/flock"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("flock(1) is not installed")
        }
        // sh records its pid the way RunLock does, then becomes flock(1), which holds the lock
        // (not passing it to its child: -o) while its child sleeps.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "printf 'pid %s\\ncommand other-writer\\nstarted now\\n' $$ > '\(lockPath)'; "
            + "exec \(flock) -o '\(lockPath)' sh -c 'echo $$ > \"\(childPid)\"; touch \"\(ready)\"; exec sleep 60'"]
        try p.run()
        defer {
            if p.isRunning { p.terminate() }
            if let text = try? String(contentsOfFile: childPid, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                kill(pid, SIGKILL)
            }
        }
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: ready) && Date() < deadline { usleep(10_000) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: ready), "the other process did not take the lock")

        assertStoreError(try fx.write(to: run, resume: true), kind: .locked,
                         contains: [run.path, "pid \(p.processIdentifier)", "other-writer"])
        // kill -9 the holder (and the sleeping child it waits for).
        kill(p.processIdentifier, SIGKILL)
        if let text = try? String(contentsOfFile: childPid, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            kill(pid, SIGKILL)
        }
        p.waitUntilExit()
        let w = try fx.write(to: run, resume: true)
        XCTAssertTrue(w.isComplete)
        XCTAssertEqual(try StoreReader(run: run).tensor("mlp"), fx.expected("mlp", Array(0..<6)))
    }
}
