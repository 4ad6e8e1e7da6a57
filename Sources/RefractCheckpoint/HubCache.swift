import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Hugging Face cache
//
// The cache layout shared with huggingface_hub (so models downloaded by Python are found here and
// vice versa):
//
//   {root}/models--{org}--{name}/
//       refs/{revision}                 file holding the 40-hex commit the revision pointed to
//       snapshots/{commit}/{filename}   relative symlink to ../../blobs/{etag}
//       blobs/{etag}                    file contents, named by the hub's ETag (no quotes)
//       blobs/{etag}.incomplete         partial download, resumed with an HTTP Range request
//       .no_exist/{commit}/{filename}   empty marker: the file does not exist at that commit
//   {root}/.locks/models--{org}--{name}/{etag}.lock
//
// root = $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
// else ~/.cache/huggingface/hub.

/// A model repository on the hub plus the revision (branch, tag or commit) wanted.
public struct HubRepo: Hashable, Sendable, CustomStringConvertible {
    /// `org/name`.
    public var id: String
    /// Branch, tag or 40-hex commit; `main` by default.
    public var revision: String

    /// Validates `id` (`org/name`, letters, digits, `-`, `_`, `.`; no `--` or `..`).
    public init(id: String, revision: String = "main") throws {
        let parts = id.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw CheckpointError.invalidModelSpec(spec: id, reason: "a hub id has the form org/name[@revision]")
        }
        for p in parts {
            let ok = !p.isEmpty && p.count <= 96
                && p.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "-_.".unicodeScalars.contains($0) }
                && !p.hasPrefix("-") && !p.hasPrefix(".") && !p.hasSuffix("-") && !p.hasSuffix(".")
                && !p.contains("--") && !p.contains("..")
            guard ok else {
                throw CheckpointError.invalidModelSpec(spec: id,
                    reason: "'\(p)' is not a valid hub name (letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters)")
            }
        }
        guard !revision.isEmpty, !revision.hasPrefix("/"), !revision.split(separator: "/").contains(where: { $0 == ".." || $0 == "." || $0.isEmpty }) else {
            throw CheckpointError.invalidModelSpec(spec: "\(id)@\(revision)", reason: "invalid revision '\(revision)'")
        }
        self.id = id
        self.revision = revision
    }

    /// Parses `org/name` or `org/name@revision`.
    public static func parse(_ spec: String) throws -> HubRepo {
        if let at = spec.firstIndex(of: "@") {
            return try HubRepo(id: String(spec[..<at]), revision: String(spec[spec.index(after: at)...]))
        }
        return try HubRepo(id: spec)
    }

    /// `models--org--name`, the repository's folder in the cache.
    public var cacheFolderName: String { "models--" + id.replacingOccurrences(of: "/", with: "--") }

    /// Whether `revision` is a full commit hash.
    public var revisionIsCommit: Bool { isCommitHash(revision) }

    public var description: String { revision == "main" ? id : "\(id)@\(revision)" }
}

/// Whether `s` is a 40-character lower-case hex commit hash.
func isCommitHash(_ s: String) -> Bool {
    s.utf8.count == 40 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
}

/// The Hugging Face hub cache directory and its layout.
public struct HubCache: Sendable {
    /// The cache root (the folder holding `models--*` folders).
    public var root: URL

    public init(root: URL) { self.root = root }

