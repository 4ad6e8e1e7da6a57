// MARK: - What an embeddings file holds
//
// `refract embed-images --output E.npy` writes, beside the array and its E.paths.txt, E.model.json:
// the model that made the rows (id, layout, weights SHA-256), their shape and whether they were
// L2-normalised. Commands that take the array as targets (`refract align --clip-embeddings`) read it
// to name the model in their own artefacts and to refuse another model's embeddings.

import Foundation
import RefractTensor

public struct EmbeddingsInfo: Codable, Equatable, Sendable {
    public static let formatName = "refract-embeddings"
    public static let currentFormatVersion = 1

    public var format: String = formatName
    public var formatVersion: Int = currentFormatVersion
    public var model: StoreModelInfo
    public var rows: Int
    public var width: Int
    public var normalized: Bool

    public init(model: StoreModelInfo, rows: Int, width: Int, normalized: Bool) {
        self.model = model; self.rows = rows; self.width = width; self.normalized = normalized
    }

    /// `E.npy` → `E.model.json`.
    public static func url(for array: URL) -> URL { array.deletingPathExtension().appendingPathExtension("model.json") }

    /// Reads and checks E.model.json; nil when there is none.
    public static func read(for array: URL) throws -> EmbeddingsInfo? {
        let url = url(for: array)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do {
            let info = try JSONDecoder().decode(EmbeddingsInfo.self, from: try InputFile.read(url.path))
            guard info.format == formatName, info.formatVersion >= 1, info.formatVersion <= currentFormatVersion else {
                throw StoreError(.invalidManifest, path: url.path, "not a \(formatName) file of a version this build reads")
            }
            return info
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError(.invalidManifest, path: url.path, "not a readable embeddings description: \(error)")
        }
    }

    public func write(for array: URL) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try FileOutput.writeAtomically(try e.encode(self), to: Self.url(for: array), what: "the embeddings description")
    }
}
