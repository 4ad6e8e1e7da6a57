// refract textspan / heads: parse, call RefractTextSpan, print.

import ArgumentParser
import Foundation
import RefractCLIP
import RefractDecompose
import RefractStore
import RefractTensor
import RefractTextSpan

/// How both commands get text embeddings: the run's model, the cache, or a precomputed file.
struct TextOptions: ParsableArguments {
    @Option(name: .long, help: "Model for the text encoder (default: the run's model id); its weights must be the run's.")
    var model: String?
    @Option(name: .long, help: "BLAS threads.") var threads: Int?
    @Flag(name: .long, help: "Do not read or write the text-embedding cache ($REFRACT_CACHE_DIR, $XDG_CACHE_HOME/refract or ~/.cache/refract).")
    var noCache = false

    func validate() throws { try CountBounds.check("--threads", threads, CountBounds.threads) }

    func load(_ reader: StoreReader) async throws -> (CLIP, String) {
        try BLAS.load()
        if let threads { BLAS.setThreads(threads) }
        let clip = try await RunModel.load(for: reader, spec: model)
        return (clip, reader.manifest.model.weightsSHA256)
    }

    var cache: URL? { noCache ? nil : TextEmbeddings.cacheDirectory() }
}

// MARK: textspan

struct TextSpanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "textspan",
        abstract: "Label attention heads with text: for each head, the descriptions whose directions explain most of its variance (TextSpan).",
        discussion: """
        POOL: one description per line (UTF-8); blank lines are skipped and a repeated description is used \
        once, both counted in the report; descriptions longer than the text context are truncated as the \
        tokenizer does and counted. Text embeddings are cached per (model weights, pool contents). \
        With --classes the paper's check runs: attention layers below the first chosen layer are \
        mean-ablated and the chosen heads replaced by their reconstructions (and, as controls, left raw \
        or reconstructed from random directions); zero-shot top-1/top-5 are reported. \
        Writes textspan.json, textspan.md and textspan.html into --output.
        """)

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "Description pool, one per line.") var descriptions: String
    @Option(name: .long, help: "Output directory.") var output: String
    @Option(name: .long, help: "Layers whose every head is analysed: last:4 (default), 8-11, all, ...") var layers: String?
    @Option(name: .long, help: "Heads to analyse instead, as LAYER.HEAD: 11.3,10.7") var heads: String?
    @Option(name: .long, help: "Descriptions per head.") var perHead = 20
    @Option(name: .long, help: "Rank of the span the descriptions are projected on (default: the official code's 80, lowered to a head's own rank when smaller; a given rank above it is an error).")
    var rank: Int?
    @Option(name: .long, help: "Class names for the accuracy check, one per line.") var classes: String?
    @Option(name: .long, help: "Templates with {} for the class name (default: \"a photo of a {}.\").") var templates: String?
    @Option(name: .long, help: "Precomputed text embeddings (.npy [lines, D'], one row per line of the pool).") var textEmbeddings: String?
    @Option(name: .long, help: "Seed of the random directions of the accuracy check.") var seed: UInt64 = 0
    @OptionGroup var textOptions: TextOptions

    func run() async throws {
        if layers != nil && heads != nil { throw ValidationError("give --layers or --heads, not both") }
        try CountBounds.check("--per-head", perHead, CountBounds.top); try CountBounds.check("--rank", rank, CountBounds.rank)
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        try RunComponents.requireCLIP(reader, command: "textspan")
        let dims = reader.manifest.dimensions
        let nl = dims["layers"] ?? 0, nh = dims["heads"] ?? 0
        var options = TextSpanRunOptions()
        if let heads {
            options.heads = try HeadID.parseList(heads, layers: nl, heads: nh)
        } else {
            let chosen = try LayerSelection.parse(layers ?? "last:\(min(4, nl))", layers: nl)
            options.heads = chosen.flatMap { l in (0..<nh).map { HeadID(layer: l, head: $0) } }
        }
        options.perHead = perHead
        options.rank = rank
        options.randomSeed = seed
        let pool = try DescriptionPool.load(URL(fileURLWithPath: descriptions))
        let classNames = try classes.map { try TextLists.readLines(URL(fileURLWithPath: $0), what: "class name") }
        let templateList = try templates.map { try TextLists.readTemplates(URL(fileURLWithPath: $0)) }
            ?? ZeroShotClassifier.defaultTemplates
        let (clip, hash) = try await textOptions.load(reader)
        let bar = ProgressBar(label: "descriptions")
        let (texts, source) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: hash, cache: textOptions.cache,
                                                      precomputed: textEmbeddings.map { URL(fileURLWithPath: $0) }) {
            bar.update(done: $0, total: pool.count)
        }
        bar.finish()
        FileHandle.standardError.write(Data("text embeddings: \(pool.count) descriptions (\(source.rawValue))\n".utf8))
        let accuracy = try classNames.map {
            AccuracyInputs(classifier: try clip.zeroShotClassifier(classes: $0, templates: templateList).weights,
                           classes: $0, classesFile: classes!, templates: templateList)
        }
        let headBar = ProgressBar(label: "heads")
        let report = try TextSpanRun.run(reader, pool: pool, poolSummary: pool.summary(truncated: pool.truncatedCount(clip)),
                                         texts: texts, options: options, accuracy: accuracy) {
            headBar.update(done: $0, total: $1)
        }
        headBar.finish()
        let dir = URL(fileURLWithPath: output)
        try FileOutput.createDirectory(dir, action: "creating the output folder")
        try FileOutput.writeAtomically(Data(try Output.json(report).utf8), to: dir.appendingPathComponent("textspan.json"),
                                       what: "the TextSpan report")
        try FileOutput.writeAtomically(Data(TextSpanRendering.markdown(report).utf8), to: dir.appendingPathComponent("textspan.md"),
                                       what: "the TextSpan report (Markdown)")
        try FileOutput.writeAtomically(Data(TextSpanRendering.html(report).utf8), to: dir.appendingPathComponent("textspan.html"),
                                       what: "the TextSpan report (HTML)")
        for head in report.heads {
            let top = head.descriptions.prefix(3).map { "\($0.text) (\(String(format: "%.1f", 100 * $0.varianceExplained))%)" }
            print("\(head.name): \(top.joined(separator: "; "))")
        }
        if let acc = report.accuracy {
            for r in acc.rows { print(String(format: "%@ top-1 %.2f%%  top-5 %.2f%%", r.id, r.top1, r.top5)) }
            print("distinct descriptions: \(acc.distinctDescriptions)")
        }
        FileHandle.standardError.write(Data("wrote \(output)/textspan.json, textspan.md, textspan.html\n".utf8))
    }
}

