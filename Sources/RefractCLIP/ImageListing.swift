// MARK: - Image lists
//
// Turns command-line paths into a stable, documented list of image files:
// - arguments keep the order they were given in;
// - a folder expands recursively to the files whose extension is an image extension
//   (jpg, jpeg, png; case-insensitive), sorted by their path relative to the folder, compared
//   by Unicode scalar values (so the order does not depend on the file system or the locale);
// - hidden files and folders (name starting with ".") are skipped;
// - a file named explicitly is always taken (its format is sniffed from its bytes).

import Foundation

public struct ImageListError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}

public enum ImageListing {
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    public static func expand(_ paths: [String]) throws -> [URL] {
        var out = [URL]()
        let fm = FileManager.default
        for path in paths {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
                throw ImageListError(path: path, message: "no such file or folder")
            }
            let url = URL(fileURLWithPath: path)
            if !isDir.boolValue { out.append(url); continue }
            out.append(contentsOf: try walk(url))
        }
        return out
    }

    private static func walk(_ root: URL) throws -> [URL] {
        var found = [(String, URL)]()
        func visit(_ dir: URL, _ rel: String) throws {
            let names: [String]
            do { names = try FileManager.default.contentsOfDirectory(atPath: dir.path) } catch {
                throw ImageListError(path: dir.path, message: "cannot list folder: \(error.localizedDescription)")
            }
            for name in names where !name.hasPrefix(".") {
                let child = dir.appendingPathComponent(name)
                let childRel = rel.isEmpty ? name : rel + "/" + name
                var isDir: ObjCBool = false
                _ = FileManager.default.fileExists(atPath: child.path, isDirectory: &isDir)
                if isDir.boolValue {
                    try visit(child, childRel)
                } else if imageExtensions.contains(child.pathExtension.lowercased()) {
                    found.append((childRel, child))
                }
            }
        }
        try visit(root, "")
        return found.sorted { $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars) }.map(\.1)
    }
}
