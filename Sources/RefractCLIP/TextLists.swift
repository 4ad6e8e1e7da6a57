// MARK: - Text files
//
// One entry per line, UTF-8; trailing "\r" removed; blank lines are an error for class and
// template files (they would silently shift indices) and skipped nowhere else silently.

import Foundation
import RefractTensor

public struct TextFileError: Error, CustomStringConvertible {
    public var file: String
    public var message: String
    public var description: String { "\(file): \(message)" }
}

public enum TextLists {
    /// Reads non-empty lines. Fails on unreadable or non-UTF-8 files, empty files and blank lines.
    public static func readLines(_ url: URL, what: String = "text") throws -> [String] {
        let data: Data
        do { data = try InputFile.read(url.path) } catch let e as InputFileError {
            throw TextFileError(file: url.path, message: "cannot read the \(what) list: \(e.reason)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TextFileError(file: url.path, message: "not valid UTF-8")
        }
        // Split on scalars: Swift treats "\r\n" as one Character, so String-level splitting misses it.
        var lines = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            var s = String(String.UnicodeScalarView(line))
            if s.unicodeScalars.last == "\r" { s.unicodeScalars.removeLast() }
            return s
        }
        if lines.last == "" { lines.removeLast() }
        if lines.isEmpty { throw TextFileError(file: url.path, message: "empty file: expected one \(what) per line") }
        if let blank = lines.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces).isEmpty }) {
            throw TextFileError(file: url.path, message: "line \(blank + 1) is blank: expected one \(what) per line")
        }
        return lines
    }

    /// Templates must contain "{}" where the class name goes.
    public static func readTemplates(_ url: URL) throws -> [String] {
        let lines = try readLines(url, what: "template")
        if let bad = lines.firstIndex(where: { !$0.contains("{}") }) {
            throw TextFileError(file: url.path, message: "line \(bad + 1) has no '{}' placeholder for the class name")
        }
        return lines
    }
}
