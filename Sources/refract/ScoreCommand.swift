// refract score: parse, embed the texts (80 templates), call RefractAlign's ComponentScoring, write
// the report, print the top components.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractSegment
import RefractStore
import RefractTensor
import RefractTextSpan

struct ScoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score every component of a run for a property described in words (variance attributed and explained, Balasubramanian et al.).",
        discussion: """
        Each text s is embedded with the 80 OpenAI ImageNet templates (each template embedding normalised, averaged, \
        renormalised). The texts' span gets an orthonormal basis by Gram–Schmidt in the order given; a component's \
        variance_attributed is the mean over the basis of the correlation (× (N−1)/N) between its projection and \
        the whole representation's; variance_explained is the span's share of its variance. CLIP runs are scored as \
        they are, with the run's own text tower; timm runs need --align (refract align) and the alignment's CLIP \
        model. --against NAME=t1,t2 (repeatable) ranks by score − max(0, the other properties' scores), the \
        official image-retrieval rule; --minus NAME=t1,t2 by the difference (the Waterbirds rule). Texts in \
        --texts and --against are separated by commas, surrounding spaces dropped; use --texts-file for texts \
        with commas. Writes score.json, score.md and score.html into --output. See docs/Score.md.
        """)

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "Alignment of a timm run into CLIP space (made by refract align).") var align: String?
    @Option(name: .long, help: "CLIP model for the text tower (default: the run's model, or the alignment's CLIP model); its weights must match.")
    var model: String?
    @Option(name: .long, help: "Prefer this layout when the --model directory holds several: transformers or openCLIP.") var layout: String?
    @Option(name: .long, help: "The property's name, e.g. location.") var property: String
    @Option(name: .long, help: "The property's texts, comma-separated: beach,forest,desert,sea") var texts: String?
    @Option(name: .customLong("texts-file"), help: "The property's texts, one per line.") var textsFile: String?
    @Option(name: .long, parsing: .singleValue, help: "Subtract another property: NAME=t1,t2 (repeatable).") var against: [String] = []
    @Option(name: .long, help: "Rank by the difference with another property: NAME=t1,t2.") var minus: String?
    @Option(name: .long, help: "Components to print (and to mark in the report).") var top = 10
    @Option(name: .customLong("rank-by"), help: "The score the ranking uses: attributed (default, the paper's) or explained.")
    var rankBy = "attributed"
    @Flag(name: .customLong("no-variance-explained"), help: "Skip variance_explained (for a timm run other than the alignment's own, it saves aligning every component of every image).")
    var noVarianceExplained = false
    @Option(name: .long, help: "Output directory for score.json, score.md and score.html.") var output: String?
    @Option(name: .long, help: "BLAS threads (default: all cores).") var threads: Int?
    @Flag(name: .long, help: "Do not read or write the text-embedding cache.") var noCache = false

    /// NAME=t1,t2 → (name, texts).
    static func parseNamed(_ s: String, option: String) throws -> (String, [String]) {
        guard let eq = s.firstIndex(of: "=") else {
            throw ValidationError("\(option) '\(s)': expected NAME=text1,text2")
        }
        let name = s[..<eq].trimmingCharacters(in: .whitespaces)
        return (name, splitTexts(String(s[s.index(after: eq)...])))
    }

    static func splitTexts(_ s: String) -> [String] {
        s.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    }

    func run() async throws {
        try CountBounds.check("--threads", threads, CountBounds.threads)
        try CountBounds.check("--top", top, CountBounds.top)
        guard rankBy == "attributed" || rankBy == "explained" else {
            throw ValidationError("--rank-by must be 'attributed' or 'explained', not '\(rankBy)'")
        }
        if rankBy == "explained" && noVarianceExplained { throw ValidationError("--rank-by explained needs variance_explained: drop --no-variance-explained") }
        if !against.isEmpty && minus != nil { throw ValidationError("give --against or --minus, not both") }

        // The texts, all checked before anything is loaded.
        let name = property.trimmingCharacters(in: .whitespaces)
        let mainTexts: [String], mainSource: String
        switch (texts, textsFile) {
        case (let t?, nil): mainTexts = Self.splitTexts(t); mainSource = "--texts"
        case (nil, let f?): mainTexts = try TextLists.readLines(URL(fileURLWithPath: f)); mainSource = f
        case (nil, nil): throw ValidationError("give the property's texts with --texts t1,t2 or --texts-file FILE")
        default: throw ValidationError("give --texts or --texts-file, not both")
        }
        try ScoreProperty.checkTexts(name: name, texts: mainTexts, source: name.isEmpty ? "--property" : mainSource)
        var lists: [(name: String, texts: [String])] = [(name, mainTexts)]
        for a in against {
            let (n, t) = try Self.parseNamed(a, option: "--against")
            try ScoreProperty.checkTexts(name: n, texts: t, source: "--against \(a)")
            lists.append((n, t))
        }
        if let minus {
            let (n, t) = try Self.parseNamed(minus, option: "--minus")
            try ScoreProperty.checkTexts(name: n, texts: t, source: "--minus \(minus)")
            lists.append((n, t))
        }
        var seen = Set<String>()
        for l in lists where !seen.insert(l.name).inserted {
            throw ValidationError("the property name '\(l.name)' is given twice (--property, --against, --minus need distinct names)")
        }

        // The run, the alignment, the source of aligned components: all checked before the model loads.
        try BLAS.load()
        if let threads { BLAS.setThreads(threads) }
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        let alignment = try align.map { try Alignment.load(URL(fileURLWithPath: $0)) }
        let source = try ScoreSource.resolve(reader, alignment: alignment)

        // The text tower: the run's CLIP, or the alignment's.
        let clip: CLIP, hash: String
        if let alignment {
            (clip, hash) = try await AlignmentCLIP.load(alignment, spec: model, option: "--model", layout: layout, threads: threads)
        } else {
            if layout != nil && model == nil { throw ValidationError("--layout needs --model") }
            var options = ModelLocation.Options()
            if let layout {
                guard let l = ModelLayout(rawValue: layout) else { throw ValidationError("--layout must be 'transformers' or 'openCLIP', not '\(layout)'") }
                options.layout = l
            }
            options.progress = TerminalProgress.stderrReporter()
            clip = try await RunModel.load(for: reader, spec: model, options: options)
            hash = reader.manifest.model.weightsSHA256
        }
        guard clip.architecture.embedDim == source.width else {
            throw ScoreError("--model", "\(clip.id)'s text embeddings have width \(clip.architecture.embedDim), the aligned components \(source.width)")
        }

        // e(s) for every text: the 80 templates, normalised, averaged, renormalised (SegmentText's classifier).
        let templates = try SegmentText.imagenetTemplates()
        let cache = noCache ? nil : TextEmbeddings.cacheDirectory()
        let textBar = ProgressBar(label: "texts")
        var properties: [ScoreProperty] = []
        for l in lists {
            properties.append(try ScoreProperty.embedded(name: l.name, texts: l.texts, clip: clip, weightsSHA256: hash, templates: templates,
                                                         cache: cache) { textBar.update(done: $0, total: $1) })
        }
        textBar.finish()

        let bar = ProgressBar(label: "images")
        let started = Date()
        let result = try ComponentScoring.score(reader, source: source, properties: properties, varianceExplained: !noVarianceExplained) {
            bar.update(done: $0, total: reader.rowCount)
        }
        let seconds = Date().timeIntervalSince(started)
        bar.finish()

        let rule: ScoreRule = !against.isEmpty ? .against(lists.dropFirst().map(\.name)) : (minus != nil ? .minus(lists[1].name) : .score)
        let m = reader.manifest
        let report = try ScoreReport.make(
            result: result, property: name, rule: rule, rankedBy: rankBy == "explained", top: top, createdBy: "refract score",
            run: .init(id: m.runId, path: reader.run.path, convention: m.convention, images: reader.rowCount), model: m.model,
            textModel: .init(id: clip.id, weightsSHA256: hash),
            alignment: alignment.map { .init(path: $0.directory.path, runId: $0.manifest.runId, mapsSHA256: $0.manifest.mapsSHA256,
                                              clipModel: $0.manifest.target.model.id) },
            templates: templates.count, templatesSource: SegmentText.bundledSource, seconds: seconds)
        if let output { try ScoreRendering.write(report, to: URL(fileURLWithPath: output)) }

        print("\(name): \(mainTexts.joined(separator: ", ")) — \(reader.rowCount) images, \(result.components.count) components, "
              + "ranked by \(report.rankedBy), key = \(rule.text)")
        print(ScoreRendering.table(report, top: top), terminator: "")
        if !result.constantComponents.isEmpty {
            print("constant over the images (scored 0): " + result.constantComponents.map { result.components[$0] }.joined(separator: ", "))
        }
        if let output { FileHandle.standardError.write(Data("wrote \(output)/score.json, score.md, score.html\n".utf8)) }
    }
}
