// MARK: - Fuzz: checkpoint configs
//
// Each input is tried as both checkpoint layouts, through `CLIP(location:)`, the initialiser the
// CLI's model loading ends in: config decoding, the architecture checks, the preprocessing config,
// the tokenizer and then the weights. The model directories hold no weights, so a config that
// passes every check ends in a clean "missing weights" refusal; nothing model-sized is built.
//   OpenCLIP:      the bytes before the first NUL (or all of them) are open_clip_config.json
//                  (model_cfg and preprocess_cfg).
//   transformers:  the same bytes are config.json; the bytes after the first NUL are
//                  preprocessor_config.json (absent when there is no NUL).
//   timm:          the same bytes are a timm config.json, through `TimmModel(location:)`:
//                  architecture, model_args over the registry, pretrained_cfg, memory budget.

import Foundation
import FuzzSupport
import RefractCheckpoint
import RefractCLIP
import RefractTimm

private let openCLIPDirectory = Scratch.subdirectory("config-openclip")
private let transformersDirectory = Scratch.subdirectory("config-transformers")
private let openCLIP = ModelLocation(directory: openCLIPDirectory, layout: .openCLIP, modelId: "fuzz-openclip")
private let transformers = ModelLocation(directory: transformersDirectory, layout: .transformers, modelId: "fuzz-transformers")
private let preprocessorFile = transformersDirectory.appendingPathComponent("preprocessor_config.json")
private let timmDirectory = Scratch.subdirectory("config-timm")
private let timm = ModelLocation(directory: timmDirectory, layout: .timm, modelId: "fuzz-timm")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let (config, preprocessor) = FuzzInput.splitAtNUL(UnsafeBufferPointer(start: data, count: size))

    Scratch.write(config, to: openCLIP.configFile)
    do { _ = try CLIP(location: openCLIP) } catch { FuzzInput.refused(error) }

    Scratch.write(config, to: transformers.configFile)
    if let preprocessor { Scratch.write(preprocessor, to: preprocessorFile) } else { Scratch.remove(preprocessorFile) }
    do { _ = try CLIP(location: transformers) } catch { FuzzInput.refused(error) }

    Scratch.write(config, to: timm.configFile)
    do { _ = try TimmModel(location: timm) } catch { FuzzInput.refused(error) }
    return 0
}
