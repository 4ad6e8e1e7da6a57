import ArgumentParser
import Foundation
import RefractSegment

// MARK: - Reading a .mat dataset in a child process first
//
// `gtsegs_ijcv.mat` is read with libhdf5 (Debian 12: 1.10.8), and libhdf5 itself can crash on a
// damaged file: fuzzing found a NULL `memcpy` (SIGSEGV) while counting a damaged group's links
// and a 4 GiB allocation declared by a damaged local heap (docs/Fuzzing.md). Refract cannot fix
// the library, so `refract segment` first reads the file — open, and every sample it will use —
// in a child process (`refract check-dataset`, hidden). A child killed by a signal is reported as
// a damaged file, naming it; a child's own error is passed on; only a file the child read whole
// is then read by the command itself. Folders (images/ + masks/) do not go through libhdf5 and
// are not checked this way. The cost is one extra read of the samples (about 8 ms each).

enum DatasetPreflight {
    /// Reads `dataset` (a `.mat` file) in a child process up to `limit` samples; throws naming the
    /// file when the child fails or is killed.
    static func check(_ dataset: String, limit: Int?) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dataset, isDirectory: &isDirectory), !isDirectory.boolValue else { return }
        let p = Process()
        p.executableURL = selfExecutable()
        p.arguments = ["check-dataset", dataset] + (limit.map { ["--limit", "\($0)"] } ?? [])
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFT_BACKTRACE"] = "enable=no"      // a crash is expected here, not a bug to trace
        p.environment = environment
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        p.standardError = errors
        do { try p.run() } catch {
            throw SegmentationDataError(path: dataset, message: "cannot start the check of the file in a child process: \(error)")
        }
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        if p.terminationReason == .uncaughtSignal {
            throw SegmentationDataError(path: dataset, message: "the file is damaged: the HDF5 library (libhdf5) crashed reading it "
                                        + "(signal \(p.terminationStatus), in a child process that reads the file first). "
                                        + "Use an intact copy of the file")
        }
        if p.terminationStatus != 0 {
            let message = stderr.split(separator: "\n").first { !$0.isEmpty }.map(String.init) ?? "exit status \(p.terminationStatus)"
            throw PreflightFailure(message: message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message)
        }
    }

    /// This program's own executable.
    static func selfExecutable() -> URL {
        #if os(Linux)
        let link = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        if FileManager.default.isExecutableFile(atPath: link.path) { return link }
        #endif
        return Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
    }
}

/// The child's own error, passed on as it said it (it names the file).
struct PreflightFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// `refract check-dataset DATASET [--limit N]` (hidden): opens a segmentation dataset and reads
/// its samples; exit 0 when all were read. Used by `refract segment` in a child process.
struct CheckDatasetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-dataset",
        abstract: "Read every sample of a segmentation dataset (used by `segment` in a child process).",
        shouldDisplay: false)

    @Argument(help: "gtsegs_ijcv.mat or a folder with images/ and masks/.") var dataset: String
    @Option(name: .long, help: "Read only the first N samples.") var limit: Int?

    func run() throws {
        let data = try SegmentationDatasets.open(URL(fileURLWithPath: dataset))
        for i in 0..<min(data.count, max(0, limit ?? data.count)) { _ = try data.sample(at: i) }
    }
}
