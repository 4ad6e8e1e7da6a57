// refract textspan / heads: parse, call RefractTextSpan, print.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractStore
import RefractTensor
import RefractTextSpan

/// How both commands get text embeddings (the run's model, or an aligned run's CLIP; the cache, or a
/// precomputed file) and, for a non-CLIP run, the alignment that puts its components in CLIP space.
struct TextOptions: ParsableArguments {
    @Option(name: .long, help: "Model for the text encoder (default: the run's model id, or with --align the alignment's CLIP); its weights must be the run's (the alignment's CLIP's).")
    var model: String?
    @Option(name: .long, help: "BLAS threads.") var threads: Int?
    @Flag(name: .long, help: "Do not read or write the text-embedding cache ($REFRACT_CACHE_DIR, $XDG_CACHE_HOME/refract or ~/.cache/refract).")
    var noCache = false

    func validate() throws { try CountBounds.check("--threads", threads, CountBounds.threads) }

    /// The text model and its weights hash, and for a timm run the run seen through its alignment.
    func load(_ reader: StoreReader, align: String?, command: String) async throws -> (CLIP, String, AlignedRun?) {
        try BLAS.load()
        if let threads { BLAS.setThreads(threads) }
        guard RunComponents.isTimm(reader) else {
            if align != nil {
                throw ValidationError("--align is for runs of timm models; \(reader.run.path) is a CLIP run, already in CLIP space")
            }
            let clip = try await RunModel.load(for: reader, spec: model)
            return (clip, reader.manifest.model.weightsSHA256, nil)
        }
        guard let align else { throw RunComponents.needsAlignment(reader, command: command) }
        let aligned = try AlignedRun(reader: reader, alignment: try Alignment.load(URL(fileURLWithPath: align)))
        let (clip, hash) = try await AlignmentCLIP.load(aligned.alignment, spec: model, option: "--model", threads: threads)
        return (clip, hash, aligned)
    }

    var cache: URL? { noCache ? nil : TextEmbeddings.cacheDirectory() }
}

// MARK: textspan

