import Foundation
import XCTest
@testable import RefractCheckpoint

/// Downloads against `TestHubServer` on loopback. Every request has a short idle timeout and the
/// server stops itself, so a failure cannot hang the suite.
final class HubDownloaderTests: XCTestCase {
    private var server: TestHubServer!
    private var root: URL!

    override func setUp() async throws {
        server = try TestHubServer(lifetime: 120)
        root = try makeTempDirectory(self)
    }

    override func tearDown() async throws {
        server.stop()
    }

    private func env(_ extra: [String: String] = [:]) -> [String: String] {
        ["HF_HUB_CACHE": root.path, "HF_ENDPOINT": server.endpoint, "HF_TOKEN_PATH": "/nonexistent"]
            .merging(extra) { $1 }
    }

    private func options(layout: ModelLayout? = nil, retries: Int = 3, extra: [String: String] = [:],
                         progress: (@Sendable (DownloadProgress) -> Void)? = nil) -> ModelLocation.Options {
        .init(layout: layout, environment: env(extra), progress: progress, maxRetries: retries, retryDelay: 0.01, timeout: 10)
    }

    /// A safetensors file of roughly `megabytes` MB.
    private func bigWeights(_ megabytes: Int, key: String = "visual.proj") throws -> [UInt8] {
        var w = SafetensorsWriter(metadata: ["format": "pt"])
        let n = megabytes * 262_144 + 77  // not a round size
        try w.add(key, float32: [Float](unsafeUninitializedCapacity: n) { b, c in
            for i in 0..<n { b[i] = Float(i % 1000) * 0.5 }
            c = n
        }, shape: [n])
        return w.serialized()
    }

    private func addOpenCLIPRepo(_ repo: String, weights: [UInt8]) {
        server.add(repo, "open_clip_config.json", text: #"{"model_cfg": {"embed_dim": 512}}"#)
        server.add(repo, "open_clip_model.safetensors", weights)
    }

    private func addTransformersRepo(_ repo: String, weights: [UInt8]) {
        server.add(repo, "config.json", text: #"{"model_type": "clip"}"#)
        server.add(repo, "model.safetensors", weights)
        server.add(repo, "preprocessor_config.json", text: #"{"crop_size": 224}"#)
        server.add(repo, "vocab.json", text: #"{"a": 0}"#)
        server.add(repo, "merges.txt", text: "#version: 0.2\n")
    }

    private var repoDir: URL { root.appendingPathComponent("models--laion--tiny") }

    /// Checks the huggingface_hub layout for one downloaded file.
    private func assertCached(_ repo: String, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let served = try XCTUnwrap(server.file(repo, name), file: file, line: line)
        let dir = root.appendingPathComponent("models--" + repo.replacingOccurrences(of: "/", with: "--"))
        let pointer = dir.appendingPathComponent("snapshots/\(server.commit)/\(name)")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: pointer.path), "../../blobs/\(served.etag)",
                       file: file, line: line)
        XCTAssertEqual(Array(try Data(contentsOf: dir.appendingPathComponent("blobs/\(served.etag)"))), served.content,
                       file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("blobs/\(served.etag).incomplete").path),
                       file: file, line: line)
    }

    // MARK: Layouts

    func testOpenCLIPRepoWithAbsoluteCDNRedirectAndToken() async throws {
        let weights = try bigWeights(1)
        addOpenCLIPRepo("laion/tiny", weights: weights)
        addTransformersRepo("laion/tiny", weights: try bigWeights(1, key: "text_projection.weight"))
        server.setRedirect(.absolute)
        server.requireToken("hf_secret")

        let reports = ProgressLog()
        let loc = try await ModelLocation.resolve("laion/tiny",
            options: options(extra: ["HF_TOKEN": "hf_secret"], progress: { reports.add($0) }))
        XCTAssertEqual(loc.layout, .openCLIP)
        XCTAssertEqual(loc.commit, server.commit)
        XCTAssertEqual(loc.modelId, "laion/tiny")
        XCTAssertEqual(try loc.makeTensorLoader().keys, ["visual.proj"])

        // Exactly the huggingface_hub layout.
        XCTAssertEqual(try String(contentsOf: repoDir.appendingPathComponent("refs/main"), encoding: .utf8), server.commit)
        try assertCached("laion/tiny", "open_clip_config.json")
        try assertCached("laion/tiny", "open_clip_model.safetensors")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: repoDir.appendingPathComponent("snapshots/\(server.commit)").path).sorted(),
                       ["open_clip_config.json", "open_clip_model.safetensors"])
        XCTAssertEqual(server.file("laion/tiny", "open_clip_model.safetensors")?.etag, SHA256.hexDigest(weights))
        XCTAssertTrue(FileManager.default.fileExists(atPath: root.appendingPathComponent(
            ".locks/models--laion--tiny/\(SHA256.hexDigest(weights)).lock").path))

