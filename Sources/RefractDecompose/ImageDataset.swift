// MARK: - Datasets: image folders and CSV/TSV lists, with labels
//
// `ImageDataset.load(paths)` turns the PATH arguments of `refract decompose` into an ordered image
// list with optional labels:
// - a folder: every image under it, in `ImageListing`'s stable order. An image inside a subfolder is
//   labelled with the name of the subfolder directly under the given folder (the ImageNet
//   `class/xxx.JPEG` layout); images directly in the folder have no label.
// - a `.csv` or `.tsv` file: a header row, then one image per row. The path column is the first of
//   `path`, `filepath`, `file`, `filename`, `image`, `image_path`, `img_filename` (Waterbirds) that
//   is present; relative paths are relative to the list's folder. A `label` or `class` column gives
//   the label; every other column is kept (e.g. Waterbirds' `y`, `place`, `split`). CSV quoting
//   follows RFC 4180; blank lines are skipped.
// - any other file: that image, unlabelled.
// Paths are stored absolute, so a run can be resumed from another working directory. A path or
// label with a line break or other control character is refused (it would shift every later line
// of the exported images.txt / labels.txt), as is a named pipe, device or socket given as a file.

import Foundation
import RefractTensor
import RefractCLIP
import RefractStore

public struct DatasetError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}

public struct ImageDataset: Sendable, Equatable {
    public var images: [StoreImage]
    /// Sorted distinct labels, or nil when no image has one.
    public var classNames: [String]? {
        let labels = Set(images.compactMap(\.label))
        return labels.isEmpty ? nil : labels.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
    }

    public init(images: [StoreImage]) { self.images = images }

    public static let pathColumns = ["path", "filepath", "file", "filename", "image", "image_path", "img_filename"]
    public static let labelColumns = ["label", "class"]

    public static func load(_ paths: [String]) throws -> ImageDataset {
        var images = [StoreImage]()
        for path in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                throw DatasetError(path: path, message: "no such file or folder")
            }
            let url = URL(fileURLWithPath: path).standardizedFileURL
            if isDir.boolValue {
                let rootComponents = url.pathComponents.count
                for file in try ImageListing.expand([url.path]) {
                    let parts = file.standardizedFileURL.pathComponents
                    let label = parts.count > rootComponents + 1 ? parts[rootComponents] : nil
                    images.append(StoreImage(path: file.standardizedFileURL.path, label: label))
                }
            } else if ["csv", "tsv"].contains(url.pathExtension.lowercased()) {
                images += try list(url)
            } else {
                do { try InputFile.requireRegular(path) } catch let e as InputFileError {
                    throw DatasetError(path: path, message: "\(e.reason); give image folders, CSV/TSV image lists or image files")
                }
                images.append(StoreImage(path: url.path))
            }
        }
        // One validation place for every source (folders, lists, files): each path and label must
        // fit on one line of the run's images.txt / labels.txt.
        for image in images {
            do {
                try ImageListing.checkListable(image.path, what: "image path")
                if let label = image.label { try ImageListing.checkListable(label, what: "label") }
            } catch let e as ImageListError {
                throw DatasetError(path: ImageListing.displayPath(image.path), message: e.message)
            }
        }
        return ImageDataset(images: images)
    }

    /// Rows of a CSV/TSV image list.
    static func list(_ url: URL) throws -> [StoreImage] {
        let data: Data
        do { data = try InputFile.read(url.path) } catch let e as InputFileError {
            throw DatasetError(path: url.path, message: "cannot read the image list: \(e.reason)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw DatasetError(path: url.path, message: "cannot read the image list: not valid UTF-8 text")
        }
        let separator: Character = url.pathExtension.lowercased() == "tsv" ? "\t" : ","
        let rows = try parseDelimited(text, separator: separator, file: url.path)
        guard let header = rows.first?.fields else { throw DatasetError(path: url.path, message: "empty list (a header row is required)") }
        let names = header.map { $0.trimmingCharacters(in: .whitespaces) }
        guard let pathIndex = pathColumns.lazy.compactMap({ names.firstIndex(of: $0) }).first else {
            throw DatasetError(path: url.path, message: "no path column: the header must name one of \(pathColumns.joined(separator: ", ")) (found \(names.joined(separator: ", ")))")
        }
        let labelIndex = labelColumns.lazy.compactMap { names.firstIndex(of: $0) }.first
        let base = url.deletingLastPathComponent()
        var out = [StoreImage]()
        for row in rows.dropFirst() {
            guard row.fields.count == names.count else {
                throw DatasetError(path: "\(url.path):\(row.line)", message: "\(row.fields.count) fields, the header has \(names.count)")
            }
            let p = row.fields[pathIndex]
            if p.isEmpty { throw DatasetError(path: "\(url.path):\(row.line)", message: "empty path") }
            let file = p.hasPrefix("/") ? URL(fileURLWithPath: p) : base.appendingPathComponent(p)
            var columns = [String: String]()
            for (i, name) in names.enumerated() where i != pathIndex && i != labelIndex { columns[name] = row.fields[i] }
            let label = labelIndex.map { row.fields[$0] }
            out.append(StoreImage(path: file.standardizedFileURL.path, label: label?.isEmpty == true ? nil : label,
                                  columns: columns.isEmpty ? nil : columns))
        }
        return out
    }

    /// RFC 4180 fields (quotes, doubled quotes, separators and newlines inside quotes; CRLF or LF),
    /// with the 1-based line each record starts on. Blank lines are skipped; a leading byte-order
    /// mark is dropped. Also used for other CSV inputs (Waterbirds' metadata.csv).
    public static func parseDelimited(_ text: String, separator: Character, file: String) throws -> [(line: Int, fields: [String])] {
        var records = [(line: Int, fields: [String])]()
        var fields = [String](), field = "", inQuotes = false, quotedField = false
        var line = 1, recordLine = 1
        var chars = Array(text)
        if chars.first == "\u{FEFF}" { chars.removeFirst() }
        var i = 0
        func endRecord() {
            fields.append(field)
            if !(fields.count == 1 && fields[0].isEmpty && !quotedField) { records.append((recordLine, fields)) }
            fields = []; field = ""; quotedField = false
        }
        while i < chars.count {
            let c = chars[i]
            if inQuotes {
                if c == "\"" {
                    if i + 1 < chars.count && chars[i + 1] == "\"" { field.append("\""); i += 1 } else { inQuotes = false }
                } else {
                    if c == "\n" || c == "\r\n" { line += 1 }
                    field.append(c)
                }
            } else if c == "\"" && field.isEmpty {
                inQuotes = true; quotedField = true
            } else if c == separator {
                fields.append(field); field = ""
            } else if c == "\n" || c == "\r\n" || c == "\r" {
                endRecord(); line += 1; recordLine = line
            } else {
                field.append(c)
            }
            i += 1
        }
        if inQuotes { throw DatasetError(path: "\(file):\(recordLine)", message: "unterminated quoted field") }
        if !field.isEmpty || !fields.isEmpty { endRecord() }
        return records
    }
}
