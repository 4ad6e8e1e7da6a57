import Foundation

// MARK: - Refract's cache directory
//
// Refract's own caches (text embeddings, verified-shard stamps) live under one directory:
// `$REFRACT_CACHE_DIR`, else `$XDG_CACHE_HOME/refract`, else `~/.cache/refract`. (Model weights
// live in the Hugging Face cache instead: `HubCache`.)

public enum RefractCache {
    public static func directory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let dir = environment["REFRACT_CACHE_DIR"], !dir.isEmpty { return URL(fileURLWithPath: dir) }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return URL(fileURLWithPath: xdg).appendingPathComponent("refract") }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return URL(fileURLWithPath: home).appendingPathComponent(".cache/refract")
    }
}
