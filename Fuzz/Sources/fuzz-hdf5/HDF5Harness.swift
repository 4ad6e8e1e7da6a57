// MARK: - Fuzz: HDF5 / MATLAB v7.3
//
// The bytes are a gtsegs_ijcv.mat file, opened as `refract segment --data` opens one
// (SegmentationDatasets.open -> ImageNetSegmentationMat: libhdf5 opens the file, the /value/img
// and /value/gt reference arrays are read), then the first samples are read (image, cell, mask,
// value checks). libhdf5
// reads from a file, as in the CLI (a temporary file on tmpfs).

import Foundation
import FuzzSupport
import RefractSegment

private let file = Scratch.subdirectory("hdf5").appendingPathComponent("gtsegs_ijcv.mat")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHDF5(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    Scratch.write(UnsafeRawBufferPointer(start: data, count: size), to: file)
    do {
        let dataset = try SegmentationDatasets.open(file)
        for index in 0..<min(dataset.count, 4) {
            do {
                let sample = try dataset.sample(at: index)
                precondition(sample.image.width == sample.mask.width && sample.image.height == sample.mask.height)
            } catch {
                FuzzInput.refused(error)
            }
        }
    } catch {
        FuzzInput.refused(error)
    }
    return 0
}
