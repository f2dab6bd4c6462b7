// A task group whose children return `(String, Result<Status, Failure>)` crashes in -O builds of Swift 6.3.1
// (use of a child's result after its memory was reused). Debug builds, and the same group with a struct result,
// run to the end. No I/O and no custom executor are involved.

struct Status: Sendable {
    var known: Bool
    var blocks: [Int64]
    var name: String
}

struct Failure: Error, Sendable {
    var message: String
}

final class Node: Sendable {
    let address: String
    init(address: String) { self.address = address }

    func fence(_ round: Int) async throws(Failure) -> Status {
        if (round + Int(address.utf8.last!)) % 7 == 0 { throw Failure(message: "\(address): down in round \(round)") }
        return Status(known: round % 5 != 0, blocks: (0..<Int64(round % 40)).map { $0 }, name: "segment-\(round)")
    }
}

struct Reply: Sendable {
    var address: String
    var result: Result<Status, Failure>
}

let nodes = (0..<3).map { Node(address: "127.0.0.1:\(9100 + $0)") }

/// The shape that crashes: a tuple holding a String and a Result.
func fenceWithTuples(_ round: Int) async -> Int {
    var known: [(String, Status)] = []
    var errors: [String] = []
    await withTaskGroup(of: (String, Result<Status, Failure>).self) { group in
        for node in nodes {
            group.addTask {
                do {
                    return (node.address, .success(try await node.fence(round)))
                } catch {
                    return (node.address, .failure(error as? Failure ?? Failure(message: "\(error)")))
                }
            }
        }
        for await (address, r) in group {
            switch r {
            case let .success(s) where s.known: known.append((address, s))
            case .success: errors.append("\(address): does not hold the segment")
            case let .failure(e): errors.append("\(address): \(e.message)")
            }
        }
    }
    return known.reduce(0) { $0 + $1.0.count + $1.1.name.count + $1.1.blocks.count } + errors.reduce(0) { $0 + $1.count }
}

/// The same group with a struct result.
func fenceWithStructs(_ round: Int) async -> Int {
    var known: [(String, Status)] = []
    var errors: [String] = []
    await withTaskGroup(of: Reply.self) { group in
        for node in nodes {
            group.addTask {
                do {
                    return Reply(address: node.address, result: .success(try await node.fence(round)))
                } catch {
                    return Reply(address: node.address, result: .failure(error as? Failure ?? Failure(message: "\(error)")))
                }
            }
        }
        for await reply in group {
            switch reply.result {
            case let .success(s) where s.known: known.append((reply.address, s))
            case .success: errors.append("\(reply.address): does not hold the segment")
            case let .failure(e): errors.append("\(reply.address): \(e.message)")
            }
        }
    }
    return known.reduce(0) { $0 + $1.0.count + $1.1.name.count + $1.1.blocks.count } + errors.reduce(0) { $0 + $1.count }
}

let useStructs = CommandLine.arguments.contains("structs")
let rounds = 200_000
var total = 0
for round in 0..<rounds {
    total &+= useStructs ? await fenceWithStructs(round) : await fenceWithTuples(round)
}
print("\(useStructs ? "structs" : "tuples"): \(rounds) rounds, checksum \(total)")
