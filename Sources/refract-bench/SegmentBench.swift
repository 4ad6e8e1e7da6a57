// Segment section (skeleton): segmentation images/s against the plain image tower.
struct SegmentBenchResults: Codable {}
enum SegmentBench {
    static func run(quick: Bool, threads: Int) throws -> SegmentBenchResults { throw BenchError("segment section: not built yet") }
}
