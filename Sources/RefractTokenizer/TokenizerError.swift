import Foundation

/// A vocabulary, merges or configuration file that cannot be used, or a bundled resource that is missing.
/// Every case names the file and says what is wrong with it.
public enum TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file does not exist (or is not a regular file).
    case fileNotFound(path: String)
    /// The file exists but cannot be read (permissions, not UTF-8, ...).
    case unreadable(path: String, reason: String)
    /// The JSON in the file cannot be parsed, or has the wrong shape.
    case malformedJSON(path: String, reason: String)
    /// A line of a merges file is not two space-separated symbols.
    case malformedMerges(path: String, line: Int, text: String)
    /// A token that the vocabulary must contain (a merge part or result, a byte symbol, a special token) is missing.
    case missingToken(path: String, token: String, reason: String)
    /// The file is gzip-compressed; this package reads the decompressed text.
    case compressed(path: String)
    /// A model directory holds none of the files a tokenizer can be built from.
    case missingFiles(directory: String, expected: [String])
    /// A configuration that is readable but not supported (for example a non-BPE tokenizer.json).
    case unsupported(path: String, reason: String)
    /// A resource that should be bundled with RefractTokenizer is missing or damaged.
    case missingResource(name: String, reason: String)

    public var description: String {
        switch self {
        case let .fileNotFound(path):
            return "TokenizerError: \(path): file not found"
        case let .unreadable(path, reason):
            return "TokenizerError: \(path): cannot be read (\(reason))"
        case let .malformedJSON(path, reason):
            return "TokenizerError: \(path): malformed JSON (\(reason))"
        case let .malformedMerges(path, line, text):
            let shown = text.count > 60 ? String(text.prefix(60)) + "..." : text
            return "TokenizerError: \(path): line \(line) is not a merge of two space-separated symbols: \"\(shown)\""
        case let .missingToken(path, token, reason):
            return "TokenizerError: \(path): token \"\(token)\" is not in the vocabulary (\(reason))"
        case let .compressed(path):
            return "TokenizerError: \(path): the file is gzip-compressed; decompress it first (gunzip -k)"
        case let .missingFiles(directory, expected):
            return "TokenizerError: \(directory): no tokenizer files found (expected \(expected.joined(separator: " or ")))"
        case let .unsupported(path, reason):
            return "TokenizerError: \(path): unsupported tokenizer (\(reason))"
        case let .missingResource(name, reason):
            return "TokenizerError: bundled resource \(name): \(reason)"
        }
    }
}
