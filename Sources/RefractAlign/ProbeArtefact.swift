// MARK: - A trained probe on disk, and training one on a run
//
// `refract probe --output PROBE` writes PROBE/probe.safetensors (weight [K, d], bias [K]: PyTorch's
// Linear names) and, last, PROBE/manifest.json (format "refract-probe": the run, the model and its
// weights hash, the feature tensor, classes and how labels were read, the rows trained on, the
// hyper-parameters, the loss per epoch, the training accuracy, the SHA-256 of the weights file).
// `check(run:)` refuses a probe of another model's features.

import Foundation
import RefractCheckpoint
import RefractDecompose
import RefractStore
import RefractTensor

public struct ProbeManifest: Codable, Sendable, Equatable {
    public static let formatName = "refract-probe"
    public static let currentFormatVersion = 1
    public static let fileName = "manifest.json"
    public static let weightsFileName = "probe.safetensors"

    public var format = formatName
    public var formatVersion = currentFormatVersion
    public var createdBy: String
    public var runId: String
    public var runPath: String
    public var model: StoreModelInfo
    /// The run tensor the probe reads (`representation`, or a CLIP run's `embedding`).
    public var feature: String
    public var width: Int
    public var classes: [String]
    /// Where labels came from (`label`, or a metadata column) and how they map to `classes`.
    public var labels: String
    public var labelMapping: String
    /// `COLUMN=VALUE` filters choosing the training rows, and how many rows they left.
    public var filters: [String]
    public var trainRows: Int
    public var hyperparameters: ProbeHyperparameters
    public var seed: UInt64
    public var lossPerEpoch: [Double]
    /// Accuracy on the training rows after training (0...1).
    public var trainAccuracy: Double
    public var weightsSHA256: String
}

/// How the training rows and their labels are chosen.
public struct ProbeData: Sendable {
    /// `COLUMN=VALUE`: rows whose metadata column (a CSV list's column) has that value.
    public var filters: [(column: String, value: String)] = []
    /// A metadata column holding the label (nil: the run's label: class folder or label column).
    public var labelColumn: String?
    /// Class names in label order (nil: the run's class names, else its sorted distinct labels).
    public var classes: [String]?
    public var classesSource = "the run's labels"
    public init() {}
}

public struct ProbeArtefact: Sendable {
    public var manifest: ProbeManifest
    public var probe: LinearProbe
    public var directory: URL

    /// The feature tensor of a run: `representation` (timm), else `embedding` (CLIP).
    public static func feature(of reader: StoreReader) throws -> (name: String, width: Int) {
        for name in ["representation", "embedding"] {
            if let spec = reader.manifest.tensors.first(where: { $0.name == name }), spec.shape.count == 1 { return (name, spec.shape[0]) }
        }
        throw AlignmentError(path: reader.run.path, message: "the run stores no representation or embedding tensor to train a probe on")
    }

    /// The training rows of `reader` and every row's class index (nil: no label or filtered out).
    public static func rows(_ reader: StoreReader, data: ProbeData) throws -> (rows: [Int], labels: [Int?], classes: [String], mapping: String) {
        let images = reader.rowImages
        func value(_ image: StoreImage, _ column: String) -> String? { image.columns?[column] }
        for f in data.filters where !images.contains(where: { value($0, f.column) != nil }) {
            throw AlignmentError(path: reader.run.path, message: "no image of the run has a column '\(f.column)' (filters read the columns of a CSV image list)")
        }
        if let c = data.labelColumn, !images.contains(where: { value($0, c) != nil }) {
            throw AlignmentError(path: reader.run.path, message: "no image of the run has a label column '\(c)'")
        }
        let raw: [String?] = images.map { image in data.labelColumn.map { value(image, $0) } ?? image.label }
        let chosen = images.indices.filter { r in data.filters.allSatisfy { value(images[r], $0.column) == $0.value } }
        let present = chosen.compactMap { raw[$0] }
        guard !present.isEmpty else {
            throw AlignmentError(path: reader.run.path, message: "no labelled image is left to train on (\(chosen.count) of \(images.count) rows "
                + "pass the filters, none of them with a label)")
        }
        let classes = data.classes ?? reader.manifest.classNames.flatMap { $0.isEmpty ? nil : $0 }
            ?? Set(present).sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
        guard classes.count >= 2 else {
            throw AlignmentError(path: reader.run.path, message: "\(classes.count) class (\(classes.joined(separator: ", "))): a probe needs at least 2")
        }
        let (mapping, index) = try LabelMapping.resolve(labels: raw.compactMap { $0 }, classes: classes, file: data.classesSource)
        let labels = raw.map { $0.flatMap { index[$0] } }
        return (chosen.filter { labels[$0] != nil }, labels, classes, mapping.rawValue)
    }

