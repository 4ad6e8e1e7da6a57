// MARK: - An alignment: a run's CompAlign maps on disk
//
// `refract align --output ALIGN` writes a directory:
//
//   ALIGN/manifest.json       format "refract-alignment", version, the run (id, path, convention), the
//                             decomposed model (id, weights SHA-256), the CLIP model of the targets, the
//                             component names in the order of the maps, the hyper-parameters, the
//                             held-out split, the loss curve and the held-out figures
//   ALIGN/maps.safetensors    weights [C, d, D] and bias [D] (the official `Aligner`'s tensor names)
//   ALIGN/loss.png            the loss curve
//
// The manifest is written last: a directory without one is an unfinished alignment (its
// `checkpoint/` lets `refract align --resume` go on). Loading checks the maps' SHA-256 and shapes
// against the manifest; `check(run:)` refuses an alignment of another run or model.

import Foundation
import RefractCheckpoint
import RefractDecompose
import RefractStore
import RefractTensor

/// Where the CLIP targets came from.
public struct AlignmentTarget: Codable, Sendable, Equatable {
    /// The CLIP model (id, layout, weights SHA-256) whose image embeddings are the targets.
    public var model: StoreModelInfo
    /// The embedding width D.
    public var width: Int
    /// `model` (embedded by `refract align --clip`) or the embeddings file given with --clip-embeddings.
    public var source: String

    public init(model: StoreModelInfo, width: Int, source: String) {
        self.model = model; self.width = width; self.source = source
    }
}

/// One point of the loss curve: the batch's total loss and its cosine part.
public struct AlignmentLossPoint: Codable, Sendable, Equatable {
    public var step: Int
    public var epoch: Int
    public var total: Double
    public var cosine: Double
    public init(step: Int, epoch: Int, total: Double, cosine: Double) {
        self.step = step; self.epoch = epoch; self.total = total; self.cosine = cosine
    }
}

/// How close each map is to a scaled isometry: W_cᵀW_c ≈ k_c·I with k_c = tr(W_cᵀW_c)/D and the
/// deviation ‖W_cᵀW_c − k_c·I‖_F / ‖k_c·I‖_F (0 for an exact scaled isometry).
public struct IsometryFigure: Codable, Sendable, Equatable {
    public var component: String
    public var scale: Double
    public var deviation: Double
    public init(component: String, scale: Double, deviation: Double) {
        self.component = component; self.scale = scale; self.deviation = deviation
    }
}

/// What a user can judge an alignment by, on images held out of training.
public struct AlignmentFigures: Codable, Sendable, Equatable {
    /// Held-out images.
    public var images: Int
    /// Mean cosine of the aligned sum Σ_c a_c to the CLIP embedding, after training and before (the
    /// seeded initial maps).
    public var meanCosine: Double
    public var meanCosineInitial: Double
    /// Zero-shot top-1 through the aligned sum with the CLIP text tower (class prompts with the 80
    /// templates), beside CLIP's own top-1 on the same images from its embeddings; nil when the run
    /// has no labels or no text tower was given.
    public var zeroShotTop1: Double?
    public var clipZeroShotTop1: Double?
    public var zeroShotClasses: Int?
    /// Per component, in the order of the maps.
    public var isometry: [IsometryFigure]

    public init(images: Int, meanCosine: Double, meanCosineInitial: Double, zeroShotTop1: Double?, clipZeroShotTop1: Double?,
                zeroShotClasses: Int?, isometry: [IsometryFigure]) {
        self.images = images; self.meanCosine = meanCosine; self.meanCosineInitial = meanCosineInitial
        self.zeroShotTop1 = zeroShotTop1; self.clipZeroShotTop1 = clipZeroShotTop1; self.zeroShotClasses = zeroShotClasses
        self.isometry = isometry
    }
}

/// tr Cov(a_c) over every row of the run the maps were trained on (1/N; the bias share is constant
/// and drops out): the denominator of variance_explained, kept so scoring the run needs no second
/// alignment of every component of every image.
public struct ComponentVariance: Codable, Sendable, Equatable {
    public var images: Int
    public var traces: [Double]
    public init(images: Int, traces: [Double]) { self.images = images; self.traces = traces }
}

