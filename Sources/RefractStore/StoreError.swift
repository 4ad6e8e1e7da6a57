import Foundation

// MARK: - StoreError
//
// Every failure of the store is a `StoreError`. Its text always starts with the file or directory
// concerned (the run directory, `RUN/manifest.json`, a shard path, an export target) followed by
// what is wrong, so the message alone tells a user what to fix.

/// An error from writing, reading or exporting a run.
public struct StoreError: Error, Equatable, Sendable, CustomStringConvertible, LocalizedError {
    /// What went wrong, for callers that react differently to different problems.
    public enum Kind: String, Equatable, Sendable {
        /// A file could not be created, read, written, synced or renamed.
        case io
        /// The run directory (or export target) already holds something.
        case exists
        /// A file the run needs is not there (manifest, shard, constants).
        case missingFile
        /// `manifest.json` is not valid JSON or does not decode as a manifest.
        case corruptManifest
        /// `manifest.json` is JSON but not a refract run manifest.
        case foreignFile
        /// The manifest was written by a newer (or unknown) format version.
        case unsupportedVersion
        /// The manifest decodes but contradicts itself (shard ranges, rows, skipped images, names).
        case invalidManifest
        /// A shard or constants file is malformed or disagrees with the manifest.
        case invalidShard
        /// A file's SHA-256 differs from the one recorded in the manifest.
        case checksumMismatch
        /// Resuming with a header that differs from the stored one.
        case headerMismatch
        /// The run is not complete (reading without `allowIncomplete`, or `finish` too early).
        case incomplete
        /// The run is already complete (resume, or writing after `finish`).
        case alreadyComplete
        /// Arguments passed by the caller are inconsistent (shapes, indices, names, order).
        case invalidArgument
        /// A tensor or constant name the run does not have.
        case unknownName
        /// Two runs that must describe the same model and tensors do not.
        case incompatibleRuns
        /// Another writer (process) holds the output's lock.
        case locked
        /// A part of a run split across machines where a whole run is needed.
        case isPart
        /// Parts that cannot be merged (missing, overlapping, incomplete, of other settings).
        case mergeRefused
    }

    public var kind: Kind
    /// The file or directory concerned.
    public var path: String
    /// What is wrong with it.
    public var message: String

    public init(_ kind: Kind, path: String, _ message: String) {
        self.kind = kind
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
    public var errorDescription: String? { description }
}
