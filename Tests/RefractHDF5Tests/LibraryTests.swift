import RefractHDF5
import XCTest

final class LibraryTests: XCTestCase {
    func testLibraryVersionIsAtLeast110() {
        let parts = HDF5Library.version.split(separator: ".").compactMap { Int($0) }
        XCTAssertEqual(parts.count, 3)
        XCTAssertGreaterThanOrEqual(parts[0] * 100 + parts[1], 110, HDF5Library.version)
    }
}
