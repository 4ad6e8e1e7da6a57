// refract serve: parse, open the run (and its TextSpan report, alignment, text model), start the
// explorer's server, print where it listens.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCLIP
import RefractDecompose
import RefractExplore
import RefractServe
import RefractStore
import RefractTensor
import RefractTextSpan
import RefractTimm

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Explore a run in the browser: components with their words, a text box that ranks components, images, contributions and heatmaps.",
        discussion: """
        A local web server (pages that work offline) with a JSON API over the run (docs/Explorer.md). It listens on \
        127.0.0.1 unless --host says otherwise, serves only the run's own images (by row), and changes nothing. \
        Text features (ranking, contributions along a text, heatmaps) need the text model: the run's own CLIP model \
        (found as decompose found it, or --model), or for a timm run its alignment (--align) and that alignment's CLIP. \
        Start-up makes one pass over the run (each component's covariance), so that ranking is instant afterwards.
        """)

    @Option(name: .long, help: "Run directory.") var run: String
    @Option(name: .long, help: "A TextSpan output folder of this run (its textspan.json): descriptions beside every component.") var textspan: String?
    @Option(name: .long, help: "timm runs: the alignment (refract align) that puts the components into CLIP space.") var align: String?
    @Option(name: .long, help: "The CLIP model for texts (default: the run's model, or the alignment's CLIP).") var model: String?
    @Flag(name: .long, help: "Start without a text model (no ranking by text, contributions or heatmaps).") var noText = false
    @Option(name: .long, help: "Address to listen on (127.0.0.1: this machine only; any other is served with a warning).") var host = "127.0.0.1"
    @Option(name: .long, help: "Port (0: any free one; the address is printed).") var port = 8080
    @Option(name: .long, help: "BLAS threads.") var threads: Int?

    func validate() throws {
        try CountBounds.check("--threads", threads, CountBounds.threads)
        try CountBounds.check("--port", port, 0...65535)
    }

    func run() async throws {
        try BLAS.load()
        if let threads { BLAS.setThreads(threads) }
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        let alignment = try align.map { try Alignment.load(URL(fileURLWithPath: $0)) }
        let report: TextSpanReport? = try textspan.map { dir in
            let url = URL(fileURLWithPath: dir).appendingPathComponent("textspan.json")
            do { return try JSONDecoder().decode(TextSpanReport.self, from: InputFile.read(url.path)) } catch {
                throw ValidationError("\(url.path): not a TextSpan report (\(error))")
            }
        }
        var clip: CLIP?
        var timmModel: TimmModel?
        if !noText {
            do {
                if let alignment {
                    clip = try await AlignmentCLIP.load(alignment, spec: model, option: "--model", threads: threads).0
                    // The run's own model, for heatmaps (its weights checked against the run's).
                    do { timmModel = try await RunModel.loadAny(for: reader) as? TimmModel } catch {
                        note("no heatmaps: the run's model \(reader.manifest.model.id) could not be loaded (\(error))")
                    }
                } else if !RunComponents.isTimm(reader) {
                    clip = try await RunModel.load(for: reader, spec: model)
                }
            } catch {
                if model != nil || alignment != nil { throw error }
                note("no text model (\(error)); serving without text features: pass --model M with the run's model to have them")
            }
        }
        if host != "127.0.0.1" && host != "localhost" && host != "::1" {
            note("warning: listening on \(host): anyone who can reach this address can browse the run and its images")
        }
        let bar = ProgressBar(label: "start-up pass")
        let explorer = try Explorer(reader: reader, alignment: alignment, textspan: report, clip: clip, heatmaps: clip != nil,
                                    timmModel: timmModel, progress: { bar.update(done: $0, total: $1) })
        bar.finish()
        let shownHost = host.contains(":") ? "[\(host)]" : host
        do {
            try await serve(explorer, shownHost: shownHost, reader: reader)
        } catch let e as CancellationError {
            throw e
        } catch {
            let reason = "\(error)".contains("Address already in use") ? "the address is already in use" : "\(error)"
            throw ServeError(description: "cannot serve on \(shownHost):\(port): \(reason); choose another --port (0 picks a free one)")
        }
    }

    func serve(_ explorer: Explorer, shownHost: String, reader: StoreReader) async throws {
        try await ExplorerServer.run(explorer, host: host, port: port) { actual in
            // The line scripts wait for: the address, with the port actually bound.
            FileHandle.standardOutput.write(Data("serving \(reader.run.path) at http://\(shownHost):\(actual)/ (Ctrl-C to stop)\n".utf8))
        }
    }

    func note(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }
}

struct ServeError: Error, CustomStringConvertible { var description: String }
