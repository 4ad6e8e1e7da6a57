import XCTest

final class RefractTokenizerTestsPlaceholder: XCTestCase {}
