import XCTest

final class RefractCLIPTestsPlaceholder: XCTestCase {}
