import Foundation
import RefractCheckpoint
import RefractTensor
import RefractTimm
import XCTest

/// Every registered architecture, shrunk by `model_args` as a test model would be, written as a
/// random-weight checkpoint, loaded strictly and run.
final class RegistryTests: XCTestCase {
    func testEveryRegisteredArchitectureLoadsAndRuns() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-registry-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        XCTAssertGreaterThanOrEqual(TimmRegistry.entries.count, 25)
        for (name, entry) in TimmRegistry.entries.sorted(by: { $0.key < $1.key }) {
            let args: [String: Any]
            switch entry.family {
            case .vit:
                let patch = name.contains("patch14") ? 14 : name.contains("patch8") ? 8 : 16
                args = ["embed_dim": 24, "depth": 2, "num_heads": 2, "img_size": 2 * patch, "num_classes": 3]
            case .swin:
                let window = name.contains("window12") ? 12 : 7
                args = ["embed_dim": 8, "depths": [1, 2], "num_heads": [2, 2], "img_size": 4 * window * 2, "num_classes": 3]
            case .maxvit:
                args = ["img_size": 32, "embed_dim": [8, 16], "depths": [1, 2], "stem_width": 8, "head_hidden_size": 16,
                        "transformer_dim_head": 4, "num_classes": 3]
            }
            let dir = scratch.appendingPathComponent(name)
            try TimmModel.writeRandomCheckpoint(architecture: name, modelArgs: args, to: dir)
            let model = try TimmModel(location: ModelLocation(directory: dir, layout: .timm, modelId: name))
            XCTAssertEqual(model.family, entry.family, name)
            let s = model.preprocessing.imageSize
            let pixels = (0..<2).map { i in Tensor(shape: [3, s, s], data: (0..<(3 * s * s)).map { Float(sin(Double($0 + 7 * i))) }) }
            let features = model.represent(pixels: pixels)
            XCTAssertEqual(features.shape, [2, model.representationWidth], name)
            XCTAssertNil(features.firstNonFinite(), name)
            XCTAssertEqual(model.logits(features)?.shape, [2, 3], name)
        }
    }
}
