// refract merge: parse, call RefractStore's merges, print. And `--part K/N`, shared by decompose
// and embed-images.

import ArgumentParser
import Foundation
import RefractStore
#if canImport(Glibc)
import Glibc
#endif

/// `--part K/N`: K from 0 to N−1.
enum PartOption {
    static func parse(_ text: String) throws -> (index: Int, count: Int) {
        let pieces = text.split(separator: "/", omittingEmptySubsequences: false)
        guard pieces.count == 2, let k = Int(pieces[0].trimmingCharacters(in: .whitespaces)),
              let n = Int(pieces[1].trimmingCharacters(in: .whitespaces)) else {
            throw ValidationError("--part must be K/N with whole numbers (K from 0 to N-1, e.g. 0/4 ... 3/4), not '\(text)'")
        }
        guard (1...1_000_000).contains(n) else { throw ValidationError("--part \(text): N must be 1...1000000") }
        guard (0..<n).contains(k) else {
            throw ValidationError("--part \(text): K must be 0...\(n - 1) (parts are numbered from 0, as Slurm array and "
                                  + "Kubernetes Indexed Job indices)")
        }
        return (k, n)
    }
}

struct MergeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Join the parts of a run split across machines (decompose --part K/N) into one run, or embedding parts (embed-images --part K/N) into one file.",
        discussion: """
        Run parts (directories): checks that they come from the same model, weights, options and image list, \
        that they cover the run's shards exactly once (naming missing or overlapping images and parts), and that \
        each is complete and intact; then writes --output, a run every command reads as if one process had written \
        it. Shards are hard-linked (no copy; --output must be on the parts' file system) or copied with --copy. \
        The manifest is written last: a killed merge is finished by merging again, and merging again into a \
        finished merge does nothing. Embedding parts (.npy files with their .paths.txt and .model.json): the same \
        checks, then one array in list order. See docs/Cluster.md.
        """)

    @Option(name: .long, help: "The merged run directory (new or empty), or the merged .npy for embedding parts.") var output: String
    @Flag(name: .long, help: "Copy the shards instead of hard-linking them (for an output on another file system).") var copy = false
    @Argument(help: "The part directories (or embedding part .npy files), in any order.") var parts: [String]

    func run() async throws {
        guard !parts.isEmpty else { throw ValidationError("give the parts to merge") }
        let urls = parts.map { URL(fileURLWithPath: $0) }
        if parts.allSatisfy({ $0.hasSuffix(".npy") }) {
            if copy { throw ValidationError("--copy applies to run parts; embedding parts are always written into one new file") }
            let rows = try EmbeddingsMerge.merge(parts: urls, into: URL(fileURLWithPath: output))
            FileHandle.standardError.write(Data("wrote \(output): \(rows) embeddings from \(parts.count) part(s)\n".utf8))
            return
        }
        if let npy = parts.first(where: { $0.hasSuffix(".npy") }) {
            throw ValidationError("\(npy) is an embeddings file, but other parts are run directories; merge one kind at a time")
        }
        // For tests of a killed merge: SIGKILL ourselves after this many shards are linked or copied.
        let faultAfter = ProcessInfo.processInfo.environment["REFRACT_FAULT_AFTER_SHARDS"].flatMap(Int.init)
        let s = try StoreMerge.merge(parts: urls, into: URL(fileURLWithPath: output), copy: copy, createdBy: "refract merge",
                                     placed: { if let faultAfter, $0 >= faultAfter { kill(getpid(), SIGKILL) } })
        let line = s.alreadyMerged
            ? "\(output) already holds this merge (\(s.parts) parts, \(s.rows) rows in \(s.shards) shards); nothing to do"
            : "merged \(s.parts) part(s) into \(output): \(s.rows) rows in \(s.shards) shard(s)"
                + (s.skipped > 0 ? ", \(s.skipped) skipped image(s)" : "") + (s.copied ? " (copied)" : " (hard-linked)")
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
