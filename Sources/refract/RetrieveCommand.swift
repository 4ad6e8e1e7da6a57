// refract retrieve: parse, call RefractRetrieve, print.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCheckpoint
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
        Runs of timm models sum --components instead: a text is compared with them aligned into CLIP space \
        (--align ALIGN from refract align, the text embedded by that CLIP), an image of the run with its \
        unaligned components (the paper's image-based retrieval). \
        Writes retrieval.json and retrieval.html (a contact sheet with thumbnails) into --output.
        """)

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "Query: an image file.") var image: String?
    @Option(name: .long, help: "Query: row ROW of the run (0-based).") var index: Int?
    @Option(name: .long, help: "Query: a text, e.g. \"a red car\".") var text: String?
    @Option(name: .long, help: "CLIP runs: heads whose contributions are summed, as LAYER.HEAD: 11.3,10.7") var heads: String?
    @Option(name: .long, help: "timm runs: components whose contributions are summed, by name: attn.11.3,mlp.10") var components: String?
    @Option(name: .long, help: "timm runs, text queries: the run's alignment into CLIP space (refract align).") var align: String?
    @Option(name: .long, help: "timm runs: take the components from this score report (refract score --output DIR: DIR or DIR/score.json), by its ranking key.")
    var score: String?
    @Option(name: .customLong("top-components"), help: "With --score: how many of its top-ranked components are summed (the paper's figures use groups of a few).")
    var topComponents = 5
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
        let query: RetrievalQuery = index.map { .row($0) } ?? image.map { .image($0) } ?? .text(text ?? "")
        let report: RetrievalReport
        if RunComponents.isTimm(reader) {
            report = try await searchComponents(reader, query: query, metric: metric)
        } else {
            report = try await searchHeads(reader, query: query, metric: metric)
        }
        let files = try RetrievalOutput.write(report, to: URL(fileURLWithPath: output))

        let q = report.query
        print("query: " + (q.text.map { "\"\($0)\"" } ?? q.path ?? "?") + " (\(q.note))")
        print("\(RunComponents.isTimm(reader) ? "components" : "heads") \(report.heads.joined(separator: ",")), \(report.metric), \(report.candidates) images:")
        for hit in report.results {
            print(String(format: "%3d. %9.4f  row %-6d %@%@", hit.rank, hit.score, hit.row, hit.path,
                         hit.label.map { "  [\($0)]" } ?? ""))
        }
        FileHandle.standardError.write(Data("wrote \(files.json.path), \(files.html.path)\n".utf8))
    }

    /// A timm run: the chosen components; a text through the alignment's CLIP.
    func searchComponents(_ reader: StoreReader, query: RetrievalQuery, metric: RetrievalMetric) async throws -> RetrievalReport {
        guard heads == nil else { throw ValidationError("--heads chooses a CLIP run's heads; for a run of a timm model give --components") }
        let names = try RunComponents.describe(reader).map(\.name)
        let chosen: [Int]
        switch (components, score) {
        case (let list?, nil): chosen = try ComponentSelection.parse(list, of: names)
        case (nil, let file?): chosen = try topScored(file, reader: reader, names: names)
        case (nil, nil): throw ValidationError("give --components (names, as refract export lists them) or --score (a refract score report)")
        default: throw ValidationError("give --components or --score, not both")
        }
        var aligned: AlignedRun?
        var embedding: [Float]?
        if case .text(let text) = query {
            guard let align else { throw RunComponents.needsAlignment(reader, command: "retrieve --text") }
            try BLAS.load()
            if let threads { BLAS.setThreads(threads) }
            let run = try AlignedRun(reader: reader, alignment: try Alignment.load(URL(fileURLWithPath: align)))
            let (clip, _) = try await AlignmentCLIP.load(run.alignment, spec: model, option: "--model", threads: threads)
            aligned = run
            embedding = clip.encodeTexts([text.trimmingCharacters(in: .whitespacesAndNewlines)]).data
        } else if align != nil {
            throw ValidationError("--align is for text queries; images of the run are compared by their unaligned components")
        }
        return try Retrieval.search(reader, components: chosen, query: query, options: RetrievalOptions(top: top, metric: metric),
                                    aligned: aligned, textEmbedding: embedding)
    }

    /// The `--top-components` first components of a score report's ranking, checked to be of this run.
    func topScored(_ file: String, reader: StoreReader, names: [String]) throws -> [Int] {
        try CountBounds.check("--top-components", topComponents, 1...names.count)
        var url = URL(fileURLWithPath: file)
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue { url.appendPathComponent("score.json") }
        let report: ScoreReport
        do { report = try JSONDecoder().decode(ScoreReport.self, from: try InputFile.read(url.path)) } catch {
            throw ValidationError("\(url.path): not a readable refract score report (\(error))")
        }
        guard report.format == ScoreReport.formatName, report.run.id == reader.manifest.runId else {
            throw ValidationError("\(url.path) scores the run \(report.run.path) (id \(report.run.id)), not \(reader.run.path)")
        }
        var index = [String: Int]()
        for (i, n) in names.enumerated() { index[n] = i }
        let ranked = try report.rankings.key.prefix(topComponents).map { name in
            guard let i = index[name] else { throw ValidationError("\(url.path) ranks a component '\(name)' the run does not have") }
            return i
        }
        FileHandle.standardError.write(Data("components from \(url.path) (property \(report.property.name), \(report.rule)): \(ranked.map { names[$0] }.joined(separator: ", "))\n".utf8))
        return ranked
    }

    /// A CLIP run: the chosen heads.
    func searchHeads(_ reader: StoreReader, query: RetrievalQuery, metric: RetrievalMetric) async throws -> RetrievalReport {
        guard components == nil, align == nil, score == nil else {
            throw ValidationError("--components, --score and --align are for runs of timm models; a CLIP run takes --heads")
        }
        guard let heads else { throw ValidationError("give --heads: the heads whose contributions are summed, as LAYER.HEAD") }
        let dims = try Retrieval.dimensions(reader)
        let options = RetrievalOptions(heads: try HeadID.parseList(heads, layers: dims.layers, heads: dims.heads), top: top, metric: metric)
        var clip: CLIP?
        if Retrieval.needsModel(query, reader: reader) {
            try BLAS.load()
            if let threads { BLAS.setThreads(threads) }
            clip = try await RunModel.load(for: reader, spec: model)
        }
        return try Retrieval.search(reader, query: query, options: options, model: clip)
    }
}
