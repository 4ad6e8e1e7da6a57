import Foundation
import RefractCLIP
import RefractDecompose
import RefractTensor
import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// File names and file types a user should never have to worry about: control characters in
/// names (which would shift one-path-per-line lists), symbolic-link cycles, named pipes, devices
/// and directories where a file belongs, and count options out of range.
extension CLITests {
    private func copyImage(_ name: String, to url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.models.appendingPathComponent("inputs/\(name)"), to: url)
    }

    // MARK: Names with line breaks

    func testImageNameWithALineBreakIsRefusedNamingTheFile() throws {
        let folder = scratch.appendingPathComponent("names")
        try copyImage("img0_40x32.png", to: folder.appendingPathComponent("a.png"))
        try copyImage("img1_32x48.png", to: folder.appendingPathComponent("b\nc.png"))
        try copyImage("img2_64x64.png", to: folder.appendingPathComponent("d.png"))
        // Library: the listing refuses it, naming the file with the line feed escaped.
        XCTAssertThrowsError(try ImageListing.expand([folder.path])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("names/b\\nc.png"), text)
            XCTAssertTrue(text.contains("U+000A, a line feed"), text)
            XCTAssertFalse(text.contains("\n"), "the message stays on one line: \(text)")
        }
        for scalar in ["\r", "\t", "\u{1B}", "\u{85}", "\u{2028}"] {
            XCTAssertNotNil(ImageListing.lineBreakingScalar(in: "x\(scalar)y.png"), scalar.debugDescription)
        }
        XCTAssertNil(ImageListing.lineBreakingScalar(in: "/data/café 𝛼 (1).png"))

        // CLI: embed-images and decompose stop before anything is written.
        let out = scratch.appendingPathComponent("e.npy")
        let r = try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--output", out.path, folder.path])
        assertFailure(r, mentions: ["b\\nc.png", "control character", "rename"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.appendingPathComponent("e.paths.txt").path))
        let run = scratch.appendingPathComponent("run")
        let d = try refract(["decompose", "--model", path(Self.models, "openclip-tiny"), "--output", run.path, folder.path])
        assertFailure(d, mentions: ["b\\nc.png", "control character"])

        // A CSV list can hold a line break inside a quoted path, or a label: refused too.
        let good = folder.appendingPathComponent("a.png").path
        let csv = scratch.appendingPathComponent("list.csv")
        try "path,label\n\"\(folder.path)/b\nc.png\",bird\n\(good),cat\n".write(to: csv, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ImageDataset.load([csv.path])) { XCTAssertTrue("\($0)".contains("b\\nc.png"), "\($0)") }
        try "path,label\n\(good),\"two\nlines\"\n".write(to: csv, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ImageDataset.load([csv.path])) { error in
            XCTAssertTrue("\(error)".contains("the label contains a control character"), "\(error)")
        }
    }

    // MARK: Symbolic links

    func testSymlinkCycleIsRefusedAndEachImageListedOnce() throws {
        let folder = scratch.appendingPathComponent("cycle")
        try copyImage("img0_40x32.png", to: folder.appendingPathComponent("x.png"))
        try copyImage("img1_32x48.png", to: folder.appendingPathComponent("sub/y.png"))
        // Without links: each file once.
        XCTAssertEqual(try ImageListing.expand([folder.path]).map(\.lastPathComponent), ["y.png", "x.png"])
        try FileManager.default.createSymbolicLink(atPath: folder.appendingPathComponent("sub/back").path, withDestinationPath: "..")
        let started = Date()
        XCTAssertThrowsError(try ImageListing.expand([folder.path])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("cycle/sub/back"), text)
            XCTAssertTrue(text.contains("symbolic link"), text)
            XCTAssertTrue(text.contains("cycle"), text)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        let r = try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--output",
                             scratch.appendingPathComponent("c.npy").path, folder.path])
        assertFailure(r, mentions: ["sub/back", "symbolic link"])
        // A link to a folder outside the tree is followed (not a cycle).
        let outside = scratch.appendingPathComponent("outside")
        try copyImage("img2_64x64.png", to: outside.appendingPathComponent("z.png"))
        try FileManager.default.removeItem(at: folder.appendingPathComponent("sub/back"))
        try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent("linked"), withDestinationURL: outside)
        XCTAssertEqual(try ImageListing.expand([folder.path]).map(\.lastPathComponent), ["z.png", "y.png", "x.png"])
    }

    // MARK: File types

    func testPipesDevicesAndFoldersWhereAFileBelongsAreRefusedByType() throws {
        let fifo = scratch.appendingPathComponent("pipe.png")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        let folder = scratch.appendingPathComponent("folder.txt")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let model = path(Self.models, "openclip-tiny")
        let out = scratch.appendingPathComponent("o.npy").path
        // Each must finish (a FIFO once blocked `open` forever) and say what the path is.
        let cases: [([String], [String])] = [
            (["embed-images", "--model", model, "--output", out, fifo.path], [fifo.path, "named pipe (FIFO)"]),
            (["embed-images", "--model", model, "--output", out, "/dev/null"], ["/dev/null", "character device"]),
            (["embed-texts", "--model", model, "--texts", fifo.path, "--output", out], [fifo.path, "named pipe (FIFO)"]),
            (["embed-texts", "--model", model, "--texts", folder.path, "--output", out], [folder.path, "is a directory"]),
            (["classify", "--model", model, "--classes", folder.path, path(Self.models, "inputs/img0_40x32.png")],
             [folder.path, "is a directory"]),
            (["decompose", "--model", model, "--output", scratch.appendingPathComponent("r").path, fifo.path],
             [fifo.path, "named pipe (FIFO)"]),
        ]
        for (args, words) in cases {
            let r = try refract(args, timeout: 60)
            assertFailure(r, mentions: words)
            XCTAssertFalse(r.stderr.contains("NSCocoaErrorDomain"), r.stderr)
            XCTAssertFalse(r.stderr.contains("permission denied"), r.stderr)
        }
        // A CSV image list that is a pipe.
        let csvPipe = scratch.appendingPathComponent("list.csv")
        XCTAssertEqual(mkfifo(csvPipe.path, 0o600), 0)
        XCTAssertThrowsError(try ImageDataset.load([csvPipe.path])) { XCTAssertTrue("\($0)".contains("named pipe (FIFO)"), "\($0)") }
        // A FIFO found in a folder under an image name.
        let withPipe = scratch.appendingPathComponent("withpipe")
        try copyImage("img0_40x32.png", to: withPipe.appendingPathComponent("a.png"))
        XCTAssertEqual(mkfifo(withPipe.appendingPathComponent("b.png").path, 0o600), 0)
        XCTAssertThrowsError(try ImageListing.expand([withPipe.path])) { XCTAssertTrue("\($0)".contains("b.png: is a named pipe"), "\($0)") }
    }

    func testWeightsFileThatIsAPipeIsRefusedWithoutBlocking() throws {
        let dir = scratch.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.models.appendingPathComponent("openclip-tiny/open_clip_config.json"),
                                         to: dir.appendingPathComponent("open_clip_config.json"))
        let weights = dir.appendingPathComponent("open_clip_model.safetensors")
        XCTAssertEqual(mkfifo(weights.path, 0o600), 0)
        let r = try refract(["embed-texts", "--model", dir.path, "--texts", path(Self.models, "inputs/texts.txt"),
                             "--output", scratch.appendingPathComponent("t.npy").path], timeout: 60)
        assertFailure(r, mentions: [weights.path, "named pipe (FIFO), not a regular file"])
    }

    // MARK: Count options

    func testCountOptionsOutOfRangeAreRefusedNamingOptionValueAndRange() throws {
        let model = path(Self.models, "openclip-tiny")
        let img = path(Self.models, "inputs/img0_40x32.png")
        let out = scratch.appendingPathComponent("o.npy").path
        let nowhere = scratch.appendingPathComponent("no-run").path
        let cases: [([String], String)] = [
            (["spurious", "--run", nowhere, "--metadata", nowhere, "--classes", "a,b", "--ablate", "11.0", "--output", out,
              "--random-draws", "1000000000"], "--random-draws 1000000000 is out of range: allowed 0...10000"),
            (["spurious", "--run", nowhere, "--metadata", nowhere, "--classes", "a,b", "--ablate-by-text", "x", "--output", out,
              "--top", "0"], "--top 0 is out of range: allowed 1...100000"),
            (["embed-images", "--model", model, "--output", out, "--batch-size", "0", img], "--batch-size 0 is out of range: allowed 1...4096"),
            (["embed-images", "--model", model, "--output", out, "--batch-size", "9223372036854775807", img],
             "--batch-size 9223372036854775807 is out of range"),
            (["embed-images", "--model", model, "--output", out, "--threads", "0", img], "--threads 0 is out of range: allowed 1...1024"),
            (["classify", "--model", model, "--classes", nowhere, "--top-k=-3", img], "--top-k -3 is out of range"),
            (["decompose", "--model", model, "--output", nowhere, "--batch-size", "100000", img], "--batch-size 100000 is out of range"),
            (["decompose", "--model", model, "--output", nowhere, "--shard-size", "0", img], "--shard-size 0 is out of range"),
            (["retrieve", "--run", nowhere, "--index=-1", "--heads", "0.0", "--output", out], "--index -1 is out of range"),
            (["retrieve", "--run", nowhere, "--index", "0", "--heads", "0.0", "--top", "1000000000", "--output", out],
             "--top 1000000000 is out of range"),
            (["segment", "--model", model, "--dataset", nowhere, "--output", out, "--limit", "0"], "--limit 0 is out of range"),
            (["segment", "--model", model, "--dataset", nowhere, "--output", out, "--save-images=-1"], "--save-images -1 is out of range"),
            (["textspan", "--run", nowhere, "--descriptions", nowhere, "--output", out, "--per-head", "0"], "--per-head 0 is out of range"),
            (["textspan", "--run", nowhere, "--descriptions", nowhere, "--output", out, "--rank=-5"], "--rank -5 is out of range"),
        ]
        for (args, words) in cases {
            let r = try refract(args, timeout: 60)
            assertFailure(r, mentions: [words])
        }
    }
}
