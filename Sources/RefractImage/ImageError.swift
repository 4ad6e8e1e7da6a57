// MARK: - ImageError
//
// Everything that can go wrong between a path and an `RGBImage`. The description always names
// the source (a file path, or whatever label the caller passed) and the problem in plain words.

public struct ImageError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        /// The file could not be read at all (missing, no permission, or not a regular file: a
        /// directory, a named pipe, a device or a socket, refused by type before opening).
        case unreadable
        /// Zero bytes.
        case empty
        /// The data ends before the image is complete.
        case truncated
        /// Not a JPEG or PNG, or a JPEG/PNG variant that cannot be decoded (12-bit, lossless JPEG).
        case unsupported
        /// The header declares more pixels than the caller's limit; refused before decoding.
        case tooLarge
        /// The codec found malformed data.
        case corrupt
        /// A file could not be written (encoders).
        case unwritable
    }

    /// The file path or caller-supplied label of the data.
    public var source: String
    public var kind: Kind
    /// Specifics: the codec's message, the declared size, the format found.
    public var detail: String

    public init(source: String, kind: Kind, detail: String) {
        self.source = source
        self.kind = kind
        self.detail = detail
    }

    public var description: String {
        let problem: String
        switch kind {
        case .unreadable: problem = "cannot read the file"
        case .empty: problem = "the file is empty (0 bytes)"
        case .truncated: problem = "the file is truncated"
        case .unsupported: problem = "not a supported image"
        case .tooLarge: problem = "the image is too large"
        case .corrupt: problem = "corrupt image data"
        case .unwritable: problem = "cannot write the file"
        }
        return detail.isEmpty ? "\(source): \(problem)" : "\(source): \(problem): \(detail)"
    }
}
