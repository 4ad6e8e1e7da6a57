import Foundation
import RefractTensor

// MARK: - Model directories
//
// A model spec is a local directory or a hub id `org/name[@revision]`. The layout is detected
// from the files present:
//
//   transformers CLIPModel: config.json + model.safetensors (or model.safetensors.index.json and
//                           its shards), with preprocessor_config.json and tokenizer files
//   OpenCLIP:               open_clip_config.json + open_clip_model.safetensors
//
// LAION repositories ship both; OpenCLIP is preferred unless the caller asks for a layout
// (the OpenCLIP files are the originals the transformers ones were converted from).
// Pickle weights (pytorch_model.bin, open_clip_pytorch_model.bin) are refused with a message
// saying how to convert them.

/// How a checkpoint directory is organised.
public enum ModelLayout: String, Sendable, CaseIterable {
    /// Hugging Face transformers `CLIPModel`.
    case transformers
    /// OpenCLIP (`open_clip_config.json`, `open_clip_model.safetensors`).
    case openCLIP
    /// timm on the Hugging Face hub (`config.json` naming an `architecture`, `model.safetensors`
    /// with timm's state_dict names).
    case timm

    /// The weights file of a single-file checkpoint of this layout.
    public var weightsFile: String { self == .openCLIP ? "open_clip_model.safetensors" : "model.safetensors" }
    /// The model configuration file of this layout.
    public var configFile: String { self == .openCLIP ? "open_clip_config.json" : "config.json" }
}

/// A resolved model: a local directory with a known layout.
public struct ModelLocation: Sendable, Equatable {
    /// The directory holding the files (a cache snapshot for hub models).
    public var directory: URL
    public var layout: ModelLayout
    /// The hub id (`org/name`) or, for a local directory, its path.
    public var modelId: String
    /// The snapshot commit, for hub models.
    public var commit: String?

    public init(directory: URL, layout: ModelLayout, modelId: String, commit: String? = nil) {
        self.directory = directory
        self.layout = layout
        self.modelId = modelId
        self.commit = commit
    }

    /// Files transformers checkpoints may carry besides config and weights (fetched when present).
    public static let transformersOptionalFiles = [
        "preprocessor_config.json", "tokenizer.json", "vocab.json", "merges.txt",
        "tokenizer_config.json", "special_tokens_map.json",
    ]

    /// Name of the sharded-checkpoint index of transformers checkpoints.
    public static let shardIndexFile = "model.safetensors.index.json"

    /// `directory/name` if that file exists.
    public func file(_ name: String) -> URL? {
        let url = directory.appendingPathComponent(name)
        return FileManager.default.fileExists(atPath: url.path) ? url : nil
    }

    /// The layout's model configuration file.
    public var configFile: URL { directory.appendingPathComponent(layout.configFile) }

    /// The safetensors files holding the weights (one file, or the shards of the index).
    public func weightFiles() throws -> [URL] {
        if layout != .openCLIP, file(layout.weightsFile) == nil, let index = file(Self.shardIndexFile) {
            return try TensorLoader.shardFiles(indexFile: index).map(\.url)
        }
        return [directory.appendingPathComponent(layout.weightsFile)]
    }

    /// A strict loader over the weights (single file, or shards checked against the index).
    public func makeTensorLoader() throws -> TensorLoader {
        if layout != .openCLIP, file(layout.weightsFile) == nil, let index = file(Self.shardIndexFile) {
            return try TensorLoader(indexFile: index)
        }
        return try TensorLoader(files: [directory.appendingPathComponent(layout.weightsFile)])
    }

    // MARK: Resolution

    /// How `resolve` finds and fetches models.
    public struct Options: Sendable {
        /// Force a layout instead of preferring OpenCLIP when both are present.
        public var layout: ModelLayout?
        /// Environment for `HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`.
        public var environment: [String: String]
        /// Overrides the cache root from the environment.
        public var cacheDirectory: URL?
        /// Overrides `HF_HUB_OFFLINE`.
        public var offline: Bool?
        /// Download progress (see `TerminalProgress.stderrReporter()`).
        public var progress: (@Sendable (DownloadProgress) -> Void)?
        /// Retries after a failed request (nil: `$REFRACT_HTTP_RETRIES`, else 5).
        public var maxRetries: Int?
        public var retryDelay: TimeInterval
        /// Read timeout in seconds (nil: `$REFRACT_HTTP_READ_TIMEOUT`, else 60).
        public var timeout: TimeInterval?
        /// Connect timeout in seconds (nil: `$REFRACT_HTTP_CONNECT_TIMEOUT`, else 30).
        public var connectTimeout: TimeInterval?
        public var verifyChecksums: Bool

