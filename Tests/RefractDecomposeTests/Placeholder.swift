import XCTest
@testable import RefractDecompose

final class PlaceholderDecomposeTests: XCTestCase {}
