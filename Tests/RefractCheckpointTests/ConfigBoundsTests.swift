import Foundation
import XCTest
@testable import RefractCheckpoint

/// The shared config checker and the memory budget: every refusal names file, key, value and range.
final class ConfigBoundsTests: XCTestCase {
    let b = ConfigBounds(file: "/models/x/config.json")

    func assertRefused(_ body: @autoclosure () throws -> Any, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            XCTAssertTrue(e is ConfigValueError, "\(type(of: e))", file: file, line: line)
            for part in ["/models/x/config.json"] + parts {
                XCTAssertTrue("\(e)".contains(part), "'\(part)' missing from: \(e)", file: file, line: line)
            }
        }
    }

    func testIntegersAreCheckedAgainstTheirRange() throws {
        XCTAssertEqual(try b.int("vision_config.num_hidden_layers", nil, default: 12, in: ConfigLimits.layers), 12)
        XCTAssertEqual(try b.int("vision_config.num_hidden_layers", 48, default: 12, in: ConfigLimits.layers), 48)
        assertRefused(try b.int("vision_config.num_hidden_layers", -1, default: 12, in: ConfigLimits.layers),
                      ["vision_config.num_hidden_layers", "= -1", "1...256"])
        assertRefused(try b.int("vision_config.num_hidden_layers", 1_000_000_000, default: 12, in: ConfigLimits.layers),
                      ["= 1000000000", "1...256"])
        assertRefused(try b.int("image_size", 1 << 62, in: ConfigLimits.imageSize), ["image_size", "\(1 << 62)", "1...4096"])
        assertRefused(try b.int("patch_size", 0, in: ConfigLimits.patchSize), ["patch_size = 0", "1...1024"])
    }

    func testDoublesRefuseNaNAndOutOfRange() throws {
        XCTAssertEqual(try b.double("layer_norm_eps", 1e-6, default: 1e-5, in: ConfigLimits.layerNormEps), 1e-6)
        assertRefused(try b.double("layer_norm_eps", -1, default: 1e-5, in: ConfigLimits.layerNormEps),
                      ["layer_norm_eps = -1.0", "1e-12...1.0"])
        assertRefused(try b.double("layer_norm_eps", 0, default: 1e-5, in: ConfigLimits.layerNormEps), ["= 0.0"])
        assertRefused(try b.double("mlp_ratio", 1e30, default: 4, in: ConfigLimits.mlpRatio), ["mlp_ratio = 1e+30", "0.0625...32.0"])
        assertRefused(try b.double("mlp_ratio", .nan, default: 4, in: ConfigLimits.mlpRatio), ["mlp_ratio = nan"])
        assertRefused(try b.double("mlp_ratio", .infinity, default: 4, in: ConfigLimits.mlpRatio), ["mlp_ratio = inf"])
        XCTAssertEqual(try b.doubles("image_std", nil, default: [0.5, 0.5, 0.5], count: 3, in: ConfigLimits.pixelStd), [0.5, 0.5, 0.5])
        assertRefused(try b.doubles("image_std", [0.2, 0, 0.2], default: [], count: 3, in: ConfigLimits.pixelStd),
                      ["image_std[1] = 0.0", "0.001...1000.0"])
        assertRefused(try b.doubles("image_mean", [0.5, 0.5], default: [], count: 3, in: ConfigLimits.pixelMean),
                      ["image_mean", "3 numbers"])
    }

    func testMultiplesAndDerivedValues() throws {
        XCTAssertNoThrow(try b.multiple("hidden_size", 768, of: "num_attention_heads", 12))
        assertRefused(try b.multiple("hidden_size", 100, of: "num_attention_heads", 3),
                      ["hidden_size = 100", "a multiple of num_attention_heads (3)"])
        assertRefused(try b.multiple("hidden_size", 100, of: "num_attention_heads", 0), ["hidden_size = 100"])
        assertRefused(try b.derived("image_size / patch_size", 4096, in: ConfigLimits.gridSide),
                      ["image_size / patch_size = 4096", "1...128"])
    }

    /// Every real CLIP fits the limits (ViT-bigG/14 is the largest OpenCLIP ships).
    func testLimitsAdmitTheLargestRealModels() {
        XCTAssertTrue(ConfigLimits.width.contains(1664) && ConfigLimits.layers.contains(48) && ConfigLimits.heads.contains(16))
        XCTAssertTrue(ConfigLimits.mlpWidth.contains(8192) && ConfigLimits.mlpRatio.contains(8192.0 / 1664))
        XCTAssertTrue([224, 336, 378, 448, 518, 1024].allSatisfy(ConfigLimits.imageSize.contains))
        XCTAssertTrue(ConfigLimits.gridSide.contains(448 / 14) && ConfigLimits.gridSide.contains(1024 / 8))
        XCTAssertTrue(ConfigLimits.layerNormEps.contains(1e-5) && ConfigLimits.layerNormEps.contains(1e-6))
        XCTAssertTrue(ConfigLimits.logitScale.contains(log(100.0)))
    }

    // MARK: Memory budget

    func testBudgetLimitFromTheEnvironmentOrPhysicalMemory() throws {
        XCTAssertEqual(try ModelMemoryBudget.limit(environment: [:]).bytes, Int(ProcessInfo.processInfo.physicalMemory))
        XCTAssertEqual(try ModelMemoryBudget.limit(environment: ["REFRACT_MAX_MODEL_BYTES": "512M"]).bytes, 512 << 20)
        XCTAssertEqual(try ModelMemoryBudget.limit(environment: ["REFRACT_MAX_MODEL_BYTES": "1000"]).bytes, 1000)
        XCTAssertEqual(try ModelMemoryBudget.limit(environment: ["REFRACT_MAX_MODEL_BYTES": "2g"]).bytes, 2 << 30)
        for bad in ["", "0", "-5", "lots", "12X", "99999999999999999999T", "1.5G"] {
            XCTAssertThrowsError(try ModelMemoryBudget.limit(environment: ["REFRACT_MAX_MODEL_BYTES": bad]), bad) {
                XCTAssertTrue("\($0)".contains("REFRACT_MAX_MODEL_BYTES='\(bad)'"), "\($0)")
            }
        }
    }

    func testBudgetRefusesWhatDoesNotFit() throws {
        let env = ["REFRACT_MAX_MODEL_BYTES": "1M"]
        XCTAssertNoThrow(try ModelMemoryBudget.check(parameters: 262_144, configFile: "c.json", environment: env))
        XCTAssertThrowsError(try ModelMemoryBudget.check(parameters: 262_145, configFile: "c.json", environment: env)) { e in
            for part in ["c.json", "262145 parameters", "REFRACT_MAX_MODEL_BYTES=1M"] {
                XCTAssertTrue("\(e)".contains(part), "'\(part)' missing from: \(e)")
            }
        }
        XCTAssertThrowsError(try ModelMemoryBudget.check(parameters: Int.max / 2, configFile: "c.json", environment: [:])) {
            XCTAssertTrue("\($0)".contains("more than Int.max"), "\($0)")
        }
    }
}