    /// Trains a probe on the run's features and writes it to `output` (new or empty).
    public static func train(_ reader: StoreReader, data: ProbeData, hyper: ProbeHyperparameters, seed: UInt64, output: URL,
                             createdBy: String) throws -> ProbeArtefact {
        let (feature, d) = try feature(of: reader)
        let (rows, labels, classes, mapping) = try self.rows(reader, data: data)
        guard hyper.batchSize >= 1, hyper.epochs >= 1, hyper.learningRate > 0 else {
            throw AlignmentError(path: output.path, message: "batch size and epochs must be at least 1, the learning rate positive")
        }
        let fm = FileManager.default
        if fm.fileExists(atPath: output.path) {
            let entries = ((try? fm.contentsOfDirectory(atPath: output.path)) ?? []).filter { !$0.hasPrefix(".") }
            guard entries.isEmpty else { throw AlignmentError(path: output.path, message: "is not empty; choose a new or empty directory") }
        }
        try fm.createDirectory(at: output, withIntermediateDirectories: true)
        var trainer = ProbeTrainer(probe: .initial(classes: classes.count, width: d, seed: seed), hyper: hyper)
        func features(_ batch: [Int]) throws -> Tensor {
            let x = try reader.tensor(feature, rowList: batch)
            if let bad = x.data.firstIndex(where: { !$0.isFinite }) {
                let r = batch[bad / d]
                throw AlignmentError(path: reader.run.path, message: "the \(feature) of row \(r) (\(reader.rowImages[r].path)) holds NaN or infinite values")
            }
            return x
        }
        let curve = try trainer.fit(rows: rows, labels: labels.map { $0 ?? 0 }, seed: seed, features: features)
        var correct = 0
        for start in stride(from: 0, to: rows.count, by: 1024) {
            let batch = Array(rows[start..<min(rows.count, start + 1024)])
            for (r, p) in zip(batch, trainer.probe.predict(try features(batch))) where labels[r] == p { correct += 1 }
        }
        let p = trainer.probe
        let sha = try writeFloatSafetensors(to: output.appendingPathComponent(ProbeManifest.weightsFileName),
                                            metadata: ["format": ProbeManifest.formatName, "run_id": reader.manifest.runId],
                                            tensors: [("weight", Tensor(shape: [p.classes, d], data: p.weight)),
                                                      ("bias", Tensor(shape: [p.classes], data: p.bias))])
        let filterWords = data.filters.map { "\($0.column)=\($0.value)" }
        let manifest = ProbeManifest(createdBy: createdBy, runId: reader.manifest.runId, runPath: reader.run.path, model: reader.manifest.model,
                                     feature: feature, width: d, classes: classes, labels: data.labelColumn.map { "column \($0)" } ?? "label",
                                     labelMapping: mapping, filters: filterWords, trainRows: rows.count, hyperparameters: hyper, seed: seed,
                                     lossPerEpoch: curve, trainAccuracy: Double(correct) / Double(max(rows.count, 1)), weightsSHA256: sha)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try FileOutput.writeAtomically(try encoder.encode(manifest), to: output.appendingPathComponent(ProbeManifest.fileName), what: "the probe manifest")
        return ProbeArtefact(manifest: manifest, probe: p, directory: output)
    }

    /// Loads PROBE/manifest.json and PROBE/probe.safetensors, checking format, hash and shapes.
    public static func load(_ directory: URL) throws -> ProbeArtefact {
        let url = directory.appendingPathComponent(ProbeManifest.fileName)
        func fail(_ u: URL, _ why: String) -> AlignmentError { AlignmentError(path: u.path, message: why) }
        guard FileManager.default.fileExists(atPath: url.path) else { throw fail(directory, "not a probe: no manifest.json (make one with refract probe)") }
        let manifest: ProbeManifest
        do {
            manifest = try JSONDecoder().decode(ProbeManifest.self, from: try InputFile.read(url.path))
        } catch {
            throw fail(url, "not a readable probe manifest: \(error)")
        }
        guard manifest.format == ProbeManifest.formatName, (1...ProbeManifest.currentFormatVersion).contains(manifest.formatVersion) else {
            throw fail(url, "not a probe manifest of a version this build reads")
        }
        let weights = directory.appendingPathComponent(ProbeManifest.weightsFileName)
        let sha: String
        do { sha = try RefractCheckpoint.SHA256.hexDigest(ofFileAt: weights) } catch { throw fail(weights, "cannot read the probe: \(error)") }
        guard sha == manifest.weightsSHA256 else { throw fail(weights, "SHA-256 differs from the manifest's (changed or damaged)") }
        do {
            let file = try SafetensorsFile(url: weights)
            let w = try file.floatTensor("weight"), b = try file.floatTensor("bias")
            let k = manifest.classes.count, d = manifest.width
            guard w.shape == [k, d], b.shape == [k] else { throw fail(weights, "weight \(w.shape), bias \(b.shape); the manifest says [\(k), \(d)]") }
            guard w.data.allSatisfy(\.isFinite), b.data.allSatisfy(\.isFinite) else { throw fail(weights, "NaN or infinite values") }
            return ProbeArtefact(manifest: manifest, probe: LinearProbe(classes: k, width: d, weight: w.data, bias: b.data), directory: directory)
        } catch let e as AlignmentError {
            throw e
        } catch {
            throw fail(weights, "\(error)")
        }
    }

    /// Refuses a probe trained on another model's features (or another feature width).
    public func check(run reader: StoreReader) throws {
        let (_, d) = try Self.feature(of: reader)
        guard manifest.model.weightsSHA256 == reader.manifest.model.weightsSHA256, d == manifest.width else {
            throw AlignmentError(path: directory.appendingPathComponent(ProbeManifest.fileName).path,
                                 message: "a probe of \(manifest.model.id) (weights \(manifest.model.weightsSHA256.prefix(12))…, width \(manifest.width)), "
                                    + "not of the run's model \(reader.manifest.model.id) (weights \(reader.manifest.model.weightsSHA256.prefix(12))…, width \(d))")
        }
    }
}