// MARK: heads

struct HeadsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heads",
        abstract: "Rank heads by the variance of their contributions along a text direction (which heads care about this property?).")

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "The property, as text, e.g. \"a photo taken at night\".") var text: String
    @Option(name: .long, help: "How many heads to show.") var top = 10
    @Flag(name: .long, help: "Print JSON.") var json = false
    @OptionGroup var textOptions: TextOptions

    func run() async throws {
        try CountBounds.check("--top", top, CountBounds.top)
        let query = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !query.isEmpty else { throw ValidationError("--text is empty") }
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        try RunComponents.requireCLIP(reader, command: "heads")
        let (clip, hash) = try await textOptions.load(reader)
        let pool = DescriptionPool(texts: [query], name: "--text")
        let (embedding, _) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: hash, cache: textOptions.cache)
        let ranking = Array(try HeadRanking.byTextVariance(reader, text: embedding.data).prefix(top))
        if json {
            print(try Output.json(ranking))
        } else {
            print("heads by variance along \"\(query)\" (\(reader.rowCount) images):")
            for (i, r) in ranking.enumerated() {
                print(String(format: "%3d. %@  variance %.4g  (%.1f%% of the head's variance)",
                             i + 1, "L\(r.layer).H\(r.head)".padding(toLength: 8, withPad: " ", startingAt: 0),
                             r.variance, 100 * r.fractionOfHead))
            }
        }
    }
}
