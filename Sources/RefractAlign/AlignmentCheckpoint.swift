// MARK: - The training state of an unfinished alignment
//
// ALIGN/checkpoint/state.safetensors   weights [C, d, D], bias [D], Adam's first and second moments
//                                       (weights then bias, flat), float32 as trained
// ALIGN/checkpoint/state.json          step, epoch, position in the epoch's order, the stopping
//                                       counters, the loss curve, the safetensors' SHA-256 and the
//                                       fingerprint of everything that must not change on resume
//
// The tensors go first and the JSON last, each written atomically, so the JSON always names a
// complete tensors file; a kill between the two leaves the previous JSON, whose hash no longer
// matches, and resuming says so instead of mixing states. Restoring the exact float32 state and
// recomputing the epoch's order from the seed makes a resumed run end with the maps an
// uninterrupted one makes.

import Foundation
import RefractCheckpoint
import RefractStore
import RefractTensor

public enum AlignmentCheckpoint {
    public static let directoryName = "checkpoint"
    static let tensorsFile = "state.safetensors"
    static let stateFile = "state.json"

    /// What a checkpoint must share with the run being resumed.
    public struct Fingerprint: Codable, Equatable, Sendable {
        var runId: String
        var modelSHA256: String
        var target: AlignmentTarget
        var components: [String]
        var width: Int
        var hyper: AlignerHyperparameters
        var seed: UInt64
        var heldOut: Int
        var train: Int
    }

    /// The training loop's position and counters.
    struct State: Codable, Equatable {
        var fingerprint: Fingerprint
        var step = 0
        var epoch = 0
        /// Training rows of the current epoch's order already trained on.
        var position = 0
        var minLoss = Double.infinity
        var sinceBest = 0
        var stopped: String?
        var loss: [AlignmentLossPoint] = []
        var tensorsSHA256 = ""

        init(fingerprint: Fingerprint) { self.fingerprint = fingerprint }

