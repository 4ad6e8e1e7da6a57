import Foundation

// MARK: - CheckpointError
//
// Every failure in this module is a `CheckpointError`. Each case carries the file (or repository)
// and, where one is involved, the tensor key, so that `description` alone tells a user what to fix.

/// An error from reading checkpoints, resolving model directories or downloading from the hub.
public enum CheckpointError: Error, Equatable, Sendable, CustomStringConvertible, LocalizedError {
    /// A file could not be opened, read, mapped or written.
    case io(path: String, message: String)
    /// The safetensors container itself is malformed (header length, JSON, data section layout).
    case malformedFile(path: String, reason: String)
    /// One tensor entry of a safetensors header is invalid (shape, offsets, byte length, overlap).
    case invalidEntry(path: String, key: String, reason: String)
    /// A tensor's dtype string is not a safetensors dtype this reader knows.
    case unknownDType(path: String, key: String, dtype: String)
    /// The dtype is known but cannot be read as the requested element type (e.g. I32 as float32).
    case unconvertibleDType(path: String, key: String, dtype: String, wanted: String)
    /// The same tensor name appears in more than one file of a checkpoint.
    case duplicateTensor(key: String, paths: [String])
    /// A tensor the model needs is not in the checkpoint. `suggestions` lists similar keys.
    case missingTensor(key: String, paths: [String], suggestions: [String])
    /// A tensor exists but its shape is not the one the model expects.
    case shapeMismatch(path: String, key: String, expected: [Int], actual: [Int])
    /// Tensors in the checkpoint that the model neither took nor explicitly ignored.
    case unusedTensors([UnusedTensor])
    /// A sharded checkpoint's `model.safetensors.index.json` is malformed or disagrees with its shards.
    case invalidIndex(path: String, reason: String)
    /// A directory holds only pickle (`.bin`) weights, which are not supported.
    case pickleWeights(directory: String, file: String)
    /// A directory does not hold a recognisable CLIP checkpoint.
    case noModel(directory: String, reason: String)
    /// A model spec is neither an existing directory nor a valid hub id `org/name[@revision]`.
    case invalidModelSpec(spec: String, reason: String)
    /// Network access is disabled (`HF_HUB_OFFLINE`) and the cache lacks files.
    case offline(repo: String, revision: String, missing: [String])
    /// The hub answered a required file with an HTTP error status.
    case httpStatus(repo: String, file: String, status: Int, url: String)
    /// A transfer failed (connection refused, dropped, timed out) after all retries.
    case network(repo: String, file: String, message: String)
    /// A downloaded file does not match the size or SHA-256 the hub announced.
    case integrity(repo: String, file: String, reason: String)

    /// One unused tensor: its key and the file that holds it.
    public struct UnusedTensor: Equatable, Sendable {
        public var key: String
        public var path: String
        public init(key: String, path: String) { self.key = key; self.path = path }
    }

    public var description: String {
        switch self {
        case let .io(path, message):
            return "\(path): \(message)"
        case let .malformedFile(path, reason):
            return "\(path): not a valid safetensors file: \(reason)"
        case let .invalidEntry(path, key, reason):
            return "\(path): tensor '\(key)': \(reason)"
        case let .unknownDType(path, key, dtype):
            return "\(path): tensor '\(key)': unknown dtype '\(dtype)'"
        case let .unconvertibleDType(path, key, dtype, wanted):
            return "\(path): tensor '\(key)': dtype \(dtype) cannot be read as \(wanted)"
        case let .duplicateTensor(key, paths):
            return "tensor '\(key)' appears in more than one file: \(paths.joined(separator: ", "))"
        case let .missingTensor(key, paths, suggestions):
            var s = "missing tensor '\(key)' in \(paths.joined(separator: ", "))"
            if !suggestions.isEmpty {
                s += " (similar keys: \(suggestions.map { "'\($0)'" }.joined(separator: ", ")))"
            }
            return s
        case let .shapeMismatch(path, key, expected, actual):
            return "\(path): tensor '\(key)': expected shape \(expected), found \(actual)"
        case let .unusedTensors(list):
            let byFile = Dictionary(grouping: list, by: \.path)
            var lines = ["\(list.count) unused tensor\(list.count == 1 ? "" : "s") in checkpoint:"]
            for path in byFile.keys.sorted() {
                for t in byFile[path]!.sorted(by: { $0.key < $1.key }) {
                    lines.append("  \(path): '\(t.key)'")
                }
            }
            return lines.joined(separator: "\n")
        case let .invalidIndex(path, reason):
            return "\(path): invalid sharded checkpoint index: \(reason)"
        case let .pickleWeights(directory, file):
            return "\(directory): only pickle weights found (\(file)); pickle checkpoints are not supported. "
                + "Convert them to safetensors, e.g. in Python: "
                + "`from safetensors.torch import save_file; import torch; "
                + "sd = torch.load('\(file)', map_location='cpu', weights_only=True); "
                + "save_file({k: v.contiguous() for k, v in sd.items()}, '\(file.hasPrefix("open_clip") ? "open_clip_model" : "model").safetensors')` "
                + "(or for transformers: `CLIPModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`)"
        case let .noModel(directory, reason):
            return "\(directory): no CLIP checkpoint found: \(reason)"
        case let .invalidModelSpec(spec, reason):
            return "'\(spec)' is not a model directory or hub id: \(reason)"
        case let .offline(repo, revision, missing):
            return "HF_HUB_OFFLINE is set and \(repo)@\(revision) is not fully in the Hugging Face cache"
                + (missing.isEmpty ? "" : " (missing: \(missing.joined(separator: ", ")))")
                + "; unset HF_HUB_OFFLINE to download it"
        case let .httpStatus(repo, file, status, url):
            let hint: String
            switch status {
            case 401: hint = " (unauthorized: the repository may be private or gated; set HF_TOKEN)"
            case 403: hint = " (forbidden: accept the model's terms on the hub, or check HF_TOKEN permissions)"
            case 404: hint = " (not found: check the repository id, revision and file name)"
            default: hint = ""
            }
            return "\(repo): cannot fetch '\(file)': HTTP \(status) from \(url)\(hint)"
        case let .network(repo, file, message):
            return "\(repo): downloading '\(file)' failed: \(message)"
        case let .integrity(repo, file, reason):
            return "\(repo): downloaded '\(file)' is corrupt: \(reason)"
        }
    }

    public var errorDescription: String? { description }
}