        public init(layout: ModelLayout? = nil,
                    environment: [String: String] = ProcessInfo.processInfo.environment,
                    cacheDirectory: URL? = nil, offline: Bool? = nil,
                    progress: (@Sendable (DownloadProgress) -> Void)? = nil,
                    maxRetries: Int? = nil, retryDelay: TimeInterval = 1, timeout: TimeInterval? = nil,
                    connectTimeout: TimeInterval? = nil, verifyChecksums: Bool = true) {
            self.layout = layout
            self.environment = environment
            self.cacheDirectory = cacheDirectory
            self.offline = offline
            self.progress = progress
            self.maxRetries = maxRetries
            self.retryDelay = retryDelay
            self.timeout = timeout
            self.connectTimeout = connectTimeout
            self.verifyChecksums = verifyChecksums
        }

        /// The downloader these options describe.
        public var downloader: HubDownloader {
            var d = HubDownloader(environment: environment)
            if let cacheDirectory { d.cache = HubCache(root: cacheDirectory) }
            if let offline { d.offline = offline }
            d.progress = progress
            if let maxRetries { d.maxRetries = maxRetries }
            d.retryDelay = retryDelay
            if let timeout { d.timeout = timeout }
            if let connectTimeout { d.connectTimeout = connectTimeout }
            d.verifyChecksums = verifyChecksums
            return d
        }
    }

