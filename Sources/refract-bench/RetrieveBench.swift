// Retrieve section (skeleton): a retrieval query over a 50,000-image store.
struct RetrieveBenchResults: Codable {}
enum RetrieveBench {
    static func run(quick: Bool, threads: Int) throws -> RetrieveBenchResults { throw BenchError("retrieve section: not built yet") }
}
