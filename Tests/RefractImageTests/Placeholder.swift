import XCTest

final class RefractImageTestsPlaceholder: XCTestCase {}