    /// Resolves a local directory or a hub id `org/name[@revision]`. Hub models already complete
    /// in the cache are returned without network access; missing files are downloaded unless
    /// offline.
    public static func resolve(_ spec: String, options: Options = Options()) async throws -> ModelLocation {
        let path = expandTilde(spec, options.environment)
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            guard isDir.boolValue else {
                throw CheckpointError.invalidModelSpec(spec: spec, reason: "it is a file; pass the directory that holds the checkpoint")
            }
            let dir = URL(fileURLWithPath: path, isDirectory: true).standardizedFileURL
            return ModelLocation(directory: dir, layout: try detectLayout(in: dir, preferring: options.layout), modelId: dir.path)
        }
        if spec.hasPrefix("/") || spec.hasPrefix("./") || spec.hasPrefix("../") || spec.hasPrefix("~") || spec.hasPrefix(".") {
            throw CheckpointError.invalidModelSpec(spec: spec, reason: "no such directory")
        }
        let repo = try HubRepo.parse(spec)
        let downloader = options.downloader
        if let found = cached(repo, cache: downloader.cache, layout: options.layout) { return found }
        if downloader.offline {
            throw CheckpointError.offline(repo: repo.id, revision: repo.revision,
                                          missing: missingFiles(repo, cache: downloader.cache, layout: options.layout))
        }
        return try await downloader.downloadModel(repo, layout: options.layout)
    }

    /// The model if its snapshot in the cache is complete for a layout (no network).
    public static func cached(_ repo: HubRepo, cache: HubCache, layout: ModelLayout? = nil) -> ModelLocation? {
        guard let commit = cache.commit(for: repo) else { return nil }
        let dir = cache.snapshotFolder(repo.id, commit: commit)
        guard let l = try? detectLayout(in: dir, preferring: layout) else { return nil }
        return ModelLocation(directory: dir, layout: l, modelId: repo.id, commit: commit)
    }

    private static func missingFiles(_ repo: HubRepo, cache: HubCache, layout: ModelLayout?) -> [String] {
        guard let commit = cache.commit(for: repo) else {
            return ["refs/\(repo.revision) (the model was never downloaded)"]
        }
        let dir = cache.snapshotFolder(repo.id, commit: commit)
        let wanted = layout ?? (FileManager.default.fileExists(atPath: dir.appendingPathComponent("open_clip_config.json").path)
                                ? .openCLIP : .transformers)
        var names = [wanted.configFile]
        if wanted != .openCLIP, FileManager.default.fileExists(atPath: dir.appendingPathComponent(shardIndexFile).path) {
            names += (try? TensorLoader.shardFiles(indexFile: dir.appendingPathComponent(shardIndexFile)).map { $0.url.lastPathComponent }) ?? []
        } else {
            names.append(wanted.weightsFile)
        }
        return names.filter { !FileManager.default.fileExists(atPath: dir.appendingPathComponent($0).path) }
    }

    /// Whether `config.json` is a timm hub config (an `architecture` string and no
    /// transformers `model_type`). False when it is missing or not a JSON object.
    public static func isTimmConfig(_ url: URL) -> Bool {
        guard let data = try? InputFile.read(url.path, maxBytes: 16 << 20),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
        return object["architecture"] is String && object["model_type"] == nil
    }

    /// Detects the layout of a checkpoint directory. With both OpenCLIP and `config.json` files
    /// present, OpenCLIP wins unless `preferring` says otherwise; a `config.json` + weights pair
    /// is timm when the config names an `architecture`, transformers otherwise. Throws
    /// `pickleWeights` when only `.bin` weights exist, and `noModel` (listing what is missing)
    /// otherwise.
    public static func detectLayout(in directory: URL, preferring: ModelLayout? = nil) throws -> ModelLayout {
        let fm = FileManager.default
        func has(_ name: String) -> Bool { fm.fileExists(atPath: directory.appendingPathComponent(name).path) }
        let dirPath = directory.path

        let hasOpenCLIP = has("open_clip_config.json") && has("open_clip_model.safetensors")
        var configProblem: String?
        let hasConfigWeights: Bool
        if !has("config.json") {
            hasConfigWeights = false
        } else if has("model.safetensors") {
            hasConfigWeights = true
        } else if has(shardIndexFile) {
            let shards = try TensorLoader.shardFiles(indexFile: directory.appendingPathComponent(shardIndexFile))
            let missing = shards.map { $0.url.lastPathComponent }.filter { !has($0) }
            if missing.isEmpty {
                hasConfigWeights = true
            } else {
                hasConfigWeights = false
                configProblem = "\(shardIndexFile) names shards that are missing: \(missing.joined(separator: ", "))"
            }
        } else {
            hasConfigWeights = false
        }
        let timm = has("config.json") && isTimmConfig(directory.appendingPathComponent("config.json"))
        func pickleOrMissing(_ layout: ModelLayout, _ expected: String) throws -> Never {
            if let configProblem { throw CheckpointError.noModel(directory: dirPath, reason: configProblem) }
            if has("config.json"), has("pytorch_model.bin") {
                throw CheckpointError.pickleWeights(directory: dirPath, file: "pytorch_model.bin")
            }
            throw CheckpointError.noModel(directory: dirPath,
                reason: "the \(layout.rawValue) layout was requested but \(expected) are not both present")
        }

        switch preferring {
        case .openCLIP?:
            if hasOpenCLIP { return .openCLIP }
            if has("open_clip_config.json"), has("open_clip_pytorch_model.bin") {
                throw CheckpointError.pickleWeights(directory: dirPath, file: "open_clip_pytorch_model.bin")
            }
            throw CheckpointError.noModel(directory: dirPath,
                reason: "the OpenCLIP layout was requested but open_clip_config.json + open_clip_model.safetensors are not both present")
        case .transformers?:
            if has("config.json"), timm {
                throw CheckpointError.noModel(directory: dirPath,
                    reason: "the transformers layout was requested but config.json is a timm config (it names an architecture)")
            }
            if hasConfigWeights { return .transformers }
            try pickleOrMissing(.transformers, "config.json + model.safetensors (or \(shardIndexFile))")
        case .timm?:
            if has("config.json"), !timm {
                throw CheckpointError.noModel(directory: dirPath,
                    reason: "the timm layout was requested but config.json is not a timm config (no \"architecture\" entry)")
            }
            if hasConfigWeights { return .timm }
            try pickleOrMissing(.timm, "config.json + model.safetensors")
        case nil:
            if hasOpenCLIP { return .openCLIP }
            if hasConfigWeights { return timm ? .timm : .transformers }
            if let configProblem { throw CheckpointError.noModel(directory: dirPath, reason: configProblem) }
            for pickle in ["open_clip_pytorch_model.bin", "pytorch_model.bin"] where has(pickle) {
                throw CheckpointError.pickleWeights(directory: dirPath, file: pickle)
            }
            let present = ((try? fm.contentsOfDirectory(atPath: dirPath)) ?? []).sorted()
            throw CheckpointError.noModel(directory: dirPath,
                reason: "expected config.json + model.safetensors (transformers or timm) or open_clip_config.json + open_clip_model.safetensors (OpenCLIP); "
                    + "found \(present.isEmpty ? "nothing" : present.prefix(20).joined(separator: ", "))")
        }
    }
}

