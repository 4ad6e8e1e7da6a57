// refract spurious: parse, call RefractSpurious, print.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCLIP
import RefractDecompose
import RefractSegment
import RefractSpurious
import RefractStore
import RefractTensor
import RefractTextSpan

struct SpuriousCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spurious",
        abstract: "Waterbirds: zero-shot accuracy per (bird, place) group with chosen heads mean-ablated, against the base model and random heads.",
        discussion: """
        Each run image is matched to a metadata.csv row (img_filename, y, split, place): its path is \
        <metadata dir>/<img_filename>, or ends with /<img_filename>. Labels come from y (0: first class, \
        1: second). Means are over the evaluated images. Heads: --ablate LAYER.HEAD,... or --ablate-by-text \
        PROPERTY (the --top heads varying most along the property's text direction, or with --textspan \
        those whose TextSpan descriptions match it best). --paper-ablations also mean-ablates every head \
        of the layers before the last 4, pre and every MLP, as the official script does. \
        Runs of timm models (Balasubramanian et al.): a linear probe (--probe, from refract probe) classifies the \
        sum of components; --ablate names components, or --ablate-by-text PROPERTY with --align ALIGN chooses \
        the --top (10) by score(--spurious-texts) − score(--core-texts) of their aligned contributions (the \
        paper's texts by default); each is mean-ablated; --split val,test evaluates the paper's images. \
        Writes spurious.json and spurious.md into --output.
        """)

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "Waterbirds metadata.csv (img_filename, y, split, place).") var metadata: String
    @Option(name: .long, help: "CLIP runs: the two class names, for y = 0 then y = 1: landbird,waterbird, or a file with one per line.")
    var classes: String?
    @Option(name: .long, help: "Templates with {} for the class name, one per line (default: \"a photo of a {}.\").") var templates: String?
    @Option(name: .long, help: "Heads to ablate, as LAYER.HEAD: 11.3,10.7") var ablate: String?
    @Option(name: .long, help: "Choose the heads by this property, e.g. \"location\".") var ablateByText: String?
    @Option(name: .long, help: "How many heads (components) --ablate-by-text chooses (default: 8 heads; 10 components, as the paper for timm runs).") var top: Int?
    @Option(name: .long, help: "Rank heads by their descriptions in this TextSpan output (folder or textspan.json).") var textspan: String?
    @Flag(name: .long, help: "Also ablate every head of the layers before the last 4, pre and every MLP (the official script).")
    var paperAblations = false
    @Option(name: .long, help: "Draws of random heads (as many as chosen); 0 for none.") var randomDraws = 10
    @Option(name: .long, help: "Seed of the random draws.") var seed: UInt64 = 0
    @Option(name: .long, help: "Evaluate only this split: train, val, test (or 0, 1, 2); timm runs: a list, e.g. val,test (the paper); default: every run image.") var split: String?
    @Option(name: .long, help: "timm runs: the linear probe that classifies them (refract probe, on the training split).") var probe: String?
    @Option(name: .long, help: "timm runs with --ablate-by-text: the run's alignment into CLIP space (refract align).") var align: String?
    @Option(name: .customLong("spurious-texts"), help: "timm runs: the property's texts (default: the paper's water,ocean,lake,sky,land,forest,trees,bamboo,leaves).")
    var spuriousTexts: String?
    @Option(name: .customLong("core-texts"), help: "timm runs: the core texts whose score is subtracted (default: the paper's bird,finch,hummingbird,crow,sparrow,swan,albatross,pelican).")
    var coreTexts: String?
    @Option(name: .long, help: "Output directory.") var output: String
    @OptionGroup var textOptions: TextOptions

    func validate() throws {
        guard (ablate == nil) != (ablateByText == nil) else { throw ValidationError("give --ablate or --ablate-by-text (one of them)") }
        if ablateByText == nil && textspan != nil { throw ValidationError("--textspan needs --ablate-by-text") }
        if ablateByText?.trimmingCharacters(in: .whitespaces).isEmpty == true { throw ValidationError("--ablate-by-text is empty") }
        try CountBounds.check("--top", top, CountBounds.top)
        if classes == nil && probe == nil { throw ValidationError("give --classes (CLIP runs) or --probe (runs of timm models)") }
        try CountBounds.check("--random-draws", randomDraws, CountBounds.randomDraws)
    }

    func run() async throws {
        // Everything that needs no model first: the run, the metadata join, the classes, the heads.
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        if RunComponents.isTimm(reader) { return try await runComponents(reader) }
        guard probe == nil, align == nil, spuriousTexts == nil, coreTexts == nil else {
            throw ValidationError("--probe, --align, --spurious-texts and --core-texts are for runs of timm models; a CLIP run is classified zero-shot")
        }
        guard let classes else { throw ValidationError("--classes is required for a CLIP run (zero-shot class names)") }
        let top = self.top ?? 8
        let splitChoice = try split.map { try WaterbirdsSplit.parse($0) }
        let meta = try WaterbirdsMetadata.load(URL(fileURLWithPath: metadata))
        let evaluation = try meta.join(runPaths: reader.rowImages.map(\.path), runName: reader.run.path, split: splitChoice)
        let (classNames, classSource) = try SpuriousClasses.parse(classes)
        try SpuriousStudy.checkClasses(classNames, source: classSource)
        let templateList = try templates.map { try TextLists.readTemplates(URL(fileURLWithPath: $0)) }
            ?? ZeroShotClassifier.defaultTemplates
        let dims = reader.manifest.dimensions
        let nl = dims["layers"] ?? 0, nh = dims["heads"] ?? 0
        let explicit = try ablate.map { try HeadID.parseList($0, layers: nl, heads: nh) }
        let report = try textspan.map { try HeadSelection.loadTextSpanReport(URL(fileURLWithPath: $0)) }
        if let (r, file) = report { try HeadSelection.requireSameModel(r, file: file.path, as: reader) }
        var options = SpuriousOptions()
        options.paperAblations = paperAblations
        options.randomDraws = randomDraws
        options.seed = seed
        let candidateLayers: [Int]? = paperAblations ? Array(max(0, nl - options.paperKeptLayers)..<nl) : nil

        let (clip, hash, _) = try await textOptions.load(reader, align: nil, command: "spurious")
        let classifier = try clip.zeroShotClassifier(classes: classNames, templates: templateList)
        let choice: HeadChoice
        if let explicit {
            choice = try HeadSelection.explicit(explicit)
        } else {
            let property = ablateByText!.trimmingCharacters(in: .whitespaces)
            let (p, _) = try TextEmbeddings.load(pool: DescriptionPool(texts: [property], name: "--ablate-by-text"), model: clip,
                                                 weightsSHA256: hash, cache: textOptions.cache)
            if let (r, file) = report {
                let texts = HeadSelection.descriptions(of: r)
                let (e, _) = try TextEmbeddings.load(pool: DescriptionPool(texts: texts, name: file.path), model: clip,
                                                     weightsSHA256: hash, cache: textOptions.cache)
                choice = try HeadSelection.byTextSpan(r, file: file.path, property: property, propertyEmbedding: p.data,
                                                      descriptionEmbeddings: e, top: top, layers: candidateLayers,
                                                      runLayers: nl, runHeads: nh)
            } else {
                choice = try HeadSelection.byTextVariance(reader, property: property, direction: p.data, top: top, layers: candidateLayers)
            }
        }
        let result = try SpuriousStudy.run(reader, evaluation: evaluation, metadata: meta.path, classifier: classifier,
                                           choice: choice, options: options)
        try SpuriousRendering.write(result, to: URL(fileURLWithPath: output))

        print("heads: " + choice.heads.map(\.name).joined(separator: ", "))
        for s in result.settings {
            print(s.id.padding(toLength: max(16, s.id.count), withPad: " ", startingAt: 0)
                + String(format: " worst group %6.2f%% (%@)  average %6.2f%%", s.accuracy.worstGroupAccuracy, s.accuracy.worstGroup,
                         s.accuracy.average))
        }
        if let r = result.random {
            print(String(format: "random heads     worst group mean %6.2f%% max %6.2f%% (%d draws)", r.meanWorstGroup, r.maxWorstGroup,
                         r.draws.count))
        }
        FileHandle.standardError.write(Data("wrote \(output)/spurious.json, spurious.md\n".utf8))
    }

    /// A run of a timm model: the probe classifies Σ components; components chosen by name, or by
    /// score(spurious texts) − score(core texts) of their aligned contributions (the paper).
    func runComponents(_ reader: StoreReader) async throws {
        guard let probe else { throw ValidationError("a run of a timm model is classified by a linear probe: give --probe (refract probe)") }
        guard classes == nil, templates == nil, textspan == nil, !paperAblations else {
            throw ValidationError("--classes, --templates, --textspan and --paper-ablations are for CLIP runs; a timm run uses its probe's classes")
        }
        try BLAS.load()
        let meta = try WaterbirdsMetadata.load(URL(fileURLWithPath: metadata))
        let splits = try split.map { try Set($0.split(separator: ",").map { try WaterbirdsSplit.parse(String($0)) }) }
        var evaluation = try meta.join(runPaths: reader.rowImages.map(\.path), runName: reader.run.path, split: splits?.count == 1 ? splits!.first : nil)
        if let splits, splits.count > 1 { evaluation = ComponentSpuriousStudy.restrict(evaluation, to: splits, metadata: meta) }
        let p = try ProbeArtefact.load(URL(fileURLWithPath: probe))
        try p.check(run: reader)
        let names = try RunComponents.describe(reader).map(\.name)
        let chosen: [Int]
        let selection: ComponentSelectionSummary
        if let ablate {
            guard align == nil, spuriousTexts == nil, coreTexts == nil else { throw ValidationError("--align and the texts choose components with --ablate-by-text") }
            chosen = try ComponentSelection.parse(ablate, of: names)
            selection = ComponentSelectionSummary(rule: "explicit")
        } else {
            guard let align else { throw RunComponents.needsAlignment(reader, command: "spurious --ablate-by-text") }
            let property = ablateByText!.trimmingCharacters(in: .whitespaces)
            let spur = spuriousTexts.map(ScoreCommand.splitTexts) ?? ComponentSpuriousStudy.spuriousTexts
            let core = coreTexts.map(ScoreCommand.splitTexts) ?? ComponentSpuriousStudy.coreTexts
            try ScoreProperty.checkTexts(name: property, texts: spur, source: "--spurious-texts")
            try ScoreProperty.checkTexts(name: "core", texts: core, source: "--core-texts")
            let alignment = try Alignment.load(URL(fileURLWithPath: align))
            let aligned = try AlignedRun(reader: reader, alignment: alignment)
            let (clip, hash) = try await AlignmentCLIP.load(aligned.alignment, spec: textOptions.model, option: "--model",
                                                            threads: textOptions.threads)
            let templates = try SegmentText.imagenetTemplates()
            let properties = try [(property, spur), ("core", core)].map { name, texts in
                try ScoreProperty.embedded(name: name, texts: texts, clip: clip, weightsSHA256: hash, templates: templates,
                                           cache: textOptions.cache)
            }
            let scores = try ComponentScoring.score(reader, source: try ScoreSource.resolve(reader, alignment: alignment),
                                                    properties: properties, varianceExplained: false)
            let keys = ScoreRanking.keys(scores.properties[0].varianceAttributed, minus: scores.properties[1].varianceAttributed)
            chosen = Array(ScoreRanking.order(keys).prefix(top ?? 10)).sorted()
            selection = ComponentSelectionSummary(rule: "score", property: property, spuriousTexts: spur, coreTexts: core,
                                                  alignment: alignment.directory.path, keys: chosen.map { keys[$0] })
        }
        let report = try ComponentSpuriousStudy.run(reader, evaluation: evaluation, metadata: meta.path, probe: p, chosen: chosen,
                                                    selection: selection, randomDraws: randomDraws, seed: seed)
        let dir = URL(fileURLWithPath: output)
        try FileOutput.createDirectory(dir, action: "creating the output folder")
        try FileOutput.writeAtomically(Data(try Output.json(report).utf8), to: dir.appendingPathComponent("spurious.json"), what: "the spurious report")
        try FileOutput.writeAtomically(Data(ComponentSpuriousStudy.markdown(report).utf8), to: dir.appendingPathComponent("spurious.md"),
                                       what: "the spurious report (Markdown)")
        print("components: " + report.components.joined(separator: ", "))
        for s in report.settings {
            print(s.id.padding(toLength: max(16, s.id.count), withPad: " ", startingAt: 0)
                + String(format: " worst group %6.2f%% (%@)  average group %6.2f%%", s.accuracy.worstGroupAccuracy, s.accuracy.worstGroup,
                         s.accuracy.meanOverGroups))
        }
        if let r = report.random {
            print(String(format: "random components worst group mean %6.2f%% max %6.2f%% (%d draws)", r.meanWorstGroup, r.maxWorstGroup, r.draws.count))
        }
        FileHandle.standardError.write(Data("wrote \(output)/spurious.json, spurious.md\n".utf8))
    }
}
