import Foundation
import RefractTensor
import XCTest

/// A test case with a fresh scratch directory per test (removed afterwards) and BLAS and LAPACK
/// loaded: what tests that write runs, alignments or reports start from.
open class ScratchTestCase: XCTestCase {
    public var scratch: URL!

    override open func setUpWithError() throws {
        try super.setUpWithError()
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("\(type(of: self))-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        try BLAS.load()
        try LAPACK.load()
    }

    override open func tearDownWithError() throws {
        if let scratch { try? FileManager.default.removeItem(at: scratch) }
        try super.tearDownWithError()
    }
}
