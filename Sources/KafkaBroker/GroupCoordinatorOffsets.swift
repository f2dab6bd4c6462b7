import Foundation
import KafkaProtocol
import WoodpeckerCore
import WoodpeckerMetadata

/// Committed offsets in the metadata store: one key per group/topic/partition
/// (`<prefix>groups/<group>/offsets/<topic>/<partition>`, JSON `CommittedOffset`) plus an index key per group
/// (`<prefix>group-index/<group>`) so groups with offsets but no members can be listed. Group ids are
/// percent-encoded in keys (anything outside `A-Za-z0-9._-`).
extension GroupCoordinator {
    static let maxOpsPerTxn = 100

    static func encodeKeyPart(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    static func decodeKeyPart(_ s: String) -> String {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "%"), it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(c)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    nonisolated func groupPrefix(_ group: String) -> String { prefix + "groups/" + Self.encodeKeyPart(group) + "/" }
    nonisolated func offsetsPrefix(_ group: String) -> String { groupPrefix(group) + "offsets/" }
    nonisolated func offsetKey(_ group: String, _ topic: String, _ partition: Int32) -> String {
        offsetsPrefix(group) + topic + "/" + String(partition)
    }
    nonisolated func indexKey(_ group: String) -> String { prefix + "group-index/" + Self.encodeKeyPart(group) }

    /// Writes the offsets (atomically per chunk of `maxOpsPerTxn`) and the group's index key.
    func storeOffsets(group: String, _ entries: [(topic: String, partition: Int32, value: CommittedOffset)]) async throws {
        let enc = JSONEncoder()
        enc.outputFormatting = .sortedKeys
        var ops: [TxnOp] = [.put(key: indexKey(group), value: Array(group.utf8))]
        for e in entries {
            ops.append(.put(key: offsetKey(group, e.topic, e.partition), value: Array(try enc.encode(e.value))))
        }
        var i = 0
        while i < ops.count {
            let chunk = Array(ops[i..<min(i + Self.maxOpsPerTxn, ops.count)])
            _ = try await metadata.txn(compare: [], then: chunk)
            i += Self.maxOpsPerTxn
        }
    }

    /// Every committed offset of `group`, by topic then partition. Unparseable values are skipped with a warning.
    func committedOffsets(group: String) async throws -> [String: [Int32: CommittedOffset]] {
        let p = offsetsPrefix(group)
        var out: [String: [Int32: CommittedOffset]] = [:]
        let dec = JSONDecoder()
        for kv in try await metadata.range(prefix: p) {
            let rest = kv.key.dropFirst(p.count)
            guard let slash = rest.lastIndex(of: "/"), let part = Int32(rest[rest.index(after: slash)...]) else { continue }
            let topic = String(rest[..<slash])
            guard let v = try? dec.decode(CommittedOffset.self, from: Data(kv.value)) else {
                Diagnostics.warn("committed offset \(kv.key) is not valid JSON; ignored")
                continue
            }
            out[topic, default: [:]][part] = v
        }
        return out
    }

    func deleteOffsets(group: String, _ parts: [(topic: String, partition: Int32)]) async throws {
        var i = 0
        while i < parts.count {
            let chunk = parts[i..<min(i + Self.maxOpsPerTxn, parts.count)].map { TxnOp.delete(key: offsetKey(group, $0.topic, $0.partition)) }
            _ = try await metadata.txn(compare: [], then: chunk)
            i += Self.maxOpsPerTxn
        }
    }

    /// Removes every committed offset and the index key of `group`.
    func deleteAllOffsets(group: String) async throws {
        _ = try await metadata.txn(compare: [], then: [.deletePrefix(groupPrefix(group)), .delete(key: indexKey(group))])
    }

    /// Groups that have committed offsets (from the index keys).
    func groupsWithOffsets() async throws -> [String] {
        let p = prefix + "group-index/"
        return try await metadata.range(prefix: p).map { Self.decodeKeyPart(String($0.key.dropFirst(p.count))) }
    }

    func hasOffsets(group: String) async throws -> Bool {
        try await metadata.get(indexKey(group)) != nil
    }
}
