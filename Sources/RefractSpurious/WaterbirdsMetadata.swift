// MARK: - Waterbirds metadata and its join with a run
//
// `metadata.csv` (Sagawa et al.'s layout) has at least the columns `img_filename`, `y`
// (0 landbird, 1 waterbird), `split` (0 train, 1 val, 2 test) and `place` (0 land, 1 water);
// other columns (`place_filename`, ...) are allowed and ignored. Each image of a run is matched to
// one metadata row by its path:
//   1. exactly: the run path equals `<metadata dir>/<img_filename>` once both are standardised
//      (`.` and `..` removed; symbolic links are not resolved);
//   2. otherwise by suffix: the run path ends with `/<img_filename>`; more than one row matching
//      that way is an error (ambiguous).
// A run image with no row is an error naming it (and how many there are); two run images on one
// row are an error. Metadata rows that are not in the run are ignored and counted.

import Foundation
import RefractTensor
import RefractDecompose

// MARK: Errors

/// Every error of RefractSpurious: the file (or run) concerned, then what is wrong.
public struct SpuriousError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
    public init(path: String, message: String) { self.path = path; self.message = message }
}

// MARK: Splits

/// Waterbirds' `split` column.
public enum WaterbirdsSplit: Int, Sendable, CaseIterable, Codable {
    case train = 0, val = 1, test = 2

    public var name: String { ["train", "val", "test"][rawValue] }

    /// `train`, `val` (or `valid`, `validation`), `test`, or the column's value `0`, `1`, `2`.
    public static func parse(_ text: String) throws -> WaterbirdsSplit {
        switch text.trimmingCharacters(in: .whitespaces).lowercased() {
        case "train", "0": return .train
        case "val", "valid", "validation", "1": return .val
        case "test", "2": return .test
        default:
            throw SpuriousError(path: "--split", message: "'\(text)' is not a split; use train, val, test (or 0, 1, 2)")
        }
    }
}

// MARK: Metadata

public struct WaterbirdsRow: Sendable, Equatable {
    /// 1-based line of the row in the file.
    public var line: Int
    public var imgFilename: String
    /// 0: first class (landbird), 1: second class (waterbird).
    public var y: Int
    public var split: Int
    /// 0 land, 1 water.
    public var place: Int

    public init(line: Int, imgFilename: String, y: Int, split: Int, place: Int) {
        self.line = line; self.imgFilename = imgFilename; self.y = y; self.split = split; self.place = place
    }
}

public struct WaterbirdsMetadata: Sendable {
    public static let requiredColumns = ["img_filename", "y", "split", "place"]
    public static let placeNames = ["land", "water"]

    public let path: String
    public let rows: [WaterbirdsRow]

    public init(path: String, rows: [WaterbirdsRow]) { self.path = path; self.rows = rows }

