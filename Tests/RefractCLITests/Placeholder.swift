import XCTest

final class RefractCLITestsPlaceholder: XCTestCase {}
