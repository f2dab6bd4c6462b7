import ArgumentParser
import WoodpeckerIO

@main
struct WoodpeckerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "woodpecker",
        abstract: "Woodpecker: a zero-disk write-ahead log on object storage, with a Kafka-protocol broker.",
        subcommands: [BrokerCommand.self, WALCommand.self, BenchCommand.self, LogStoreCommand.self])

    /// Configures the allocator before any command runs (see `MemoryReleaser.configureAllocator`), then parses
    /// and runs the command as ArgumentParser would.
    static func main() async {
        MemoryReleaser.configureAllocator()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

struct WALCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "Use a Woodpecker log directly (embedded metadata, local storage).",
        subcommands: [WALAppend.self, WALRead.self, WALBench.self, WALList.self])
}