/// manifest.json of an alignment.
public struct AlignmentManifest: Codable, Sendable, Equatable {
    public static let formatName = "refract-alignment"
    public static let currentFormatVersion = 1
    public static let fileName = "manifest.json"
    public static let mapsFileName = "maps.safetensors"
    public static let lossPlotFileName = "loss.png"

    public var format: String = formatName
    public var formatVersion: Int = currentFormatVersion
    public var createdBy: String
    /// The run the maps were trained on: its id, its path when trained, its convention.
    public var runId: String
    public var runPath: String
    public var convention: String
    /// The decomposed model.
    public var model: StoreModelInfo
    public var target: AlignmentTarget
    /// Component names in the order of the maps (the run's components tensor order).
    public var components: [String]
    /// d, the components' width.
    public var width: Int
    public var hyperparameters: AlignerHyperparameters
    public var seed: UInt64
    /// Run rows held out of training (the first `heldOut` of a seeded permutation of the rows), and
    /// the rows trained on.
    public var heldOut: Int
    public var trainImages: Int
    /// Adam steps taken, epochs begun, and why training stopped (`patience`, `epochs`).
    public var steps: Int
    public var epochs: Int
    public var stopped: String
    public var loss: [AlignmentLossPoint]
    public var figures: AlignmentFigures
    /// Per component, tr Cov(a_c) over the whole run (absent in alignments written before it was kept).
    public var componentVariance: ComponentVariance?
    /// Hex SHA-256 of maps.safetensors.
    public var mapsSHA256: String

    public init(createdBy: String, runId: String, runPath: String, convention: String, model: StoreModelInfo, target: AlignmentTarget,
                components: [String], width: Int, hyperparameters: AlignerHyperparameters, seed: UInt64, heldOut: Int, trainImages: Int,
                steps: Int, epochs: Int, stopped: String, loss: [AlignmentLossPoint], figures: AlignmentFigures,
                componentVariance: ComponentVariance? = nil, mapsSHA256: String) {
        self.createdBy = createdBy; self.runId = runId; self.runPath = runPath; self.convention = convention; self.model = model
        self.target = target; self.components = components; self.width = width; self.hyperparameters = hyperparameters; self.seed = seed
        self.heldOut = heldOut; self.trainImages = trainImages; self.steps = steps; self.epochs = epochs; self.stopped = stopped
        self.loss = loss; self.figures = figures; self.componentVariance = componentVariance; self.mapsSHA256 = mapsSHA256
    }
}

/// A trained alignment: manifest and maps.
public struct Alignment: Sendable {
    public var manifest: AlignmentManifest
    public var maps: AlignerWeights
    /// The directory it was loaded from.
    public var directory: URL

    public init(manifest: AlignmentManifest, maps: AlignerWeights, directory: URL) {
        self.manifest = manifest; self.maps = maps; self.directory = directory
    }

