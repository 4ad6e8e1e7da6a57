// refract retrieve: parse, call RefractRetrieve, print.

import ArgumentParser
import Foundation
import RefractCLIP
import RefractDecompose
import RefractRetrieve
import RefractStore
import RefractTensor
import RefractTextSpan

struct RetrieveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retrieve",
        abstract: "Nearest images by chosen heads' contributions (property-based retrieval).",
        discussion: """
        Each image's vector is the sum of the chosen heads' direct contributions (attn[l,h], summed over \
        --heads); images are ranked by its similarity with the query's: an image of the run (--index ROW, \
        0-based row; left out of the results), an image file (--image; the stored row when the file is one \
        of the run's images, otherwise decomposed with the run's model), or a text (--text; its normalised \
        text embedding). --metric cosine (the paper) or dot (the official notebook's ranking). \
        Writes retrieval.json and retrieval.html (a contact sheet with thumbnails) into --output.
        """)

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "Query: an image file.") var image: String?
    @Option(name: .long, help: "Query: row ROW of the run (0-based).") var index: Int?
    @Option(name: .long, help: "Query: a text, e.g. \"a red car\".") var text: String?
    @Option(name: .long, help: "Heads whose contributions are summed, as LAYER.HEAD: 11.3,10.7") var heads: String
    @Option(name: .long, help: "How many images to return.") var top = 15
    @Option(name: .long, help: "cosine (default) or dot.") var metric = "cosine"
    @Option(name: .long, help: "Model for text and new images (default: the run's model id); its weights must be the run's.")
    var model: String?
    @Option(name: .long, help: "BLAS threads.") var threads: Int?
    @Option(name: .long, help: "Output directory.") var output: String

    func run() async throws {
        let given = [image != nil, index != nil, text != nil].filter { $0 }.count
        guard given == 1 else {
            throw ValidationError(given == 0 ? "give a query: --image, --index or --text"
                                             : "give one query, not several (--image, --index, --text)")
        }
        guard let metric = RetrievalMetric(rawValue: metric) else {
            throw ValidationError("--metric must be cosine or dot, not '\(metric)'")
        }
        try CountBounds.check("--top", top, CountBounds.top)
        try CountBounds.check("--index", index, CountBounds.index)
        try CountBounds.check("--threads", threads, CountBounds.threads)
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        try RunComponents.requireCLIP(reader, command: "retrieve")
        let dims = try Retrieval.dimensions(reader)
        let options = RetrievalOptions(heads: try HeadID.parseList(heads, layers: dims.layers, heads: dims.heads), top: top, metric: metric)
        let query: RetrievalQuery = index.map { .row($0) } ?? image.map { .image($0) } ?? .text(text ?? "")
        var clip: CLIP?
        if Retrieval.needsModel(query, reader: reader) {
            try BLAS.load()
            if let threads { BLAS.setThreads(threads) }
            clip = try await RunModel.load(for: reader, spec: model)
        }
        let report = try Retrieval.search(reader, query: query, options: options, model: clip)
        let files = try RetrievalOutput.write(report, to: URL(fileURLWithPath: output))

        let q = report.query
        print("query: " + (q.text.map { "\"\($0)\"" } ?? q.path ?? "?") + " (\(q.note))")
        print("heads \(report.heads.joined(separator: ",")), \(report.metric), \(report.candidates) images:")
        for hit in report.results {
            print(String(format: "%3d. %9.4f  row %-6d %@%@", hit.rank, hit.score, hit.row, hit.path,
                         hit.label.map { "  [\($0)]" } ?? ""))
        }
        FileHandle.standardError.write(Data("wrote \(files.json.path), \(files.html.path)\n".utf8))
    }
}
