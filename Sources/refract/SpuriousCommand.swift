// refract spurious (skeleton).
import ArgumentParser

struct SpuriousCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "spurious", abstract: "Per-group accuracy under head ablations (in progress).")
    func run() async throws { throw ValidationError("spurious: not built yet") }
}