    /// Loads ALIGN/manifest.json and ALIGN/maps.safetensors, checking format, hash and shapes.
    public static func load(_ directory: URL) throws -> Alignment {
        let manifestURL = directory.appendingPathComponent(AlignmentManifest.fileName)
        func fail(_ url: URL, _ why: String) -> AlignmentError { AlignmentError(path: url.path, message: why) }
        guard FileManager.default.fileExists(atPath: manifestURL.path) else {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent(AlignmentCheckpoint.directoryName).path) {
                throw fail(directory, "an unfinished alignment (no manifest.json; continue it with refract align --resume)")
            }
            throw fail(directory, "not an alignment: no manifest.json (make one with refract align)")
        }
        let manifest: AlignmentManifest
        do {
            let data = try InputFile.read(manifestURL.path)
            struct Head: Decodable { var format: String?; var formatVersion: Int? }
            let head = try JSONDecoder().decode(Head.self, from: data)
            guard head.format == AlignmentManifest.formatName else {
                throw fail(manifestURL, "not an alignment manifest (format \(head.format.map { "'\($0)'" } ?? "missing"), expected '\(AlignmentManifest.formatName)')")
            }
            guard let v = head.formatVersion, v <= AlignmentManifest.currentFormatVersion, v >= 1 else {
                throw fail(manifestURL, "alignment format version \(head.formatVersion.map(String.init) ?? "missing") is not one this build reads (1...\(AlignmentManifest.currentFormatVersion))")
            }
            manifest = try JSONDecoder().decode(AlignmentManifest.self, from: data)
        } catch let e as AlignmentError {
            throw e
        } catch let e as InputFileError {
            throw fail(manifestURL, e.reason)
        } catch {
            throw fail(manifestURL, "not a valid alignment manifest: \(error)")
        }
        let mapsURL = directory.appendingPathComponent(AlignmentManifest.mapsFileName)
        let sha: String
        do { sha = try RefractCheckpoint.SHA256.hexDigest(ofFileAt: mapsURL) } catch {
            throw fail(mapsURL, "cannot read the maps: \(error)")
        }
        guard sha == manifest.mapsSHA256 else {
            throw fail(mapsURL, "SHA-256 \(sha.prefix(12))… is not the manifest's \(manifest.mapsSHA256.prefix(12))… (changed or damaged)")
        }
        let c = manifest.components.count, d = manifest.width, e = manifest.target.width
        let weights: Tensor, bias: Tensor
        do {
            let file = try SafetensorsFile(url: mapsURL)
            weights = try file.floatTensor("weights")
            bias = try file.floatTensor("bias")
        } catch {
            throw fail(mapsURL, "\(error)")
        }
        guard weights.shape == [c, d, e], bias.shape == [e] else {
            throw fail(mapsURL, "weights \(weights.shape) and bias \(bias.shape) do not match the manifest's [\(c), \(d), \(e)] and [\(e)]")
        }
        guard weights.data.allSatisfy(\.isFinite), bias.data.allSatisfy(\.isFinite) else {
            throw fail(mapsURL, "the maps hold NaN or infinite values")
        }
        return Alignment(manifest: manifest,
                         maps: AlignerWeights(components: c, width: d, clipWidth: e, weights: weights.data, bias: bias.data),
                         directory: directory)
    }

    /// Refuses an alignment made for another run, model or component list than `reader`'s.
    public func check(run reader: StoreReader) throws {
        let m = reader.manifest
        let here = directory.appendingPathComponent(AlignmentManifest.fileName).path
        guard manifest.model.weightsSHA256 == m.model.weightsSHA256 else {
            throw AlignmentError(path: here, message: "an alignment of \(manifest.model.id) (weights \(manifest.model.weightsSHA256.prefix(12))…), "
                + "not of the run's model \(m.model.id) (weights \(m.model.weightsSHA256.prefix(12))…) in \(reader.run.path)")
        }
        let names = try RunComponents.describe(reader).map(\.name)
        guard names == manifest.components, m.convention == manifest.convention else {
            throw AlignmentError(path: here, message: "aligned for \(manifest.components.count) components (convention \(manifest.convention)), "
                + "but the run \(reader.run.path) has \(names.count) (convention \(m.convention)): another decomposition of the model")
        }
        let d = try reader.spec("components").shape.last ?? 0
        guard d == manifest.width else {
            throw AlignmentError(path: here, message: "maps of width \(manifest.width), the run's components have width \(d)")
        }
    }

    /// The aligned components a_c = x_c·W_c + b/C [B, C, D] of a run's components x [B, C, d] (without
    /// the bias share for token maps, as the official code).
    public func alignedComponents(_ x: Tensor, bias: Bool = true) -> Tensor { maps.alignedComponents(x, bias: bias) }
}

/// An alignment that cannot be read or does not fit, naming the file.
public struct AlignmentError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var message: String
    public init(path: String, message: String) { self.path = path; self.message = message }
    public var description: String { "\(path): \(message)" }
}
