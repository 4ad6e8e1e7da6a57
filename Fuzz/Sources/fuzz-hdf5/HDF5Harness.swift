// MARK: - Fuzz: HDF5 / MATLAB v7.3
//
// The bytes are a gtsegs_ijcv.mat file, opened as `refract segment --data` opens one
// (SegmentationDatasets.open -> ImageNetSegmentationMat: RefractHDF5 opens the file, the /value/img
// and /value/gt reference arrays are read), then the first samples are read (image, cell, mask,
// value checks). Then the same bytes go through the general reader: every group reachable from
// the root is listed, every dataset opened and read (numbers, or references dereferenced), at
// most 64 objects. The reader reads from a file, as in the CLI (a temporary file on tmpfs).

import Foundation
import FuzzSupport
import RefractHDF5
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
    walk()
    return 0
}

/// Lists groups breadth first from the root and reads every dataset, at most 64 objects.
private func walk() {
    guard let hdf = try? HDF5File(path: file.path) else { return }
    defer { hdf.close() }
    var queue = ["/"]
    var visited = 0
    while !queue.isEmpty && visited < 64 {
        let group = queue.removeFirst()
        guard let members = try? hdf.members(ofGroup: group) else { continue }
        for name in members.prefix(64) {
            visited += 1
            let path = group == "/" ? "/" + name : group + "/" + name
            switch try? hdf.kind(of: path) {
            case .group: queue.append(path)
            case .dataset:
                // The segmentation path above bounds what it reads by its own limits; here a file of
                // 32 KB may declare up to ~35 MB of valid (compressed or filled) data, whose reading
                // is linear but slow under ASan, so the walk reads datasets of at most 2^20 elements.
                guard let dataset = try? hdf.dataset(path), dataset.count <= 1 << 20 else { continue }
                if dataset.elementType == .objectReference, let references = try? dataset.readObjectReferences() {
                    for reference in references.prefix(8) {
                        if let target = try? hdf.dataset(referencedBy: reference), target.count <= 1 << 20 { _ = try? target.read(as: Double.self) }
                    }
                } else {
                    _ = try? dataset.read(as: Double.self)
                }
            default: continue
            }
        }
    }
}
