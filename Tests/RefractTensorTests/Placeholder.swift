import XCTest

final class RefractTensorTestsPlaceholder: XCTestCase {}
