// MARK: - Image lists
//
// Turns command-line paths into a stable, documented list of image files:
// - arguments keep the order they were given in;
// - a folder expands recursively to the files whose extension is an image extension
//   (jpg, jpeg, png; case-insensitive), sorted by their path relative to the folder, compared
//   by Unicode scalar values (so the order does not depend on the file system or the locale);
// - hidden files and folders (name starting with ".") are skipped;
// - a file named explicitly is always taken (its format is sniffed from its bytes).
//
// Refused, each with an error naming the path:
// - a path with a line break or other control character (U+0000–U+001F, U+007F–U+009F, U+2028,
//   U+2029): the lists refract writes (OUTPUT.paths.txt, a run's images.txt) hold one path per
//   line, and such a name would shift every later line onto the wrong image;
// - a folder reached a second time through a symbolic link (the same device and inode: a cycle,
//   or two links to one folder), so no image is ever listed twice;
// - a named pipe, device or socket, named explicitly or found with an image extension.

import Foundation
import RefractTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct ImageListError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { "\(ImageListing.displayPath(path)): \(message)" }
}

public enum ImageListing {
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    public static func expand(_ paths: [String]) throws -> [URL] {
        var out = [URL]()
        for path in paths {
            try checkListable(path)
            var st = stat()
            if stat(path, &st) != 0 {
                throw ImageListError(path: path, message: errno == ENOENT ? "no such file or folder" : InputFile.errnoReason(errno))
            }
            let url = URL(fileURLWithPath: path)
            if st.st_mode & S_IFMT == S_IFDIR {
                out.append(contentsOf: try walk(url))
            } else if let problem = InputFile.typeProblem(mode: st.st_mode) {
                throw ImageListError(path: path, message: "\(problem); give image files or folders")
            } else {
                out.append(url)
            }
        }
        return out
    }

    // MARK: Names that fit in a one-path-per-line list

    /// The first scalar of `path` that would break a one-path-per-line list, if any: C0 controls
    /// (line feed, carriage return, tab...), DEL, C1 controls (U+0085 next line...), and the
    /// Unicode line and paragraph separators (Python's `splitlines` splits on all of these).
    public static func lineBreakingScalar(in path: String) -> Unicode.Scalar? {
        path.unicodeScalars.first(where: breaksALine)
    }

    static func breaksALine(_ s: Unicode.Scalar) -> Bool {
        s.value < 0x20 || (0x7F...0x9F).contains(s.value) || s.value == 0x2028 || s.value == 0x2029
    }

    /// Throws when `path` cannot be written as one line of a list (see `lineBreakingScalar`).
    /// `what` names the kind of entry in the message ("image path", "label").
    public static func checkListable(_ path: String, what: String = "file name") throws {
        guard let bad = lineBreakingScalar(in: path) else { return }
        let code = "U+" + String(bad.value, radix: 16, uppercase: true).leftPadded(to: 4)
        throw ImageListError(path: path, message: "the \(what) contains a control character (\(code)\(controlName(bad))); "
            + "refract writes one path per line (OUTPUT.paths.txt, a run's images.txt), where it would shift every later line "
            + "onto the wrong image: rename the file or folder without it (e.g. with `mv`), then run again")
    }

    /// A path for messages: control characters shown as escapes, so the message stays on one line.
    public static func displayPath(_ path: String) -> String {
        guard lineBreakingScalar(in: path) != nil else { return path }
        var out = ""
        for s in path.unicodeScalars {
            switch s {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if breaksALine(s) {
                    out += "\\u{" + String(s.value, radix: 16) + "}"
                } else {
                    out.unicodeScalars.append(s)
                }
            }
        }
        return out
    }

    private static func controlName(_ s: Unicode.Scalar) -> String {
        switch s.value {
        case 0x0A: return ", a line feed"
        case 0x0D: return ", a carriage return"
        case 0x09: return ", a tab"
        case 0x85: return ", next line"
        case 0x2028: return ", line separator"
        case 0x2029: return ", paragraph separator"
        default: return ""
        }
    }

    // MARK: Folder walk

    private struct FileID: Hashable { var device: UInt64; var inode: UInt64 }

    private static func walk(_ root: URL) throws -> [URL] {
        var found = [(String, URL)]()
        var seen = [FileID: String]()  // every folder entered, by device and inode -> its path
        func visit(_ dir: URL, _ rel: String, _ id: FileID) throws {
            if let first = seen[id] {
                throw ImageListError(path: dir.path, message: "is the folder \(displayPath(first)) again, reached through a symbolic "
                    + "link (a link cycle, or two links to one folder); refract lists each image once: remove the link or give "
                    + "the folders separately")
            }
            seen[id] = dir.path
            let names: [String]
            do { names = try FileManager.default.contentsOfDirectory(atPath: dir.path) } catch {
                throw ImageListError(path: dir.path, message: "cannot list the folder: \(InputFile.errnoReason(folderErrno(dir.path)))")
            }
            for name in names.sorted(by: { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }) where !name.hasPrefix(".") {
                let child = dir.appendingPathComponent(name)
                let childRel = rel.isEmpty ? name : rel + "/" + name
                var st = stat()
                if stat(child.path, &st) != 0 {
                    let code = errno
                    // A dangling link is skipped only when it could not be an image anyway.
                    if !imageExtensions.contains(child.pathExtension.lowercased()) { continue }
                    throw ImageListError(path: child.path, message: "cannot read: \(InputFile.errnoReason(code))")
                }
                if st.st_mode & S_IFMT == S_IFDIR {
                    try checkListable(child.path, what: "folder name")
                    try visit(child, childRel, FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)))
                } else if imageExtensions.contains(child.pathExtension.lowercased()) {
                    try checkListable(child.path)
                    if let problem = InputFile.typeProblem(mode: st.st_mode) {
                        throw ImageListError(path: child.path, message: "\(problem); only regular image files are read")
                    }
                    found.append((childRel, child))
                }
            }
        }
        var st = stat()
        if stat(root.path, &st) != 0 { throw ImageListError(path: root.path, message: InputFile.errnoReason(errno)) }
        try visit(root, "", FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)))
        return found.sorted { $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars) }.map(\.1)
    }

    private static func folderErrno(_ path: String) -> Int32 {
        guard let d = opendir(path) else { return errno }
        closedir(d)
        return EIO
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
