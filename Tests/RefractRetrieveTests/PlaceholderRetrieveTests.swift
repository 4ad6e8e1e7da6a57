import RefractRetrieve
import XCTest

// Placeholder to be replaced by the real tests of this target.
final class PlaceholderRetrieveTests: XCTestCase {}
