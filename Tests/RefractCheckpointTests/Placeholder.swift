import XCTest

final class RefractCheckpointTestsPlaceholder: XCTestCase {}
