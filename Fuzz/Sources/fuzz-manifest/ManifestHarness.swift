// MARK: - Fuzz: run manifest
//
// The bytes are a run's manifest.json, opened as every command that reads a run opens it
// (StoreReader: decode, validate, then check the recorded shards, which do not exist here). An
// incomplete run is allowed, so that validation runs to the end; a manifest that opens is then
// read back (row images, every tensor's rows).

import Foundation
import FuzzSupport
import RefractStore

private let run = Scratch.subdirectory("run")
private let manifest = run.appendingPathComponent("manifest.json")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzManifest(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    Scratch.write(UnsafeRawBufferPointer(start: data, count: size), to: manifest)
    do {
        let reader = try StoreReader(run: run, allowIncomplete: true)
        precondition(reader.rowImages.count == reader.rowCount)
        for spec in reader.tensorSpecs {
            do { _ = try reader.tensor(spec.name) } catch { FuzzInput.refused(error) }
        }
    } catch {
        FuzzInput.refused(error)
    }
    return 0
}
