// MARK: - Description pools and their text embeddings
//
// A pool is a user's UTF-8 file, one description per line. Lines are trimmed; blank lines are
// skipped and a repeated description is kept once (its first line), both counted in the report.
// Descriptions longer than the text tower's context are truncated exactly as the tokenizer does
// (the embedding is that of the truncated text) and counted.
//
// Embeddings are L2-normalised, computed once per (model weights, pool contents) and cached in
// `<cache>/text-embeddings/<weights sha256[0..16]>-<pool sha256[0..16]>.npy` (float32 [M, D'],
// rows = the pool's distinct descriptions in file order) with a JSON side-car holding the file's
// SHA-256, checked on every use (`TextEmbeddingCache`: a damaged entry is recomputed); the cache
// directory is `$REFRACT_CACHE_DIR`, else `$XDG_CACHE_HOME/refract`, else `~/.cache/refract`.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractTensor

public struct TextSpanInputError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}

public struct DescriptionPool: Sendable {
    public let path: String
    public let sha256: String
    /// Lines of the file (line ends removed).
    public let lineCount: Int
    /// Distinct non-blank descriptions in file order, with their 0-based line.
    public let texts: [String]
    public let lines: [Int]
    public let blank: Int
    public let duplicates: Int

    public var count: Int { texts.count }

    public static func load(_ url: URL) throws -> DescriptionPool {
        let data: Data
        do { data = try InputFile.read(url.path) } catch let e as InputFileError {  // refused by type first: a FIFO would block
            throw TextSpanInputError(path: url.path, message: "cannot read the description pool: \(e.reason)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TextSpanInputError(path: url.path, message: "not UTF-8 text")
        }
        // Split on LF at the scalar level ("\r\n" is one Character in Swift); drop a CR before it.
        var raw = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            var scalars = String.UnicodeScalarView(line)
            if scalars.last == "\r" { scalars.removeLast() }
            return String(scalars)
        }
        if raw.last == "" { raw.removeLast() }
        var seen = Set<String>(), texts = [String](), lines = [Int](), blank = 0, duplicates = 0
        for (i, line) in raw.enumerated() {
            let t = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if t.isEmpty { blank += 1; continue }
            if !seen.insert(t).inserted { duplicates += 1; continue }
            texts.append(t); lines.append(i)
        }
        if texts.isEmpty {
            throw TextSpanInputError(path: url.path, message: "no descriptions (the pool is empty or blank)")
        }
        return DescriptionPool(path: url.path, sha256: SHA256.hexDigest([UInt8](data)), lineCount: raw.count,
                               texts: texts, lines: lines, blank: blank, duplicates: duplicates)
    }

    /// A pool of given texts (e.g. one query), not read from a file.
    public init(texts: [String], name: String) {
        self.path = name
        self.sha256 = SHA256.hexDigest(Array(texts.joined(separator: "\n").utf8))
        self.lineCount = texts.count
        self.texts = texts
        self.lines = Array(texts.indices)
        self.blank = 0
        self.duplicates = 0
    }

    init(path: String, sha256: String, lineCount: Int, texts: [String], lines: [Int], blank: Int, duplicates: Int) {
        self.path = path; self.sha256 = sha256; self.lineCount = lineCount; self.texts = texts
        self.lines = lines; self.blank = blank; self.duplicates = duplicates
    }

    /// Descriptions whose tokens do not fit the context (they are truncated as the tokenizer does).
    public func truncatedCount(_ model: CLIP) -> Int {
        let room = model.architecture.contextLength - 2
        return texts.reduce(0) { $0 + (model.tokenizer.encode($1).count > room ? 1 : 0) }
    }

    public func summary(truncated: Int) -> PoolSummary {
        PoolSummary(path: path, sha256: sha256, lines: lineCount, blank: blank, duplicates: duplicates,
                    truncated: truncated, used: count)
    }
}

public enum TextEmbeddings {
    /// Refract's cache directory (`RefractCache.directory`).
    public static func cacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        RefractCache.directory(environment: environment)
    }

    public enum Source: String, Sendable { case computed, cache, file }

    /// L2-normalised text embeddings [M, D'] of the pool's descriptions.
    /// `precomputed`: a float .npy with one row per line of the pool file (rows of blank or
    /// repeated lines are ignored). Otherwise the cache is used, or the embeddings are computed
    /// with `model` and cached (`cache` nil disables caching).
    public static func load(pool: DescriptionPool, model: CLIP, weightsSHA256: String, cache: URL?,
                            precomputed: URL? = nil, progress: ((Int) -> Void)? = nil) throws -> (Tensor, Source) {
        let width = model.architecture.embedDim
        if let precomputed {
            let array: Tensor
            do { array = try NPY.read(precomputed).tensor } catch {
                throw TextSpanInputError(path: precomputed.path, message: "\(error)")
            }
            guard array.rank == 2, array.shape[1] == width else {
                throw TextSpanInputError(path: precomputed.path, message: "shape \(array.shape); expected [\(pool.lineCount), \(width)] "
                    + "(one row per line of \(pool.path), width D' = \(width) of \(model.id))")
            }
            guard array.shape[0] == pool.lineCount else {
                throw TextSpanInputError(path: precomputed.path, message: "\(array.shape[0]) rows, but \(pool.path) has "
                    + "\(pool.lineCount) lines; rows must align with the pool file's lines")
            }
            let rows = Ops.gatherRows(array, pool.lines)
            if let bad = rows.data.firstIndex(where: { !$0.isFinite }) {
                throw TextSpanInputError(path: precomputed.path, message: "non-finite value in row for line \(pool.lines[bad / width] + 1)")
            }
            return (Ops.l2Normalized(rows), .file)
        }
        let cached = cache.map { TextEmbeddingCache(directory: $0, pool: pool, model: model, weightsSHA256: weightsSHA256) }
        if let hit = cached?.load() { return (hit, .cache) }
        let embeddings = Ops.l2Normalized(model.encodeTexts(pool.texts, progress: progress))     // [M, D']
        cached?.store(embeddings)
        return (embeddings, .computed)
    }
}
