// MARK: - The components of a stored run
//
// Every run, of any family, read as one flat list of named components: a timm run stores its
// components as one tensor [C, D'] and lists them in the manifest (`options.components`); a CLIP run
// stores them by kind (pre, mlp, attn, attn_bias, readout_bias), from which the same list and a
// [C, D'] tensor are derived. `refract export` writes both as components.npy and components.json.

import Foundation
import RefractStore
import RefractTensor

public enum RunComponents {
    /// Whether the run was made from a timm model.
    public static func isTimm(_ reader: StoreReader) -> Bool { reader.manifest.model.layout == "timm" }

    /// The refusal of a timm run given without an alignment to a command that works in CLIP's joint
    /// space, saying why and what to do.
    public static func needsAlignment(_ reader: StoreReader, command: String) -> DatasetError {
        let arch: String
        if case .object(let options) = reader.manifest.options, case .string(let a)? = options["architecture"] { arch = a } else { arch = "timm" }
        return DatasetError(path: reader.run.path, message: "a run of \(reader.manifest.model.id) (\(arch)), whose components live in its own "
            + "space, not CLIP's: \(command) compares components with CLIP text embeddings, which needs them mapped into CLIP "
            + "space first: make an alignment with refract align (CompAlign) and give it with --align; "
            + "export its components with refract export")
    }

    /// The run's components, in the order of its components tensor.
    public static func describe(_ reader: StoreReader) throws -> [ComponentInfo] {
        if isTimm(reader) {
            guard case .object(let options) = reader.manifest.options, let listed = options["components"] else {
                throw DatasetError(path: reader.run.path, message: "the manifest lists no components (options.components)")
            }
            return try JSONDecoder().decode([ComponentInfo].self, from: JSONEncoder().encode(listed))
        }
        let d = reader.manifest.dimensions
        guard let layers = d["layers"], let heads = d["heads"] else {
            throw DatasetError(path: reader.run.path, message: "the manifest gives no layers or heads")
        }
        let faithful = reader.manifest.convention == DecompositionConvention.faithful.rawValue
        var list = [ComponentInfo(name: "init", official: nil, kind: .`init`, block: 0, module: "visual.ln_pre (pre)")]
        for l in 0..<layers {
            for h in 0..<heads {
                list.append(ComponentInfo(name: "attn.\(l).\(h)", official: nil, kind: .head, block: l, head: h))
            }
            if faithful { list.append(ComponentInfo(name: "attn_bias.\(l)", official: nil, kind: .attnBias, block: l)) }
            list.append(ComponentInfo(name: "mlp.\(l)", official: nil, kind: .mlp, block: l))
        }
        if faithful { list.append(ComponentInfo(name: "readout_bias", official: nil, kind: .readoutBias)) }
        return list
    }

    /// What `refract export` adds: components.json for every run, and for CLIP runs the derived
    /// components tensor [N, C, D'] (a timm run stores it as it is).
    public static func exportExtras(_ reader: StoreReader) throws -> (derived: [DerivedTensor], files: [String: Data]) {
        let components = try describe(reader)
        struct Listing: Encodable {
            var model: String
            var convention: String
            var order: String
            var components: [ComponentInfo]
        }
        let order = reader.manifest.convention == DecompositionConvention.balasubramanian2024.rawValue
            ? "the official code's (its names sorted)" : "Refract's (blocks from the input; per block heads, attn_bias, mlp)"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let json = try encoder.encode(Listing(model: reader.manifest.model.id, convention: reader.manifest.convention, order: order,
                                              components: components))
        let files = ["components.json": json]
        if isTimm(reader) { return ([], files) }
        let d = reader.manifest.dimensions
        let layers = d["layers"]!, heads = d["heads"]!
        let width = try reader.spec("pre").shape[0]
        let faithful = reader.manifest.convention == DecompositionConvention.faithful.rawValue
        let inputs = ["pre", "mlp", "attn"] + (faithful ? ["attn_bias", "readout_bias"] : [])
        let count = components.count
        let derived = DerivedTensor(name: "components", shape: [count, width], inputs: inputs) { t in
            let rows = t["pre"]!.shape[0]
            var out = [Float](repeating: 0, count: rows * count * width)
            for r in 0..<rows {
                var slot = 0
                func put(_ tensor: Tensor, _ offset: Int) {
                    for j in 0..<width { out[(r * count + slot) * width + j] = tensor.data[offset + j] }
                    slot += 1
                }
                put(t["pre"]!, r * width)
                for l in 0..<layers {
                    for h in 0..<heads { put(t["attn"]!, ((r * layers + l) * heads + h) * width) }
                    if faithful { put(t["attn_bias"]!, (r * layers + l) * width) }
                    put(t["mlp"]!, (r * layers + l) * width)
                }
                if faithful { put(t["readout_bias"]!, r * width) }
            }
            return Tensor(shape: [rows, count, width], data: out)
        }
        return ([derived], files)
    }
}
