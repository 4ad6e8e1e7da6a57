// MARK: - Fuzz: safetensors
//
// The bytes are a whole .safetensors file. Opened as the CLI opens weights (TensorLoader over
// SafetensorsFile: stat, map, strict header validation), then every tensor the header declares
// is read through the loader (F32/F16/BF16 as float32, I64 as integers, anything else refused by
// dtype), so offsets that passed validation are also dereferenced.

import Foundation
import FuzzSupport
import RefractCheckpoint

private let file = Scratch.subdirectory("safetensors").appendingPathComponent("model.safetensors")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    Scratch.write(UnsafeRawBufferPointer(start: data, count: size), to: file)
    do {
        let loader = try TensorLoader(files: [file])
        for key in loader.keys {
            guard let info = loader.info(key) else { continue }
            do {
                if info.dtype.isConvertibleToFloat32 {
                    let t = try loader.take(key, shape: info.shape)
                    precondition(t.data.count == info.elementCount)
                } else if info.dtype == .i64 {
                    let v = try loader.takeInt64(key, shape: info.shape)
                    precondition(v.count == info.elementCount)
                } else {
                    _ = try loader.take(key)  // refused: not convertible to float32
                }
            } catch {
                FuzzInput.refused(error)
            }
        }
        do { try loader.finish() } catch { FuzzInput.refused(error) }
    } catch {
        FuzzInput.refused(error)
    }
    return 0
}
