import Foundation
import RefractCheckpoint
import RefractTensor

// MARK: - Verified-shard stamps
//
// Hashing every shard of a large run on every open costs seconds (a 50,000-image ViT-B/16 run is
// ~8 GB: ~2.6 s on 2 cores from the page cache), which an interactive query (`refract retrieve`)
// should not pay each time. As git's index does for unchanged files, a shard whose SHA-256 matched
// the manifest leaves a stamp of its file status (device, inode, size, modification and status-change
// times to the nanosecond); a later reader that finds the same status skips the hash. Any write to
// the file changes its status-change time (which no user call can set back), so an edited shard is
// hashed again and refused.
//
// Racy stamps (git's "racily clean" problem): file times have a coarse clock, so a file modified
// within the same tick as its verification could keep its times. A stamp is therefore written only
// for a file whose times are at least `settle` seconds in the past when it is verified.
//
// Stamps live in `<Refract cache>/verified-shards/` (RefractCache), one small file per recorded
// SHA-256. `REFRACT_VERIFY_SHARDS=always` ignores them and hashes every shard on every open.
// A stamp that cannot be read or written is ignored: the shard is simply hashed.

enum ShardStamps {
    static let settle: TimeInterval = 2

    static var enabled: Bool { ProcessInfo.processInfo.environment["REFRACT_VERIFY_SHARDS"] != "always" }

    static func stampURL(sha256: String) -> URL {
        RefractCache.directory().appendingPathComponent("verified-shards").appendingPathComponent(sha256)
    }

    /// The file's status as a stamp line, and whether its times have settled; nil when it cannot be read.
    static func status(_ url: URL) -> (line: String, settled: Bool)? {
        var st = stat()
        guard stat(url.path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        #if canImport(Darwin)
        let m = st.st_mtimespec, c = st.st_ctimespec
        #else
        let m = st.st_mtim, c = st.st_ctim
        #endif
        let line = "\(url.standardizedFileURL.path)\n\(st.st_dev) \(st.st_ino) \(st.st_size) "
            + "\(m.tv_sec).\(m.tv_nsec) \(c.tv_sec).\(c.tv_nsec)\n"
        let newest = Double(max(m.tv_sec, c.tv_sec)) + 1
        return (line, Date().timeIntervalSince1970 - newest >= settle)
    }

    /// Whether `url` was verified against `sha256` before and has not changed since.
    static func isVerified(_ url: URL, sha256: String) -> Bool {
        guard enabled, let now = status(url),
              let data = FileManager.default.contents(atPath: stampURL(sha256: sha256).path) else { return false }
        return String(decoding: data, as: UTF8.self) == now.line
    }

    /// Records that `url` matched `sha256` (only once its times have settled).
    static func record(_ url: URL, sha256: String) {
        guard enabled, let now = status(url), now.settled else { return }
        let stamp = stampURL(sha256: sha256)
        try? FileOutput.createDirectory(stamp.deletingLastPathComponent())
        try? FileOutput.writeAtomically(Data(now.line.utf8), to: stamp, what: "a verified-shard stamp")
    }
}