extension HubDownloader {
    /// Downloads what a checkpoint needs: `open_clip_config.json` is tried first and, when the
    /// repository has it (and the layout is not forced to transformers or timm), the OpenCLIP files are
    /// fetched; otherwise the transformers files (config, weights or index + shards, then the
    /// optional preprocessor and tokenizer files, which may be absent). All files come from the
    /// same commit.
    public func downloadModel(_ repo: HubRepo, layout: ModelLayout? = nil) async throws -> ModelLocation {
        var pinned: String?
        var hasOpenCLIPConfig = false
        if layout != .transformers && layout != .timm {
            hasOpenCLIPConfig = try await fetch("open_clip_config.json", repo: repo, pinned: &pinned,
                                                required: layout == .openCLIP) != nil
            if hasOpenCLIPConfig {
                if try await fetch("open_clip_model.safetensors", repo: repo, pinned: &pinned, required: false) != nil {
                    return try location(repo, pinned, layout: .openCLIP)
                }
                if layout == .openCLIP {
                    try await failWithoutWeights(repo, pinned, pickles: ["open_clip_pytorch_model.bin"],
                                                 expected: "open_clip_model.safetensors")
                }
                // OpenCLIP weights only as pickle: use the transformers files if the repository has them.
            }
        }
        if try await fetch("config.json", repo: repo, pinned: &pinned, required: !hasOpenCLIPConfig) == nil {
            try await failWithoutWeights(repo, pinned, pickles: ["open_clip_pytorch_model.bin"],
                                         expected: "open_clip_model.safetensors")
        }
        if try await fetch("model.safetensors", repo: repo, pinned: &pinned, required: false) == nil {
            guard let index = try await fetch(ModelLocation.shardIndexFile, repo: repo, pinned: &pinned, required: false) else {
                try await failWithoutWeights(repo, pinned,
                    pickles: ["pytorch_model.bin"] + (hasOpenCLIPConfig ? ["open_clip_pytorch_model.bin"] : []),
                    expected: "model.safetensors or \(ModelLocation.shardIndexFile)")
            }
            for shard in try TensorLoader.shardFiles(indexFile: index) {
                _ = try await fetch(shard.url.lastPathComponent, repo: repo, pinned: &pinned, required: true)
            }
        }
        if let config = try await fetch("config.json", repo: repo, pinned: &pinned, required: false),
           layout != .transformers, ModelLocation.isTimmConfig(config) {
            return try location(repo, pinned, layout: .timm)  // timm repositories have no tokenizer files
        }
        for name in ModelLocation.transformersOptionalFiles {
            _ = try await fetch(name, repo: repo, pinned: &pinned, required: false)
        }
        return try location(repo, pinned, layout: .transformers)
    }

    /// Throws `pickleWeights` if the repository has one of `pickles`, else `noModel`.
    private func failWithoutWeights(_ repo: HubRepo, _ pinned: String?, pickles: [String], expected: String) async throws -> Never {
        let at = try HubRepo(id: repo.id, revision: pinned ?? repo.revision)
        for name in pickles where try await fileMetadata(name, repo: at) != nil {
            throw CheckpointError.pickleWeights(directory: "\(repo.id)@\(at.revision)", file: name)
        }
        throw CheckpointError.noModel(directory: "\(repo.id)@\(at.revision)", reason: "the repository has no \(expected)")
    }

    private func location(_ repo: HubRepo, _ commit: String?, layout: ModelLayout) throws -> ModelLocation {
        guard let commit else {
            throw CheckpointError.network(repo: repo.id, file: layout.configFile, message: "no commit hash was learned from the hub")
        }
        let dir = cache.snapshotFolder(repo.id, commit: commit)
        return ModelLocation(directory: dir, layout: try ModelLocation.detectLayout(in: dir, preferring: layout),
                             modelId: repo.id, commit: commit)
    }
}