        private enum CodingKeys: String, CodingKey {
            case fingerprint, step, epoch, position, minLoss, sinceBest, stopped, loss, tensorsSHA256
        }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            fingerprint = try c.decode(Fingerprint.self, forKey: .fingerprint)
            step = try c.decode(Int.self, forKey: .step)
            epoch = try c.decode(Int.self, forKey: .epoch)
            position = try c.decode(Int.self, forKey: .position)
            minLoss = try c.decodeIfPresent(Double.self, forKey: .minLoss) ?? .infinity     // JSON has no infinity: absent
            sinceBest = try c.decode(Int.self, forKey: .sinceBest)
            stopped = try c.decodeIfPresent(String.self, forKey: .stopped)
            loss = try c.decode([AlignmentLossPoint].self, forKey: .loss)
            tensorsSHA256 = try c.decode(String.self, forKey: .tensorsSHA256)
        }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(fingerprint, forKey: .fingerprint)
            try c.encode(step, forKey: .step)
            try c.encode(epoch, forKey: .epoch)
            try c.encode(position, forKey: .position)
            if minLoss.isFinite { try c.encode(minLoss, forKey: .minLoss) }
            try c.encode(sinceBest, forKey: .sinceBest)
            try c.encodeIfPresent(stopped, forKey: .stopped)
            try c.encode(loss, forKey: .loss)
            try c.encode(tensorsSHA256, forKey: .tensorsSHA256)
        }
    }

    public static func directory(_ output: URL) -> URL { output.appendingPathComponent(directoryName, isDirectory: true) }

    /// Whether `output` holds a training state to resume from.
    public static func exists(_ output: URL) -> Bool {
        FileManager.default.fileExists(atPath: directory(output).appendingPathComponent(stateFile).path)
    }

    /// Writes the state (tensors, then the JSON that names them).
    static func save(_ output: URL, state: State, trainer: AlignerTrainer) throws {
        let dir = directory(output)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let m = trainer.maps
        var state = state
        state.step = trainer.step
        state.tensorsSHA256 = try writeFloatSafetensors(
            to: dir.appendingPathComponent(tensorsFile), metadata: ["format": "refract-alignment-checkpoint", "step": String(trainer.step)],
            tensors: [("weights", Tensor(shape: [m.components, m.width, m.clipWidth], data: m.weights)),
                      ("bias", Tensor(shape: [m.clipWidth], data: m.bias)),
                      ("adam_m", Tensor(shape: [trainer.firstMoment.count], data: trainer.firstMoment)),
                      ("adam_v", Tensor(shape: [trainer.secondMoment.count], data: trainer.secondMoment))])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try FileOutput.writeAtomically(try encoder.encode(state), to: dir.appendingPathComponent(stateFile), what: "the alignment checkpoint")
    }

    /// The saved state and trainer, or nil when there is no checkpoint yet (a run killed before its
    /// first one starts over). Throws when the checkpoint belongs to other inputs or options, or is damaged.
    static func load(_ output: URL, expecting fingerprint: Fingerprint) throws -> (state: State, trainer: AlignerTrainer)? {
        let dir = directory(output)
        let stateURL = dir.appendingPathComponent(stateFile), tensorsURL = dir.appendingPathComponent(tensorsFile)
        guard FileManager.default.fileExists(atPath: stateURL.path) else { return nil }
        let state: State
        do { state = try JSONDecoder().decode(State.self, from: try InputFile.read(stateURL.path)) } catch {
            throw AlignmentError(path: stateURL.path, message: "not a readable alignment checkpoint: \(error)")
        }
        guard state.fingerprint == fingerprint else {
            let f = state.fingerprint
            var what = [String]()
            if f.runId != fingerprint.runId || f.modelSHA256 != fingerprint.modelSHA256 { what.append("another run") }
            if f.target != fingerprint.target { what.append("other CLIP targets") }
            if f.hyper != fingerprint.hyper || f.seed != fingerprint.seed { what.append("other hyper-parameters or seed") }
            if f.heldOut != fingerprint.heldOut || f.train != fingerprint.train { what.append("another held-out split") }
            if what.isEmpty { what.append("other components") }
            throw AlignmentError(path: stateURL.path, message: "the checkpoint was made with \(what.joined(separator: ", ")); "
                + "resume with the same run, targets and options, or start a new --output")
        }
        let sha: String
        do { sha = try RefractCheckpoint.SHA256.hexDigest(ofFileAt: tensorsURL) } catch {
            throw AlignmentError(path: tensorsURL.path, message: "cannot read the checkpoint's tensors: \(error)")
        }
        guard sha == state.tensorsSHA256 else {
            throw AlignmentError(path: tensorsURL.path, message: "does not match state.json (SHA-256 differs): the checkpoint is damaged")
        }
        let c = fingerprint.components.count, d = fingerprint.width, e = fingerprint.target.width
        do {
            let file = try SafetensorsFile(url: tensorsURL)
            let w = try file.floatTensor("weights"), b = try file.floatTensor("bias")
            let m = try file.floatTensor("adam_m"), v = try file.floatTensor("adam_v")
            guard w.shape == [c, d, e], b.shape == [e], m.shape == [c * d * e + e], v.shape == m.shape else {
                throw AlignmentError(path: tensorsURL.path, message: "tensor shapes do not match the run's \(c) components of width \(d) into \(e)")
            }
            let trainer = AlignerTrainer(maps: AlignerWeights(components: c, width: d, clipWidth: e, weights: w.data, bias: b.data),
                                         hyper: fingerprint.hyper, step: state.step, firstMoment: m.data, secondMoment: v.data)
            return (state, trainer)
        } catch let e as AlignmentError {
            throw e
        } catch {
            throw AlignmentError(path: tensorsURL.path, message: "\(error)")
        }
    }
}
