// MARK: - Fuzz: .npy
//
// The bytes are a whole .npy file, read as the CLI reads one (NPY.read: map the file, parse the
// header, load the data), then widened to a float32 Tensor as the text-embedding cache is.

import Foundation
import FuzzSupport
import RefractTensor

private let file = Scratch.subdirectory("npy").appendingPathComponent("array.npy")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNPY(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    Scratch.write(UnsafeRawBufferPointer(start: data, count: size), to: file)
    do {
        let array = try NPY.read(file)
        let tensor = array.tensor
        precondition(tensor.data.count == array.shape.reduce(1, *))
    } catch {
        FuzzInput.refused(error)
    }
    return 0
}
