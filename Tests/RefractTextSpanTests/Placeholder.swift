import XCTest
@testable import RefractTextSpan

final class PlaceholderTextSpanTests: XCTestCase {}
