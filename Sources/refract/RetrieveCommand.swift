// refract retrieve (skeleton).
import ArgumentParser

struct RetrieveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "retrieve", abstract: "Nearest images by chosen heads' contributions (in progress).")
    func run() async throws { throw ValidationError("retrieve: not built yet") }
}
