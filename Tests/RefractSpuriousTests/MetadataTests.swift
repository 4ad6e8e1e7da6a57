import Foundation
import RefractSpurious
import XCTest

/// metadata.csv reading, the join with a run's paths, splits, class lists: rules and errors.
final class MetadataTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-spurious-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    func write(_ text: String, _ name: String = "metadata.csv") throws -> URL {
        let url = scratch.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func assertError(_ body: @autoclosure () throws -> Any, mentions parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            for p in parts { XCTAssertTrue("\(error)".contains(p), "'\(error)' should mention '\(p)'", file: file, line: line) }
        }
    }

    static let csv = """
        img_filename,y,split,place,place_filename
        001.Albatross/a.jpg,1,2,1,/o/ocean/1.jpg
        001.Albatross/b.jpg,1,2,0,/b/bamboo/2.jpg
        "002.Sparrow, House/c.jpg",0,1,0,/f/forest/3.jpg\r
        002.Sparrow/d.jpg,0,0,1,/l/lake/4.jpg
        003.Wren/e.jpg,0,2,1,/l/lake/5.jpg

        """

    func testReadsRowsWithQuotesCRLFAndExtraColumns() throws {
        let meta = try WaterbirdsMetadata.load(try write(Self.csv))
        XCTAssertEqual(meta.rows.count, 5)
        XCTAssertEqual(meta.rows[2], WaterbirdsRow(line: 4, imgFilename: "002.Sparrow, House/c.jpg", y: 0, split: 1, place: 0))
        XCTAssertEqual(meta.rows.map(\.y), [1, 1, 0, 0, 0])
        XCTAssertEqual(meta.rows.map(\.place), [1, 0, 0, 1, 1])
        XCTAssertEqual(meta.rows.last?.line, 6)
    }

    func testJoinExactThenSuffixAndSplit() throws {
        let meta = try WaterbirdsMetadata.load(try write(Self.csv))
        let dir = scratch.path
        // Exact (with a `..` to standardise), and by suffix from a copy elsewhere.
        let paths = ["\(dir)/001.Albatross/../001.Albatross/a.jpg", "/elsewhere/wb/002.Sparrow, House/c.jpg",
                     "\(dir)/003.Wren/e.jpg", "/copy/001.Albatross/b.jpg"]
        let all = try meta.join(runPaths: paths, runName: "RUN")
        XCTAssertEqual(all.rows, [0, 1, 2, 3])
        XCTAssertEqual(all.metadataLines, [2, 4, 6, 3])
        XCTAssertEqual(all.y, [1, 0, 0, 1])
        XCTAssertEqual(all.place, [1, 0, 1, 0])
        XCTAssertEqual(all.groups, [3, 0, 1, 2])
        XCTAssertEqual(all.matchedBySuffix, 2)
        XCTAssertEqual(all.metadataRowsNotInRun, 1)
        XCTAssertNil(all.splitRowsNotInRun)
        let test = try meta.join(runPaths: paths, runName: "RUN", split: .test)
        XCTAssertEqual(test.rows, [0, 2, 3])
        XCTAssertEqual(test.runRowsOutsideSplit, 1)
        XCTAssertEqual(test.splitRowsNotInRun, 0)
        let val = try meta.join(runPaths: paths, runName: "RUN", split: .val)
        XCTAssertEqual(val.rows, [1])
        // No run image in the train split.
        assertError(try meta.join(runPaths: paths, runName: "RUN", split: .train), mentions: ["RUN", "train split"])
    }

    func testSplitNames() throws {
        XCTAssertEqual(try WaterbirdsSplit.parse("test"), .test)
        XCTAssertEqual(try WaterbirdsSplit.parse("2"), .test)
        XCTAssertEqual(try WaterbirdsSplit.parse("valid"), .val)
        XCTAssertEqual(try WaterbirdsSplit.parse("0"), .train)
        assertError(try WaterbirdsSplit.parse("holdout"), mentions: ["holdout", "train, val, test"])
    }

    func testRunImageWithoutRowIsAnErrorNamingItAndTheCount() throws {
        let meta = try WaterbirdsMetadata.load(try write(Self.csv))
        assertError(try meta.join(runPaths: ["\(scratch.path)/001.Albatross/a.jpg", "/x/unknown_1.jpg", "/x/unknown_2.jpg"],
                                  runName: "RUN"),
                    mentions: ["metadata.csv", "2 images of RUN have no row", "/x/unknown_1.jpg"])
        // "a.jpg" alone is not a suffix of ".../xa.jpg" (suffixes start after a '/').
        let short = try WaterbirdsMetadata.load(try write("img_filename,y,split,place\na.jpg,0,2,0\n", "m2/metadata.csv"))
        assertError(try short.join(runPaths: ["/x/xa.jpg"], runName: "RUN"), mentions: ["1 image of RUN has no row", "/x/xa.jpg"])
        XCTAssertEqual(try short.join(runPaths: ["/x/y/a.jpg"], runName: "RUN").matchedBySuffix, 1)
    }

    func testAmbiguousAndDuplicateMatches() throws {
        let meta = try WaterbirdsMetadata.load(try write("img_filename,y,split,place\nb/a.jpg,0,2,0\na.jpg,1,2,1\n", "m/metadata.csv"))
        assertError(try meta.join(runPaths: ["/data/b/a.jpg"], runName: "RUN"), mentions: ["/data/b/a.jpg", "several rows", "line 2", "line 3"])
        // Exact matches win over suffixes.
        XCTAssertEqual(try meta.join(runPaths: ["\(scratch.path)/m/b/a.jpg"], runName: "RUN").metadataLines, [2])
        // Two run images on one row.
        assertError(try meta.join(runPaths: ["\(scratch.path)/m/a.jpg", "/other/a.jpg"], runName: "RUN"),
                    mentions: ["line 3", "two run images"])
        // A file listed twice.
        assertError(try WaterbirdsMetadata.load(try write("img_filename,y,split,place\na.jpg,0,2,0\n./a.jpg,1,2,1\n", "d/metadata.csv")),
                    mentions: ["metadata.csv:3", "listed again", "line 2"])
    }

    func testBadMetadata() throws {
        assertError(try WaterbirdsMetadata.load(try write("img_filename,label,split\na.jpg,0,2\n")),
                    mentions: ["metadata.csv", "missing columns y, place"])
        assertError(try WaterbirdsMetadata.load(try write("img_filename,y,split,place\na.jpg,0,2,0\nb.jpg,bird,2,0\n")),
                    mentions: ["metadata.csv:3", "y is 'bird', not an integer"])
        assertError(try WaterbirdsMetadata.load(try write("img_filename,y,split,place\na.jpg,2,2,0\n")),
                    mentions: ["metadata.csv:2", "y is 2"])
        assertError(try WaterbirdsMetadata.load(try write("img_filename,y,split,place\na.jpg,0,2,1.0\n")),
                    mentions: ["metadata.csv:2", "place is '1.0'"])
        assertError(try WaterbirdsMetadata.load(try write("img_filename,y,split,place\na.jpg,0,5,0\n")),
                    mentions: ["metadata.csv:2", "split is 5"])
        assertError(try WaterbirdsMetadata.load(try write("img_filename,y,split,place\na.jpg,0,2\n")),
                    mentions: ["metadata.csv:2", "3 fields, the header has 4"])
        assertError(try WaterbirdsMetadata.load(try write("img_filename,y,split,place\n")), mentions: ["metadata.csv", "no rows"])
        assertError(try WaterbirdsMetadata.load(try write("")), mentions: ["metadata.csv", "empty file"])
        assertError(try WaterbirdsMetadata.load(try write("img_filename,y,split,place\n\"a.jpg,0,2,0\n")),
                    mentions: ["metadata.csv:2", "unterminated"])
        assertError(try WaterbirdsMetadata.load(scratch.appendingPathComponent("none.csv")), mentions: ["none.csv", "cannot read"])
        // Not a regular file: refused by type before it is opened (a FIFO would block the read).
        let folder = scratch.appendingPathComponent("folder.csv")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        assertError(try WaterbirdsMetadata.load(folder), mentions: [folder.path, "cannot read the metadata file: is a directory"])
        let fifo = scratch.appendingPathComponent("pipe.csv")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        assertError(try WaterbirdsMetadata.load(fifo), mentions: [fifo.path, "is a named pipe (FIFO), not a regular file"])
        let notReport = scratch.appendingPathComponent("textspan-fifo.json")
        XCTAssertEqual(mkfifo(notReport.path, 0o600), 0)
        assertError(try HeadSelection.loadTextSpanReport(notReport), mentions: [notReport.path, "named pipe (FIFO)"])
    }

    func testClassLists() throws {
        XCTAssertEqual(try SpuriousClasses.parse("landbird, waterbird").classes, ["landbird", "waterbird"])
        let file = try write("land bird\nwater bird\n", "classes.txt")
        let (fromFile, source) = try SpuriousClasses.parse(file.path)
        XCTAssertEqual(fromFile, ["land bird", "water bird"])
        XCTAssertEqual(source, file.path)
        assertError(try SpuriousClasses.parse("landbird,,waterbird"), mentions: ["empty class name"])
        XCTAssertNoThrow(try SpuriousStudy.checkClasses(["landbird", "waterbird"], source: "x"))
        assertError(try SpuriousStudy.checkClasses(["landbird", "waterbird", "seabird"], source: "classes.txt"),
                    mentions: ["classes.txt", "3 classes", "exactly 2"])
        assertError(try SpuriousStudy.checkClasses(["bird"], source: "--classes"), mentions: ["1 class ", "exactly 2"])
        assertError(try SpuriousStudy.checkClasses(["bird", "bird"], source: "--classes"), mentions: ["both 'bird'"])
    }
}
