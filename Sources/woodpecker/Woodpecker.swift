import ArgumentParser

@main
struct WoodpeckerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "woodpecker",
        abstract: "Woodpecker: a zero-disk write-ahead log on object storage, with a Kafka-protocol broker.",
        subcommands: [BrokerCommand.self, WALCommand.self, BenchCommand.self, LogStoreCommand.self])
}

struct WALCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "Use a Woodpecker log directly (embedded metadata, local storage).",
        subcommands: [WALAppend.self, WALRead.self, WALBench.self, WALList.self])
}
