import Foundation
import XCTest
@testable import RefractCheckpoint

final class HubCacheTests: XCTestCase {
    let commit = "aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd"

    func testDefaultRootPrecedence() {
        XCTAssertEqual(HubCache.defaultRoot(environment: ["HF_HUB_CACHE": "/c", "HF_HOME": "/h", "HOME": "/u"]).path, "/c")
        XCTAssertEqual(HubCache.defaultRoot(environment: ["HF_HOME": "/h", "HOME": "/u"]).path, "/h/hub")
        XCTAssertEqual(HubCache.defaultRoot(environment: ["HF_HOME": "~/hf", "HOME": "/u"]).path, "/u/hf/hub")
        XCTAssertEqual(HubCache.defaultRoot(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/u"]).path, "/x/huggingface/hub")
        XCTAssertEqual(HubCache.defaultRoot(environment: ["HOME": "/u"]).path, "/u/.cache/huggingface/hub")
        XCTAssertEqual(HubCache.defaultRoot(environment: ["HF_HUB_CACHE": "", "HOME": "/u"]).path, "/u/.cache/huggingface/hub")
    }

    func testEnvironmentFlags() {
        XCTAssertTrue(HubDownloader.isOffline(environment: ["HF_HUB_OFFLINE": "1"]))
        XCTAssertTrue(HubDownloader.isOffline(environment: ["HF_HUB_OFFLINE": "true"]))
        XCTAssertFalse(HubDownloader.isOffline(environment: ["HF_HUB_OFFLINE": "0"]))
        XCTAssertFalse(HubDownloader.isOffline(environment: [:]))
        XCTAssertEqual(HubDownloader.token(environment: ["HF_TOKEN": " hf_abc \n", "HF_TOKEN_PATH": "/nonexistent"]), "hf_abc")
        XCTAssertNil(HubDownloader.token(environment: ["HF_TOKEN_PATH": "/nonexistent"]))
        let d = HubDownloader(environment: ["HF_ENDPOINT": "http://127.0.0.1:9/", "HF_HUB_CACHE": "/c", "HF_TOKEN_PATH": "/nonexistent"])
        XCTAssertEqual(d.resolveURL("org/name", revision: "refs/pr/1", filename: "sub dir/a.json").absoluteString,
                       "http://127.0.0.1:9/org/name/resolve/refs%2Fpr%2F1/sub%20dir/a.json")
    }

    func testETagNormalisation() {
        XCTAssertEqual(normalizeETag("\"abc\""), "abc")
        XCTAssertEqual(normalizeETag("W/\"abc\""), "abc")
        XCTAssertEqual(normalizeETag("abc"), "abc")
        XCTAssertNil(normalizeETag("\"\""))
        XCTAssertNil(normalizeETag("\"../x\""))
        XCTAssertEqual(contentRangeStart("bytes 100-199/200"), 100)
    }

    /// Builds the layout huggingface_hub writes: blobs, relative snapshot symlinks, refs.
    private func populate(_ root: URL, repo: String, revision: String? = "main", files: [String: [UInt8]]) throws {
        let cache = HubCache(root: root)
        if let revision { try cache.writeRef(repo, revision: revision, commit: commit) }
        for (name, bytes) in files {
            let etag = SHA256.hexDigest(bytes)
            let blob = cache.blobFile(repo, etag: etag)
            try FileManager.default.createDirectory(at: blob.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(bytes).write(to: blob)
            try cache.linkSnapshot(repo, commit: commit, filename: name, etag: etag)
        }
    }

    private func env(_ root: URL, offline: Bool = true) -> [String: String] {
        var e = ["HF_HUB_CACHE": root.path, "HF_TOKEN_PATH": "/nonexistent", "HF_ENDPOINT": "http://127.0.0.1:9"]
        if offline { e["HF_HUB_OFFLINE"] = "1" }
        return e
    }

    func testResolvesCachedModelWithoutNetwork() async throws {
        let root = try makeTempDirectory(self)
        try populate(root, repo: "openai/clip-test", files: [
            "config.json": Array("{}".utf8), "model.safetensors": try Fixture.weights(), "vocab.json": Array("{}".utf8),
        ])
        let cache = HubCache(root: root)
        // The on-disk form is exactly huggingface_hub's.
        let repoDir = root.appendingPathComponent("models--openai--clip-test")
        XCTAssertEqual(try String(contentsOf: repoDir.appendingPathComponent("refs/main"), encoding: .utf8), commit)
        let link = try FileManager.default.destinationOfSymbolicLink(atPath: repoDir.appendingPathComponent("snapshots/\(commit)/config.json").path)
        XCTAssertEqual(link, "../../blobs/" + SHA256.hexDigest(Array("{}".utf8)))

        // Offline, and also online with an unreachable endpoint: the cache is enough.
        for offline in [true, false] {
            let loc = try await ModelLocation.resolve("openai/clip-test", options: .init(environment: env(root, offline: offline), timeout: 2))
            XCTAssertEqual(loc.layout, .transformers)
            XCTAssertEqual(loc.commit, commit)
            XCTAssertEqual(loc.modelId, "openai/clip-test")
            XCTAssertEqual(loc.directory, cache.snapshotFolder("openai/clip-test", commit: commit))
            XCTAssertEqual(try loc.makeTensorLoader().keys, ["w"])
            XCTAssertNotNil(loc.file("vocab.json"))
            XCTAssertNil(loc.file("merges.txt"))
        }
        XCTAssertNotNil(cache.cachedFile("config.json", repo: try HubRepo(id: "openai/clip-test")))
    }

    func testRevisionByCommitAndTag() async throws {
        let root = try makeTempDirectory(self)
        try populate(root, repo: "org/m", revision: "v1.0", files: [
            "open_clip_config.json": Array("{}".utf8), "open_clip_model.safetensors": try Fixture.weights(),
        ])
        let byTag = try await ModelLocation.resolve("org/m@v1.0", options: .init(environment: env(root)))
        XCTAssertEqual(byTag.layout, .openCLIP)
        let byCommit = try await ModelLocation.resolve("org/m@\(commit)", options: .init(environment: env(root)))
        XCTAssertEqual(byCommit.directory, byTag.directory)
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("org/m", options: .init(environment: self.env(root))) },
                                         contains: ["HF_HUB_OFFLINE", "org/m@main", "never downloaded"])
    }

    func testNestedFilenamesLinkWithTheRightDepth() throws {
        let root = try makeTempDirectory(self)
        try populate(root, repo: "org/m", files: ["sub/dir/x.json": Array("1".utf8)])
        let pointer = HubCache(root: root).snapshotFolder("org/m", commit: commit).appendingPathComponent("sub/dir/x.json")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: pointer.path),
                       "../../../../blobs/" + SHA256.hexDigest(Array("1".utf8)))
        XCTAssertEqual(try String(contentsOf: pointer, encoding: .utf8), "1")
    }

    func testIncompleteSnapshotOfflineNamesMissingFiles() async throws {
        let root = try makeTempDirectory(self)
        try populate(root, repo: "org/m", files: ["config.json": Array("{}".utf8), "model.safetensors": try Fixture.weights()])
        // Break the weights link: a dangling symlink is not a cached file.
        let cache = HubCache(root: root)
        try FileManager.default.removeItem(at: cache.blobFile("org/m", etag: SHA256.hexDigest(try Fixture.weights())))
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("org/m", options: .init(environment: self.env(root))) },
                                         contains: ["HF_HUB_OFFLINE", "org/m", "model.safetensors"]) {
            if case .offline = $0 { return true } else { return false }
        }
    }

    /// A cached LFS blob is named by its SHA-256: a blob damaged after download is refused on use,
    /// through the snapshot's link, naming the file; a file outside `blobs/` is hashed as it is.
    func testBlobsAreCheckedAgainstTheirNameOnUse() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("hub-verify-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let content = Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let sha = SHA256.hexDigest([UInt8](content))
        let repo = root.appendingPathComponent("models--org--name")
        let blobs = repo.appendingPathComponent("blobs"), snap = repo.appendingPathComponent("snapshots/\(commit)")
        try FileManager.default.createDirectory(at: blobs, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: snap, withIntermediateDirectories: true)
        let blob = blobs.appendingPathComponent(sha)
        try content.write(to: blob)
        let link = snap.appendingPathComponent("model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: "../../blobs/\(sha)")
        XCTAssertEqual(try HubCache.checkedDigest(ofFileAt: link), sha)
        var damaged = content
        damaged[100] ^= 1
        try damaged.write(to: blob)
        XCTAssertThrowsError(try HubCache.checkedDigest(ofFileAt: link)) { e in
            XCTAssertTrue("\(e)".contains(blob.path) && "\(e)".contains("is damaged") && "\(e)".contains(sha), "\(e)")
        }
        // Not a blob: any content is fine.
        let plain = root.appendingPathComponent("model.safetensors")
        try damaged.write(to: plain)
        XCTAssertEqual(try HubCache.checkedDigest(ofFileAt: plain), SHA256.hexDigest([UInt8](damaged)))
    }
}
