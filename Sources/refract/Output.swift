// Output helpers for the CLI: JSON encoding, side-car files, report shapes.

import Foundation
import RefractTensor

enum Output {
    /// One class of a classification: `score` (CLIP's cosine) or `logit` (a timm head's), whichever applies.
    struct Prediction: Codable {
        var `class`: String
        var index: Int
        var score: Float?
        var logit: Float?
        var probability: Float
        init(class name: String, index: Int, score: Float? = nil, logit: Float? = nil, probability: Float) {
            self.class = name; self.index = index; self.score = score; self.logit = logit; self.probability = probability
        }
    }
    struct ClassifyItem: Codable { var path: String; var predictions: [Prediction] }
    /// `templates` only for CLIP (zero-shot).
    struct ClassifyReport: Codable { var model: String; var templates: [String]?; var results: [ClassifyItem] }
    struct EnvReport: Codable {
        var blasLibrary: String, blasCore: String, blasThreads: Int, blasConfig: String
        var cpu: CPUFeatures, blasCoreChoice: BLASCoreChoice
        var cpuCores: Int, cpuAllocation: CPUAllocation, codecs: String, huggingFaceCache: String, offline: Bool
    }

    static func json<T: Encodable>(_ value: T) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try e.encode(value), as: UTF8.self)
    }

    /// `E.npy` → `E.paths.txt` (the suffix replaces the extension).
    static func sidecar(_ url: URL, _ suffix: String) -> URL {
        url.deletingPathExtension().appendingPathExtension(suffix)
    }

    /// Writes one line per element, atomically; failures read "cannot write PATH: what: why".
    static func writeLines(_ lines: [String], to url: URL, what: String = "the list") throws {
        try FileOutput.writeLines(lines, to: url, what: what)
    }
}

/// A one-line progress bar for counted work (images, texts) on stderr, drawn only when stderr is a
/// terminal. Downloads use RefractCheckpoint's `TerminalProgress` (bytes and rate).
final class ProgressBar: @unchecked Sendable {
    private let label: String
    private let enabled = isatty(2) != 0
    private let lock = NSLock()
    private var lastDraw = 0.0
    private var drawn = false

    init(label: String) { self.label = label }

    func update(done: Int, total: Int?) {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        let now = Date().timeIntervalSince1970
        if now - lastDraw < 0.1 && done != total { return }
        lastDraw = now
        var line = "\r\(label) "
        if let total, total > 0 {
            let frac = min(1, Double(done) / Double(total))
            let width = 30
            let filled = Int(frac * Double(width))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] "
            line += "\(done)/\(total)"
        } else {
            line += "\(done)"
        }
        FileHandle.standardError.write(Data((line + "\u{1B}[K").utf8))
        drawn = true
    }

    func finish() {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        if drawn { FileHandle.standardError.write(Data("\n".utf8)); drawn = false }
    }
}
