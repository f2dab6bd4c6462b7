import ArgumentParser
struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "broker", abstract: "Run the Kafka-protocol broker.")
    func run() async throws { fail("broker: not built yet") }
}
