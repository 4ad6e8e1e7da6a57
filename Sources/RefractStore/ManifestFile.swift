import Foundation

// MARK: - manifest.json on disk

enum ManifestFile {
    static let name = StoreLayout.manifestFile
    static let constantsName = StoreLayout.constantsFile

    static func url(_ run: URL) -> URL { run.appendingPathComponent(name) }

    /// Writes the manifest atomically (temporary file in the run directory, fsync, rename).
    static func write(_ manifest: StoreManifest, run: URL) throws {
        let data: Data
        do {
            data = try manifest.encoded()
        } catch {
            throw StoreError(.io, path: url(run).path, "cannot encode the manifest: \(error)")
        }
        try writeAtomically(data, to: url(run))
    }

    /// Reads, decodes and validates `RUN/manifest.json`.
    static func load(run: URL) throws -> StoreManifest {
        let file = url(run)
        let path = file.path
        switch pathKind(run) {
        case .missing: throw StoreError(.missingFile, path: run.path, "does not exist")
        case .other: throw StoreError(.missingFile, path: run.path, "is not a directory (a run is a directory holding manifest.json)")
        case .directory: break
        }
        switch pathKind(file) {
        case .missing: throw StoreError(.missingFile, path: path, "missing: \(run.path) is not a refract run directory")
        case .directory: throw StoreError(.foreignFile, path: path, "is a directory, not a run manifest")
        case .other: try requireRegularFile(file, role: "the run manifest")
        }
        return try decode(readFile(file), path: path)
    }

    /// Decodes and validates manifest bytes; `path` names the file in errors.
    static func decode(_ data: Data, path: String) throws -> StoreManifest {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw StoreError(.corruptManifest, path: path, "is not valid JSON (\(data.count) bytes): \(error.localizedDescription)")
        }
        guard let top = object as? [String: Any] else {
            throw StoreError(.foreignFile, path: path, "is not a refract run manifest (the JSON is not an object)")
        }
        guard let format = top["format"] as? String else {
            throw StoreError(.foreignFile, path: path,
                             "is not a refract run manifest (no \"format\": \"\(StoreManifest.formatName)\" field)")
        }
        guard format == StoreManifest.formatName else {
            throw StoreError(.foreignFile, path: path,
                             "is not a refract run manifest (format is \"\(shorten(format))\", expected \"\(StoreManifest.formatName)\")")
        }
        let version: Int
        if let i = top["formatVersion"] as? Int {
            version = i
        } else if let d = top["formatVersion"] as? Double, let i = Int(exactly: d) {
            version = i
        } else {
            throw StoreError(.corruptManifest, path: path, "has no integer \"formatVersion\"")
        }
        if version > StoreManifest.currentFormatVersion {
            throw StoreError(.unsupportedVersion, path: path,
                             "was written in run format version \(version); this build of refract reads versions up to "
                                + "\(StoreManifest.currentFormatVersion). Use a newer refract")
        }
        if version < 1 {
            throw StoreError(.unsupportedVersion, path: path, "has unknown run format version \(version)")
        }
        let manifest: StoreManifest
        do {
            manifest = try JSONDecoder().decode(StoreManifest.self, from: data)
        } catch let e as DecodingError {
            throw StoreError(.corruptManifest, path: path, "is not a valid run manifest: \(describe(e))")
        } catch {
            throw StoreError(.corruptManifest, path: path, "is not a valid run manifest: \(error)")
        }
        try manifest.validate(path: path)
        return manifest
    }

    private static func describe(_ e: DecodingError) -> String {
        func where_(_ path: [CodingKey]) -> String {
            if path.isEmpty { return "at the top level" }
            var s = ""
            for k in path {
                if let i = k.intValue { s += "[\(i)]" } else { s += (s.isEmpty ? "" : ".") + k.stringValue }
            }
            return "at \(s)"
        }
        switch e {
        case let .keyNotFound(key, ctx):
            return "missing field '\(key.stringValue)' \(where_(ctx.codingPath))"
        case let .typeMismatch(type, ctx):
            return "wrong type \(where_(ctx.codingPath)) (expected \(type))"
        case let .valueNotFound(type, ctx):
            return "null \(where_(ctx.codingPath)) (expected \(type))"
        case let .dataCorrupted(ctx):
            return "invalid value \(where_(ctx.codingPath)): \(ctx.debugDescription)"
        @unknown default:
            return "\(e)"
        }
    }
}