        // The token goes to the hub, never to the CDN host.
        let requests = server.requests
        XCTAssertTrue(requests.contains { $0.path.hasPrefix("/cdn/") })
        for r in requests {
            if r.path.hasPrefix("/cdn/") {
                XCTAssertNil(r.headers["authorization"], "token leaked to \(r.path)")
            } else {
                XCTAssertEqual(r.headers["authorization"], "Bearer hf_secret")
            }
        }
        XCTAssertEqual(reports.finished, ["open_clip_config.json", "open_clip_model.safetensors"])

        // Found again without any request, even with the server gone.
        server.clearLog()
        server.stop()
        let again = try await ModelLocation.resolve("laion/tiny", options: options())
        XCTAssertEqual(again, loc)
        let forced = try await ModelLocation.resolve("laion/tiny", options: options(extra: ["HF_HUB_OFFLINE": "1"]))
        XCTAssertEqual(forced, loc)
    }

    func testTransformersRepoWithOptionalFilesMissing() async throws {
        addTransformersRepo("laion/tiny", weights: try bigWeights(1))
        let loc = try await ModelLocation.resolve("laion/tiny", options: options())
        XCTAssertEqual(loc.layout, .transformers)
        for name in ["config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt"] {
            try assertCached("laion/tiny", name)
        }
        // Absent optional files are recorded the way huggingface_hub does.
        for name in ["open_clip_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
            let marker = repoDir.appendingPathComponent(".no_exist/\(server.commit)/\(name)")
            XCTAssertEqual(try Data(contentsOf: marker).count, 0, name)
        }
        // Small (non-LFS) files are named by their git ETag, not a SHA-256.
        XCTAssertEqual(server.file("laion/tiny", "config.json")?.etag.count, 40)
        // Every file of the model came from the pinned commit after the first answer.
        let revisions = server.requests.compactMap { $0.path.split(separator: "/").dropFirst(3).first.map(String.init) }
        XCTAssertEqual(revisions.first, "main")
        XCTAssertTrue(revisions.dropFirst().allSatisfy { $0 == server.commit }, "\(revisions)")
        // A second resolve needs no network (the .no_exist markers cover the optional files).
        server.clearLog()
        let again = try await ModelLocation.resolve("laion/tiny", options: options())
        XCTAssertEqual(again, loc)
        XCTAssertEqual(server.requests.count, 0)
    }

    func testTimmRepoIsDetectedFromItsConfig() async throws {
        let repo = "timm/vit_tiny_patch16_224.augreg_in21k"
        server.add(repo, "config.json", text: #"{"architecture": "vit_tiny_patch16_224", "num_classes": 0, "pretrained_cfg": {"input_size": [3, 224, 224]}}"#)
        server.add(repo, "model.safetensors", try bigWeights(1, key: "cls_token"))
        let loc = try await ModelLocation.resolve(repo, options: options())
        XCTAssertEqual(loc.layout, .timm)
        for name in ["config.json", "model.safetensors"] { try assertCached(repo, name) }
        // timm repositories have no tokenizer files: none is asked for.
        XCTAssertFalse(server.requests.contains { $0.path.hasSuffix("vocab.json") || $0.path.hasSuffix("preprocessor_config.json") })
        // Found in the cache the second time, without the network, and with the timm layout asked for.
        server.clearLog()
        let again = try await ModelLocation.resolve(repo, options: options(layout: .timm))
        XCTAssertEqual(again, loc)
        XCTAssertEqual(server.requests.count, 0)
    }

    func testExplicitLayoutRequest() async throws {
        addOpenCLIPRepo("laion/tiny", weights: try bigWeights(1))
        addTransformersRepo("laion/tiny", weights: try bigWeights(1, key: "t"))
        let loc = try await ModelLocation.resolve("laion/tiny", options: options(layout: .transformers))
        XCTAssertEqual(loc.layout, .transformers)
        XCTAssertFalse(server.requests.contains { $0.path.hasSuffix("open_clip_model.safetensors") })
    }

    func testRelativeRedirect() async throws {
        addOpenCLIPRepo("laion/tiny", weights: try bigWeights(1))
        server.setRedirect(.relative)
        let loc = try await ModelLocation.resolve("laion/tiny", options: options())
        XCTAssertEqual(loc.layout, .openCLIP)
        try assertCached("laion/tiny", "open_clip_model.safetensors")
    }

    func testShardedRepo() async throws {
        var a = SafetensorsWriter(); try a.add("a", float32: [1, 2], shape: [2])
        var b = SafetensorsWriter(); try b.add("b", float32: [3], shape: [1])
        server.add("org/sharded", "config.json", text: "{}")
        server.add("org/sharded", "model.safetensors.index.json",
                   text: #"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#)
        server.add("org/sharded", "model-00001-of-00002.safetensors", a.serialized())
        server.add("org/sharded", "model-00002-of-00002.safetensors", b.serialized())
        let loc = try await ModelLocation.resolve("org/sharded", options: options())
        let loader = try loc.makeTensorLoader()
        XCTAssertEqual(try loader.take("a", shape: [2]).data, [1, 2])
        XCTAssertEqual(try loader.take("b", shape: [1]).data, [3])
        try loader.finish()
    }

    func testPinnedCommitRevision() async throws {
        addOpenCLIPRepo("laion/tiny", weights: try bigWeights(1))
        let loc = try await ModelLocation.resolve("laion/tiny@\(server.commit)", options: options())
        XCTAssertEqual(loc.commit, server.commit)
        XCTAssertFalse(FileManager.default.fileExists(atPath: repoDir.appendingPathComponent("refs").path))
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("laion/tiny@nope", options: self.options()) },
                                         contains: ["laion/tiny", "404"])
    }

    // MARK: Resume

    func testDroppedConnectionIsResumedWithRange() async throws {
        let weights = try bigWeights(1)
        addOpenCLIPRepo("laion/tiny", weights: weights)
        server.setRedirect(.absolute)
        let cut = weights.count * 2 / 5
        server.dropConnection(for: "open_clip_model.safetensors", afterBytes: cut, times: 2)
        let loc = try await ModelLocation.resolve("laion/tiny", options: options(retries: 3))
        XCTAssertEqual(loc.layout, .openCLIP)
        try assertCached("laion/tiny", "open_clip_model.safetensors")
        let gets = server.requests.filter { $0.method == "GET" && $0.path.hasPrefix("/cdn/") }
        XCTAssertEqual(gets.count, 3)
        XCTAssertNil(gets[0].headers["range"])
        XCTAssertEqual(gets[1].headers["range"], "bytes=\(cut)-")
        XCTAssertEqual(gets[2].headers["range"], "bytes=\(cut)-")
    }

    func testPartialDownloadIsResumedOnTheNextRun() async throws {
        let weights = try bigWeights(1)
        addOpenCLIPRepo("laion/tiny", weights: weights)
        let cut = weights.count / 3
        server.dropConnection(for: "open_clip_model.safetensors", afterBytes: cut)
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("laion/tiny", options: self.options(retries: 0)) },
                                         contains: ["laion/tiny", "open_clip_model.safetensors", "resume"]) {
            if case .network = $0 { return true } else { return false }
        }
        let etag = SHA256.hexDigest(weights)
        let partial = repoDir.appendingPathComponent("blobs/\(etag).incomplete")
        XCTAssertEqual(fileSize(partial), Int64(cut))
        XCTAssertFalse(FileManager.default.fileExists(atPath: repoDir.appendingPathComponent("blobs/\(etag)").path))

        server.clearLog()
        let loc = try await ModelLocation.resolve("laion/tiny", options: options())
        XCTAssertEqual(loc.layout, .openCLIP)
        try assertCached("laion/tiny", "open_clip_model.safetensors")
        let gets = server.requests.filter { $0.method == "GET" }
        XCTAssertEqual(gets.map { $0.headers["range"] }, ["bytes=\(cut)-"])
    }

    func testServerIgnoringRangeRestartsCleanly() async throws {
        let weights = try bigWeights(1)
        addOpenCLIPRepo("laion/tiny", weights: weights)
        server.setIgnoreRange(true)
        server.dropConnection(for: "open_clip_model.safetensors", afterBytes: weights.count / 2)
        _ = try await ModelLocation.resolve("laion/tiny", options: options())
        try assertCached("laion/tiny", "open_clip_model.safetensors")
    }

    func testCorruptDownloadIsRejected() async throws {
        addOpenCLIPRepo("laion/tiny", weights: try bigWeights(1))
        server.corrupt("laion/tiny", "open_clip_model.safetensors")
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("laion/tiny", options: self.options()) },
                                         contains: ["laion/tiny", "open_clip_model.safetensors", "SHA-256"]) {
            if case .integrity = $0 { return true } else { return false }
        }
        let blobs = try FileManager.default.contentsOfDirectory(atPath: repoDir.appendingPathComponent("blobs").path)
        XCTAssertFalse(blobs.contains { $0.count == 64 }, "\(blobs)")
    }

    // MARK: Failures

    func testMissingRequiredFileNamesRepoAndFile() async throws {
        server.add("org/nocfg", "model.safetensors", try Fixture.weights())
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("org/nocfg", options: self.options()) },
                                         contains: ["org/nocfg", "config.json", "404"]) {
            if case .httpStatus(_, "config.json", 404, _) = $0 { return true } else { return false }
        }
    }

    func testUnknownRepository() async throws {
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("org/absent", options: self.options()) },
                                         contains: ["org/absent", "401", "HF_TOKEN"])
    }

    func testGatedRepositoryWithoutToken() async throws {
        addOpenCLIPRepo("laion/tiny", weights: try bigWeights(1))
        server.requireToken("hf_secret")
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("laion/tiny", options: self.options()) },
                                         contains: ["laion/tiny", "open_clip_config.json", "401", "HF_TOKEN"])
    }

    func testPickleOnlyRepository() async throws {
        server.add("org/pickle", "config.json", text: "{}")
        server.add("org/pickle", "pytorch_model.bin", [0x80, 0x02])
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("org/pickle", options: self.options()) },
                                         contains: ["org/pickle", "pytorch_model.bin", "not supported", "safetensors"]) {
            if case .pickleWeights = $0 { return true } else { return false }
        }
    }

    func testOfflineModeNeverTouchesTheNetwork() async throws {
        addOpenCLIPRepo("laion/tiny", weights: try bigWeights(1))
        await assertCheckpointErrorAsync({
            try await ModelLocation.resolve("laion/tiny", options: self.options(extra: ["HF_HUB_OFFLINE": "1"]))
        }, contains: ["HF_HUB_OFFLINE", "laion/tiny"]) {
            if case .offline = $0 { return true } else { return false }
        }
        var d = HubDownloader(environment: env(["HF_HUB_OFFLINE": "1"]))
        d.timeout = 5
        await assertCheckpointErrorAsync({ try await d.download("open_clip_config.json", repo: HubRepo(id: "laion/tiny")) },
                                         contains: ["HF_HUB_OFFLINE"])
        XCTAssertEqual(server.requests.count, 0)
    }

    func testConnectionRefusedIsReportedAfterRetries() async throws {
        let port = server.port
        server.stop()
        try await Task.sleep(nanoseconds: 300_000_000)
        let opts = ModelLocation.Options(environment: ["HF_HUB_CACHE": root.path, "HF_ENDPOINT": "http://127.0.0.1:\(port)",
                                                       "HF_TOKEN_PATH": "/nonexistent"],
                                         maxRetries: 1, retryDelay: 0.01, timeout: 5)
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("laion/tiny", options: opts) },
                                         contains: ["laion/tiny", "open_clip_config.json", "2 attempts"]) {
            if case .network = $0 { return true } else { return false }
        }
    }

    // MARK: Timeouts

    /// A server that accepts the connection and never answers: each attempt ends at the connect
    /// timeout, the retries give up and say so (URL, which timeout, how many tries), in about
    /// (retries + 1) x timeout.
    func testServerThatNeverAnswersTimesOutAndGivesUp() async throws {
        addOpenCLIPRepo("laion/tiny", weights: try bigWeights(1))
        server.setNeverAnswer(true)
        let opts = ModelLocation.Options(environment: env(), maxRetries: 2, retryDelay: 0.01, timeout: 0.4, connectTimeout: 0.4)
        let clock = ContinuousClock()
        let start = clock.now
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("laion/tiny", options: opts) },
                                         contains: ["laion/tiny", "open_clip_config.json", "HEAD \(server.endpoint)/laion/tiny/resolve/main/",
                                                    "no response within 0.4 s (connect timeout)", "gave up after 3 attempts"]) {
            if case .network = $0 { return true } else { return false }
        }
        let elapsed = clock.now - start
        XCTAssertLessThan(elapsed, .seconds(8), "the downloader waited \(elapsed)")
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(1200))
        XCTAssertEqual(server.requests.count, 3)
    }

    /// A body that stops part-way and stays silent: the read timeout fires, each retry resumes
    /// from the bytes kept, the last attempt gives up; once the server behaves, the next run
    /// finishes the file from where it stopped.
    func testBodyThatStallsTimesOutAndIsResumedLater() async throws {
        let weights = try bigWeights(1)
        addOpenCLIPRepo("laion/tiny", weights: weights)
        let cut = weights.count / 3
        server.stallBody(for: "open_clip_model.safetensors", afterBytes: cut)
        let opts = ModelLocation.Options(environment: env(), maxRetries: 1, retryDelay: 0.01, timeout: 0.4, connectTimeout: 2)
        let clock = ContinuousClock()
        let start = clock.now
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("laion/tiny", options: opts) },
                                         contains: ["open_clip_model.safetensors", "GET \(server.endpoint)/laion/tiny/resolve/",
                                                    "no data for 0.4 s after", "(read timeout)", "gave up after 2 attempts",
                                                    "run again to resume"]) {
            if case .network = $0 { return true } else { return false }
        }
        XCTAssertLessThan(clock.now - start, .seconds(8))
        let etag = try XCTUnwrap(server.file("laion/tiny", "open_clip_model.safetensors")).etag
        let partial = repoDir.appendingPathComponent("blobs/\(etag).incomplete")
        XCTAssertEqual(fileSize(partial), Int64(cut), "the bytes received before the stall are kept for the next run")

        server.stallBody(for: "open_clip_model.safetensors", afterBytes: nil)
        server.clearLog()
        _ = try await ModelLocation.resolve("laion/tiny", options: opts)
        try assertCached("laion/tiny", "open_clip_model.safetensors")
        let gets = server.requests.filter { $0.method == "GET" }
        XCTAssertEqual(gets.last?.headers["range"], "bytes=\(cut)-")
    }

    /// The limits come from `REFRACT_HTTP_*` when the options leave them open; malformed or
    /// out-of-range values are ignored rather than disabling a limit.
    func testTimeoutsAndRetriesFromTheEnvironment() async throws {
        let limits = HubDownloader.networkLimits(environment: ["REFRACT_HTTP_CONNECT_TIMEOUT": "0.3", "REFRACT_HTTP_READ_TIMEOUT": "7",
                                                               "REFRACT_HTTP_RETRIES": "1"])
        XCTAssertEqual(limits.connectTimeout, 0.3)
        XCTAssertEqual(limits.readTimeout, 7)
        XCTAssertEqual(limits.retries, 1)
        for bad in ["0", "-1", "nan", "inf", "1e9", "x", ""] {
            let l = HubDownloader.networkLimits(environment: ["REFRACT_HTTP_CONNECT_TIMEOUT": bad, "REFRACT_HTTP_READ_TIMEOUT": bad,
                                                             "REFRACT_HTTP_RETRIES": bad])
            XCTAssertNil(l.connectTimeout, bad)
            XCTAssertNil(l.readTimeout, bad)
            if bad != "0" { XCTAssertNil(l.retries, bad) } else { XCTAssertEqual(l.retries, 0) }  // no retries is allowed
        }
        let defaults = HubDownloader(environment: [:])
        XCTAssertEqual(defaults.connectTimeout, HubDownloader.defaultConnectTimeout)
        XCTAssertEqual(defaults.timeout, HubDownloader.defaultReadTimeout)
        XCTAssertEqual(defaults.maxRetries, HubDownloader.defaultMaxRetries)

        server.setNeverAnswer(true)
        let opts = ModelLocation.Options(environment: env(["REFRACT_HTTP_CONNECT_TIMEOUT": "0.3", "REFRACT_HTTP_RETRIES": "1"]),
                                         retryDelay: 0.01)
        let clock = ContinuousClock()
        let start = clock.now
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("laion/tiny", options: opts) },
                                         contains: ["no response within 0.3 s (connect timeout)", "gave up after 2 attempts"])
        XCTAssertLessThan(clock.now - start, .seconds(6))
    }

    func testSingleFileDownloadAPI() async throws {
        addTransformersRepo("laion/tiny", weights: try bigWeights(1))
        var d = HubDownloader(environment: env())
        d.timeout = 10
        let repo = try HubRepo(id: "laion/tiny")
        let meta = try await d.fileMetadata("model.safetensors", repo: repo)
        XCTAssertEqual(meta?.commit, server.commit)
        XCTAssertEqual(meta?.isLFS, true)
        XCTAssertEqual(meta?.size, Int64(server.file("laion/tiny", "model.safetensors")!.content.count))
        let missing = try await d.fileMetadata("nope.json", repo: repo)
        XCTAssertNil(missing)
        let url = try await d.download("vocab.json", repo: repo)
        XCTAssertEqual(try String(contentsOf: try XCTUnwrap(url), encoding: .utf8), #"{"a": 0}"#)
        let none = try await d.download("tokenizer.json", repo: repo, required: false)
        XCTAssertNil(none)
    }
}

/// Collects progress reports from the downloader's callback.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [DownloadProgress] = []
    func add(_ p: DownloadProgress) { lock.lock(); items.append(p); lock.unlock() }
    var finished: [String] { lock.lock(); defer { lock.unlock() }; return items.filter(\.isFinished).map(\.file) }
}