struct TextSpanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "textspan",
        abstract: "Label attention heads with text: for each head, the descriptions whose directions explain most of its variance (TextSpan). timm runs: every component, through --align.",
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
    @Option(name: .long, help: "For a run of a timm model: its alignment (refract align); components are read in that CLIP's space.")
    var align: String?
    @Option(name: .long, help: "With --align: the components to label, by name (attn.10.3,mlp.7,...; default: all).") var components: String?
    @Option(name: .long, help: "Seed of the random directions of the accuracy check.") var seed: UInt64 = 0
    @OptionGroup var textOptions: TextOptions

    func run() async throws {
        if layers != nil && heads != nil { throw ValidationError("give --layers or --heads, not both") }
        try CountBounds.check("--per-head", perHead, CountBounds.top); try CountBounds.check("--rank", rank, CountBounds.rank)
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        let aligned = RunComponents.isTimm(reader)
        if aligned {
            if layers != nil || heads != nil { throw ValidationError("--layers and --heads choose a CLIP run's heads; for a timm run choose --components") }
        } else if components != nil {
            throw ValidationError("--components is for timm runs read through --align; choose a CLIP run's heads with --layers or --heads")
        }
        let dims = reader.manifest.dimensions
        let nl = dims["layers"] ?? 0, nh = dims["heads"] ?? 0
        var options = TextSpanRunOptions()
        if !aligned {
            if let heads {
                options.heads = try HeadID.parseList(heads, layers: nl, heads: nh)
            } else {
                let chosen = try LayerSelection.parse(layers ?? "last:\(min(4, nl))", layers: nl)
                options.heads = chosen.flatMap { l in (0..<nh).map { HeadID(layer: l, head: $0) } }
            }
        }
        options.perHead = perHead
        options.rank = rank
        options.randomSeed = seed
        let pool = try DescriptionPool.load(URL(fileURLWithPath: descriptions))
        let classNames = try classes.map { try TextLists.readLines(URL(fileURLWithPath: $0), what: "class name") }
        let templateList = try templates.map { try TextLists.readTemplates(URL(fileURLWithPath: $0)) }
            ?? ZeroShotClassifier.defaultTemplates
        let (clip, hash, alignedRun) = try await textOptions.load(reader, align: align, command: "textspan")
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
        let report: TextSpanReport
        if let alignedRun {
            let chosen = try ComponentSelection.parse(components, of: alignedRun.components.map(\.name))
            let bar = ProgressBar(label: "components")
            report = try TextSpanRun.run(alignedRun, components: chosen, pool: pool, poolSummary: pool.summary(truncated: pool.truncatedCount(clip)),
                                         texts: texts, options: options, accuracy: accuracy) { bar.update(done: $0, total: $1) }
            bar.finish()
        } else {
            let headBar = ProgressBar(label: "heads")
            report = try TextSpanRun.run(reader, pool: pool, poolSummary: pool.summary(truncated: pool.truncatedCount(clip)),
                                         texts: texts, options: options, accuracy: accuracy) {
                headBar.update(done: $0, total: $1)
            }
            headBar.finish()
        }
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
            print("\(head.name): " + (top.isEmpty ? "(\(head.note ?? "no descriptions"))" : top.joined(separator: "; ")))
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
        abstract: "Rank heads by the variance of their contributions along a text direction (which heads care about this property?).",
        discussion: "A timm run given --align ALIGN (refract align): every component, aligned into that CLIP's space, is ranked.")

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "The property, as text, e.g. \"a photo taken at night\".") var text: String
    @Option(name: .long, help: "How many heads to show.") var top = 10
    @Flag(name: .long, help: "Print JSON.") var json = false
    @Option(name: .long, help: "For a run of a timm model: its alignment (refract align); components are read in that CLIP's space.")
    var align: String?
    @OptionGroup var textOptions: TextOptions

    func run() async throws {
        try CountBounds.check("--top", top, CountBounds.top)
        let query = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !query.isEmpty else { throw ValidationError("--text is empty") }
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        let (clip, hash, aligned) = try await textOptions.load(reader, align: align, command: "heads")
        let pool = DescriptionPool(texts: [query], name: "--text")
        let (embedding, _) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: hash, cache: textOptions.cache)
        let ranking = Array(try (aligned.map { try HeadRanking.byTextVariance($0, text: embedding.data) }
                                 ?? HeadRanking.byTextVariance(reader, text: embedding.data)).prefix(top))
        if json {
            print(try Output.json(ranking))
        } else {
            let unit = aligned == nil ? "head" : "component"
            print("\(unit)s by variance along \"\(query)\" (\(reader.rowCount) images):")
            let width = max(8, ranking.map(\.name.count).max() ?? 0)
            for (i, r) in ranking.enumerated() {
                print(String(format: "%3d. %@  variance %.4g  (%.1f%% of the \(unit)'s variance)",
                             i + 1, r.name.padding(toLength: width, withPad: " ", startingAt: 0),
                             r.variance, 100 * r.fractionOfHead))
            }
        }
    }
}

/// `--components attn.10.3,mlp.7`: names of a run's components, in the run's order; nil: all.
enum ComponentSelection {
    static func parse(_ text: String?, of names: [String]) throws -> [Int] {
        guard let text else { return Array(names.indices) }
        var index = [String: Int]()
        for (i, n) in names.enumerated() { index[n] = i }
        var out = [Int]()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let name = part.trimmingCharacters(in: .whitespaces)
            guard let i = index[name] else {
                throw ValidationError("--components: the run has no component '\(name)' (it has \(names.prefix(6).joined(separator: ", "))"
                                      + (names.count > 6 ? ", ... \(names.count) in all" : "") + ")")
            }
            if !out.contains(i) { out.append(i) }
        }
        return out.sorted()
    }
}