    /// The cache named by the environment (`HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, home).
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.root = Self.defaultRoot(environment: environment)
    }

    /// The cache root huggingface_hub would use with `environment`.
    public static func defaultRoot(environment: [String: String]) -> URL {
        func nonEmpty(_ k: String) -> String? { environment[k].flatMap { $0.isEmpty ? nil : expandTilde($0, environment) } }
        if let p = nonEmpty("HF_HUB_CACHE") ?? nonEmpty("HUGGINGFACE_HUB_CACHE") { return URL(fileURLWithPath: p, isDirectory: true) }
        if let home = nonEmpty("HF_HOME") { return URL(fileURLWithPath: home, isDirectory: true).appendingPathComponent("hub") }
        let base = nonEmpty("XDG_CACHE_HOME") ?? (homeDirectory(environment) + "/.cache")
        return URL(fileURLWithPath: base, isDirectory: true).appendingPathComponent("huggingface/hub")
    }

    /// `{root}/models--org--name`.
    public func repoFolder(_ repoId: String) -> URL {
        root.appendingPathComponent("models--" + repoId.replacingOccurrences(of: "/", with: "--"), isDirectory: true)
    }

    /// `{repo}/snapshots/{commit}`.
    public func snapshotFolder(_ repoId: String, commit: String) -> URL {
        repoFolder(repoId).appendingPathComponent("snapshots", isDirectory: true).appendingPathComponent(commit, isDirectory: true)
    }

    /// `{repo}/blobs/{etag}`.
    public func blobFile(_ repoId: String, etag: String) -> URL {
        repoFolder(repoId).appendingPathComponent("blobs", isDirectory: true).appendingPathComponent(etag)
    }

    /// `{repo}/blobs/{etag}.incomplete`, the partial download that a retry resumes.
    public func incompleteFile(_ repoId: String, etag: String) -> URL {
        repoFolder(repoId).appendingPathComponent("blobs", isDirectory: true).appendingPathComponent(etag + ".incomplete")
    }

    /// `{repo}/refs/{revision}`.
    public func refFile(_ repoId: String, revision: String) -> URL {
        repoFolder(repoId).appendingPathComponent("refs", isDirectory: true).appendingPathComponent(revision)
    }

    /// `{repo}/.no_exist/{commit}/{filename}`.
    public func noExistMarker(_ repoId: String, commit: String, filename: String) -> URL {
        repoFolder(repoId).appendingPathComponent(".no_exist", isDirectory: true)
            .appendingPathComponent(commit, isDirectory: true).appendingPathComponent(filename)
    }

    /// `{root}/.locks/models--org--name/{etag}.lock`.
    public func lockFile(_ repoId: String, etag: String) -> URL {
        root.appendingPathComponent(".locks", isDirectory: true)
            .appendingPathComponent(repoFolder(repoId).lastPathComponent, isDirectory: true)
            .appendingPathComponent(etag + ".lock")
    }

    /// The commit a revision resolves to without network: the content of `refs/{revision}`, or the
    /// revision itself when it is a commit hash whose snapshot folder exists.
    public func commit(for repo: HubRepo) -> String? {
        if repo.revisionIsCommit {
            return directoryExists(snapshotFolder(repo.id, commit: repo.revision)) ? repo.revision : nil
        }
        guard let text = try? String(contentsOf: refFile(repo.id, revision: repo.revision), encoding: .utf8) else { return nil }
        let commit = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return isCommitHash(commit) ? commit : nil
    }

    /// The snapshot path of `filename` if it exists in the cache (a dangling symlink does not count).
    public func cachedFile(_ filename: String, repo: HubRepo) -> URL? {
        guard let commit = commit(for: repo) else { return nil }
        let url = snapshotFolder(repo.id, commit: commit).appendingPathComponent(filename)
        return FileManager.default.fileExists(atPath: url.path) ? url : nil
    }

    /// Whether the cache records that `filename` does not exist at `commit`.
    public func isKnownMissing(_ filename: String, repoId: String, commit: String) -> Bool {
        FileManager.default.fileExists(atPath: noExistMarker(repoId, commit: commit, filename: filename).path)
    }

    // MARK: Writing (as huggingface_hub does)

    /// Writes `refs/{revision}` = commit (no trailing newline), unless already so.
    func writeRef(_ repoId: String, revision: String, commit: String) throws {
        let url = refFile(repoId, revision: revision)
        if (try? String(contentsOf: url, encoding: .utf8)) == commit { return }
        try createDirectory(url.deletingLastPathComponent())
        try writeAtomically(to: url) { write in try write(Array(commit.utf8)) }
    }

    /// Points `snapshots/{commit}/{filename}` at `blobs/{etag}` with a relative symlink.
    func linkSnapshot(_ repoId: String, commit: String, filename: String, etag: String) throws {
        let pointer = snapshotFolder(repoId, commit: commit).appendingPathComponent(filename)
        try createDirectory(pointer.deletingLastPathComponent())
        let depth = filename.split(separator: "/").count  // folders below the snapshot, plus one for the commit
        let target = String(repeating: "../", count: depth + 1) + "blobs/" + etag
        var st = stat()
        if lstat(pointer.path, &st) == 0 { unlink(pointer.path) }
        if symlink(target, pointer.path) != 0 {
            throw CheckpointError.io(path: pointer.path, message: "cannot create symlink to \(target): \(errnoString())")
        }
    }

    /// Creates the empty `.no_exist/{commit}/{filename}` marker.
    func markMissing(_ repoId: String, commit: String, filename: String) {
        let url = noExistMarker(repoId, commit: commit, filename: filename)
        try? createDirectory(url.deletingLastPathComponent())
        _ = FileManager.default.createFile(atPath: url.path, contents: Data())
    }
}

func createDirectory(_ url: URL) throws {
    do {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    } catch {
        throw CheckpointError.io(path: url.path, message: "cannot create directory: \(error.localizedDescription)")
    }
}

func directoryExists(_ url: URL) -> Bool {
    var isDir: ObjCBool = false
    return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) && isDir.boolValue
}

func homeDirectory(_ environment: [String: String]) -> String {
    if let h = environment["HOME"], !h.isEmpty { return h }
    return FileManager.default.homeDirectoryForCurrentUser.path
}

func expandTilde(_ path: String, _ environment: [String: String]) -> String {
    if path == "~" { return homeDirectory(environment) }
    if path.hasPrefix("~/") { return homeDirectory(environment) + path.dropFirst() }
    return path
}

// MARK: - Verifying cached blobs on use

extension HubCache {
    /// SHA-256 of a weights file, checked against the Hugging Face cache's own name for it: an LFS
    /// file lives at `blobs/{sha256}`, so when `url` resolves to such a blob, its digest must equal
    /// its name. The download checked it once; this catches a blob damaged afterwards (a flipped
    /// bit, an edit, a truncated copy) on every later use, at no extra cost (commands hash the
    /// weights anyway for `weightsSHA256`). Any other file is hashed as it is.
    public static func checkedDigest(ofFileAt url: URL) throws -> String {
        let digest = try SHA256.hexDigest(ofFileAt: url)
        let real = url.resolvingSymlinksInPath()
        let name = real.lastPathComponent
        let isBlob = real.deletingLastPathComponent().lastPathComponent == "blobs"
            && name.count == 64 && name.allSatisfy { $0.isHexDigit && !$0.isUppercase }
        if isBlob && digest != name {
            throw CheckpointError.integrity(repo: real.deletingLastPathComponent().deletingLastPathComponent().lastPathComponent,
                                            file: url.path,
                                            reason: "the cached file \(real.path) is damaged: its SHA-256 is \(digest), but the Hugging Face "
                                                + "cache names it by its SHA-256 \(name). Delete it (and the link to it) and run again to "
                                                + "download it afresh")
        }
        return digest
    }
}
