import XCTest
@testable import RefractPlot

final class PlaceholderPlotTests: XCTestCase {}
