import XCTest
@testable import RefractStore

final class PlaceholderStoreTests: XCTestCase {}