    /// Reads and checks `metadata.csv` (comma-separated, a header row, RFC 4180 quoting).
    public static func load(_ url: URL) throws -> WaterbirdsMetadata {
        let file = url.path
        let data: Data
        do { data = try InputFile.read(file) } catch let e as InputFileError {
            throw SpuriousError(path: file, message: "cannot read the metadata file: \(e.reason)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw SpuriousError(path: file, message: "not UTF-8 text")
        }
        let records: [(line: Int, fields: [String])]
        do { records = try ImageDataset.parseDelimited(text, separator: ",", file: file) } catch let e as DatasetError {
            throw SpuriousError(path: e.path, message: e.message)
        }
        guard let header = records.first?.fields.map({ $0.trimmingCharacters(in: .whitespaces) }) else {
            throw SpuriousError(path: file, message: "empty file: expected a header with \(requiredColumns.joined(separator: ", "))")
        }
        let missing = requiredColumns.filter { !header.contains($0) }
        if !missing.isEmpty {
            throw SpuriousError(path: file, message: "missing column\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) "
                + "(the header has \(header.joined(separator: ", ")); Waterbirds' metadata.csv needs \(requiredColumns.joined(separator: ", ")))")
        }
        let column = Dictionary(header.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        var rows = [WaterbirdsRow]()
        var seen = [String: Int]()
        for record in records.dropFirst() {
            let at = "\(file):\(record.line)"
            guard record.fields.count == header.count else {
                throw SpuriousError(path: at, message: "\(record.fields.count) fields, the header has \(header.count)")
            }
            func integer(_ name: String, allowed: ClosedRange<Int>, meaning: String) throws -> Int {
                let raw = record.fields[column[name]!].trimmingCharacters(in: .whitespaces)
                guard let v = Int(raw) else {
                    throw SpuriousError(path: at, message: "\(name) is '\(raw)', not an integer (\(meaning))")
                }
                guard allowed.contains(v) else {
                    throw SpuriousError(path: at, message: "\(name) is \(v); expected \(meaning)")
                }
                return v
            }
            var name = record.fields[column["img_filename"]!].trimmingCharacters(in: .whitespaces)
            while name.hasPrefix("./") { name.removeFirst(2) }
            if name.isEmpty { throw SpuriousError(path: at, message: "empty img_filename") }
            if let first = seen[name] {
                throw SpuriousError(path: at, message: "img_filename '\(name)' is listed again (first on line \(first))")
            }
            seen[name] = record.line
            rows.append(WaterbirdsRow(line: record.line, imgFilename: name,
                                      y: try integer("y", allowed: 0...1, meaning: "0 for the first class, 1 for the second"),
                                      split: try integer("split", allowed: 0...2, meaning: "0 train, 1 val, 2 test"),
                                      place: try integer("place", allowed: 0...1, meaning: "0 land, 1 water")))
        }
        if rows.isEmpty { throw SpuriousError(path: file, message: "no rows after the header") }
        return WaterbirdsMetadata(path: file, rows: rows)
    }

    /// Matches every run image (`runPaths`, row order) to a metadata row and keeps the rows of
    /// `split` (all rows when nil). `runName` names the run in errors.
    public func join(runPaths: [String], runName: String, split: WaterbirdsSplit? = nil) throws -> EvaluationSet {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
        var exact = [String: Int](), byName = [String: [Int]]()
        for (i, row) in rows.enumerated() {
            exact[dir.appendingPathComponent(row.imgFilename).standardizedFileURL.path] = i
            byName[row.imgFilename, default: []].append(i)
        }
        var matchOf = [Int](repeating: -1, count: runPaths.count)
        var ownerOf = [Int: Int]()                         // metadata row -> run row
        var unmatched = [String](), bySuffix = 0
        for (r, raw) in runPaths.enumerated() {
            let p = URL(fileURLWithPath: raw).standardizedFileURL.path
            var match = exact[p]
            if match == nil {
                // Every suffix of the path that starts after a '/'.
                var candidates = Set<Int>()
                for i in p.indices where p[i] == "/" {
                    if let hits = byName[String(p[p.index(after: i)...])] { candidates.formUnion(hits) }
                }
                if candidates.count > 1 {
                    let lines = candidates.sorted().map { "line \(rows[$0].line) (\(rows[$0].imgFilename))" }
                    throw SpuriousError(path: path, message: "run image \(raw) matches several rows by suffix: "
                        + lines.joined(separator: ", ") + "; keep the run's paths and img_filename consistent")
                }
                match = candidates.first
                if match != nil { bySuffix += 1 }
            }
            guard let m = match else { unmatched.append(raw); continue }
            if let other = ownerOf[m] {
                throw SpuriousError(path: path, message: "line \(rows[m].line) (\(rows[m].imgFilename)) matches two run images: "
                    + "\(runPaths[other]) and \(raw)")
            }
            ownerOf[m] = r
            matchOf[r] = m
        }
        if !unmatched.isEmpty {
            let shown = unmatched.prefix(3).joined(separator: ", ")
            throw SpuriousError(path: path, message: "\(unmatched.count) image\(unmatched.count == 1 ? "" : "s") of \(runName) "
                + "\(unmatched.count == 1 ? "has" : "have") no row (e.g. \(shown)); a run image must be <metadata dir>/<img_filename> "
                + "or end with /<img_filename>")
        }
        var set = EvaluationSet(split: split)
        for (r, m) in matchOf.enumerated() {
            let row = rows[m]
            if let split, row.split != split.rawValue { set.runRowsOutsideSplit += 1; continue }
            set.rows.append(r)
            set.metadataLines.append(row.line)
            set.y.append(row.y)
            set.place.append(row.place)
        }
        set.matchedBySuffix = bySuffix
        set.metadataRowsNotInRun = rows.count - ownerOf.count
        if let split {
            set.splitRowsNotInRun = rows.indices.filter { rows[$0].split == split.rawValue && ownerOf[$0] == nil }.count
        }
        if set.rows.isEmpty {
            guard let split else { throw SpuriousError(path: runName, message: "the run has no images") }
            throw SpuriousError(path: path, message: "no image of \(runName) is in the \(split.name) split "
                + "(\(runPaths.count) run images, all in other splits)")
        }
        return set
    }
}

// MARK: The evaluation set

/// The run rows evaluated, with their metadata.
public struct EvaluationSet: Sendable, Equatable {
    /// Run rows (ascending), and for each its metadata line, y and place.
    public var rows: [Int] = []
    public var metadataLines: [Int] = []
    public var y: [Int] = []
    public var place: [Int] = []
    public var split: WaterbirdsSplit?
    /// Run rows left out because their split is another one.
    public var runRowsOutsideSplit = 0
    /// Metadata rows no run image matched (any split), and those of `split`.
    public var metadataRowsNotInRun = 0
    public var splitRowsNotInRun: Int?
    /// Run images matched by suffix rather than exactly.
    public var matchedBySuffix = 0

    public init(split: WaterbirdsSplit? = nil) { self.split = split }

    public var count: Int { rows.count }

    /// Group index of each evaluated image: 2·y + place (landbird on land, landbird on water,
    /// waterbird on land, waterbird on water).
    public var groups: [Int] { zip(y, place).map { 2 * $0 + $1 } }
}
