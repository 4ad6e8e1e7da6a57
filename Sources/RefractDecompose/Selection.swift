// MARK: - Layer selections on the command line
//
// `all`, `none`, `last:N` (the last N layers), single layers and inclusive ranges separated by
// commas: `11`, `8-11`, `0,5,10-11`. Negative numbers count from the end (`-1` is the last layer).

import Foundation

public struct SelectionError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}

public enum LayerSelection {
    /// Sorted, distinct layer indices selected by `text` in a model with `layers` layers.
    public static func parse(_ text: String, layers: Int) throws -> [Int] {
        let spec = text.trimmingCharacters(in: .whitespaces).lowercased()
        func bad(_ why: String) -> SelectionError {
            SelectionError(message: "layer selection '\(text)': \(why) (the model has layers 0...\(layers - 1); "
                + "use all, none, last:N, 11, 8-11 or 0,5,10-11)")
        }
        if spec == "all" { return Array(0..<layers) }
        if spec == "none" || spec.isEmpty { return [] }
        if spec.hasPrefix("last:") {
            guard let n = Int(spec.dropFirst(5)), n > 0 else { throw bad("N in last:N must be a positive integer") }
            guard n <= layers else { throw bad("last:\(n) asks for more layers than there are") }
            return Array((layers - n)..<layers)
        }
        var out = Set<Int>()
        func layer(_ s: Substring) throws -> Int {
            guard let v = Int(s.trimmingCharacters(in: .whitespaces)) else { throw bad("'\(s)' is not a layer number") }
            let l = v < 0 ? layers + v : v
            guard l >= 0 && l < layers else { throw bad("layer \(v) does not exist") }
            return l
        }
        for part in spec.split(separator: ",", omittingEmptySubsequences: false) {
            // A range "a-b" (a dash after the first character, so "-1" stays a single layer).
            if let dash = part.dropFirst().firstIndex(of: "-") {
                let a = try layer(part[part.startIndex..<dash]), b = try layer(part[part.index(after: dash)...])
                guard a <= b else { throw bad("range \(part) is reversed") }
                out.formUnion(a...b)
            } else {
                out.insert(try layer(part))
            }
        }
        return out.sorted()
    }
}
