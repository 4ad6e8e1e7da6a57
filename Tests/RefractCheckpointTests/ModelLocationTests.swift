import Foundation
import XCTest
@testable import RefractCheckpoint

/// Writes small but valid checkpoint files for layout tests.
enum Fixture {
    static func weights(_ keys: [String] = ["w"]) throws -> [UInt8] {
        var w = SafetensorsWriter(metadata: ["format": "pt"])
        for k in keys { try w.add(k, float32: [1, 2, 3], shape: [3]) }
        return w.serialized()
    }

    static func transformers(in dir: URL) throws {
        try Data(#"{"model_type": "clip"}"#.utf8).write(to: dir.appendingPathComponent("config.json"))
        try Data(try weights()).write(to: dir.appendingPathComponent("model.safetensors"))
    }

    static func openCLIP(in dir: URL) throws {
        try Data(#"{"model_cfg": {}}"#.utf8).write(to: dir.appendingPathComponent("open_clip_config.json"))
        try Data(try weights(["visual.proj"])).write(to: dir.appendingPathComponent("open_clip_model.safetensors"))
    }
}

final class ModelLocationTests: XCTestCase {
    private let offlineEnv = ["HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": "/nonexistent-refract-cache", "HF_TOKEN_PATH": "/nonexistent"]

    func testTransformersDirectory() async throws {
        let dir = try makeTempDirectory(self)
        try Fixture.transformers(in: dir)
        let loc = try await ModelLocation.resolve(dir.path, options: .init(environment: offlineEnv))
        XCTAssertEqual(loc.layout, .transformers)
        XCTAssertEqual(loc.directory.standardizedFileURL.path, dir.standardizedFileURL.path)
        XCTAssertEqual(loc.configFile.lastPathComponent, "config.json")
        XCTAssertEqual(try loc.weightFiles().map(\.lastPathComponent), ["model.safetensors"])
        XCTAssertEqual(try loc.makeTensorLoader().keys, ["w"])
    }

    func testOpenCLIPPreferredWhenBothPresentUnlessAsked() async throws {
        let dir = try makeTempDirectory(self)
        try Fixture.transformers(in: dir)
        try Fixture.openCLIP(in: dir)
        let preferred = try await ModelLocation.resolve(dir.path, options: .init(environment: offlineEnv))
        XCTAssertEqual(preferred.layout, .openCLIP)
        XCTAssertEqual(try preferred.makeTensorLoader().keys, ["visual.proj"])
        let asked = try await ModelLocation.resolve(dir.path, options: .init(layout: .transformers, environment: offlineEnv))
        XCTAssertEqual(asked.layout, .transformers)
    }

    func testAskingForAbsentLayoutFails() throws {
        let dir = try makeTempDirectory(self)
        try Fixture.transformers(in: dir)
        assertCheckpointError(try ModelLocation.detectLayout(in: dir, preferring: .openCLIP), contains: [dir.path, "OpenCLIP"])
    }

    func testPickleOnlyDirectoriesAreRefusedWithConversionHint() throws {
        let dir = try makeTempDirectory(self)
        try Data("{}".utf8).write(to: dir.appendingPathComponent("config.json"))
        try Data([0x80, 0x02]).write(to: dir.appendingPathComponent("pytorch_model.bin"))
        assertCheckpointError(try ModelLocation.detectLayout(in: dir), contains: [dir.path, "pytorch_model.bin", "not supported",
                                                                                   "safetensors", "save_file"]) {
            $0 == .pickleWeights(directory: dir.path, file: "pytorch_model.bin")
        }
        let oc = try makeTempDirectory(self)
        try Data("{}".utf8).write(to: oc.appendingPathComponent("open_clip_config.json"))
        try Data([0x80]).write(to: oc.appendingPathComponent("open_clip_pytorch_model.bin"))
        assertCheckpointError(try ModelLocation.detectLayout(in: oc), contains: ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
    }

    func testEmptyDirectoryListsWhatIsExpected() throws {
        let dir = try makeTempDirectory(self)
        try Data("x".utf8).write(to: dir.appendingPathComponent("README.md"))
        assertCheckpointError(try ModelLocation.detectLayout(in: dir), contains: [dir.path, "config.json", "open_clip_config.json", "README.md"])
    }

    func testShardedDirectoryAndMissingShard() throws {
        let dir = try makeTempDirectory(self)
        try Data("{}".utf8).write(to: dir.appendingPathComponent("config.json"))
        try Data(try Fixture.weights(["a"])).write(to: dir.appendingPathComponent("model-00001-of-00002.safetensors"))
        try Data(#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#.utf8)
            .write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        assertCheckpointError(try ModelLocation.detectLayout(in: dir), contains: [dir.path, "model-00002-of-00002.safetensors", "missing"])
        try Data(try Fixture.weights(["b"])).write(to: dir.appendingPathComponent("model-00002-of-00002.safetensors"))
        XCTAssertEqual(try ModelLocation.detectLayout(in: dir), .transformers)
        let loc = ModelLocation(directory: dir, layout: .transformers, modelId: dir.path)
        XCTAssertEqual(try loc.weightFiles().map(\.lastPathComponent),
                       ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        XCTAssertEqual(try loc.makeTensorLoader().keys, ["a", "b"])
    }

    func testBadSpecs() async throws {
        let dir = try makeTempDirectory(self)
        let file = dir.appendingPathComponent("model.safetensors")
        try Data(try Fixture.weights()).write(to: file)
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve(file.path, options: .init(environment: self.offlineEnv)) },
                                         contains: ["is a file"])
        await assertCheckpointErrorAsync({ try await ModelLocation.resolve("./no/such/dir", options: .init(environment: self.offlineEnv)) },
                                         contains: ["no such directory"])
        for bad in ["a/b/c", "noslash", "org/na--me", "org/", "/x", "org/name@", "org/name@../x", "org/na me"] {
            await assertCheckpointErrorAsync({ try await ModelLocation.resolve(bad, options: .init(environment: self.offlineEnv)) },
                                             contains: []) {
                if case .invalidModelSpec = $0 { return true } else { return false }
            }
        }
    }

    func testHubRepoParsing() throws {
        let r = try HubRepo.parse("openai/clip-vit-base-patch32")
        XCTAssertEqual(r.id, "openai/clip-vit-base-patch32")
        XCTAssertEqual(r.revision, "main")
        XCTAssertEqual(r.cacheFolderName, "models--openai--clip-vit-base-patch32")
        let p = try HubRepo.parse("laion/CLIP-ViT-B-32-laion2B-s34B-b79K@refs/pr/3")
        XCTAssertEqual(p.revision, "refs/pr/3")
        XCTAssertFalse(p.revisionIsCommit)
        XCTAssertTrue(try HubRepo.parse("a/b@0123456789abcdef0123456789abcdef01234567").revisionIsCommit)
    }
}
