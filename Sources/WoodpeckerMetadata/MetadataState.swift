import WoodpeckerCore

/// A key as etcd sees it: bytes, ordered bytewise (never by Unicode collation or canonical equivalence).
struct KeyBytes: Hashable, Comparable, Sendable {
    var bytes: [UInt8]
    init(_ s: String) { bytes = Array(s.utf8) }
    init(bytes: [UInt8]) { self.bytes = bytes }
    static func < (a: KeyBytes, b: KeyBytes) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
    var string: String { String(decoding: bytes, as: UTF8.self) }
    func hasPrefix(_ p: [UInt8]) -> Bool { bytes.starts(with: p) }
}

/// One physical change inside a committed revision. Replaying the same effects on the same state gives the same
/// state, so the journal stores effects rather than the transaction that produced them.
enum Effect: Equatable, Sendable {
    case put(key: KeyBytes, value: [UInt8], lease: Int64)
    case delete(KeyBytes)
}

/// One journal record. `commit` and a `revoke` that removes keys each bump the revision once.
enum JournalRecord: Equatable, Sendable {
    case commit(revision: Int64, effects: [Effect])
    case grant(lease: Int64, ttlSeconds: Int64)
    /// `revision` is the revision of the deletions of the lease's keys, 0 if it had none.
    case revoke(lease: Int64, revision: Int64)
}

struct LeaseState: Sendable {
    var ttlSeconds: Int64
    var deadlineMillis: UInt64
    var keys: Set<KeyBytes> = []
}

/// Bounds on requests, as etcd has them (`--max-txn-ops`, `--max-request-bytes`).
struct RequestLimits: Sendable {
    var maxTxnOps: Int
    var maxRequestBytes: Int
}

/// The key space and leases, with no I/O: the live store and journal replay both mutate it only through
/// `apply(_:nowMillis:)`, so a replayed state equals the state that wrote the journal.
struct MetadataState: Sendable {
    /// Store revision: 1 for an empty store, +1 per committed change.
    private(set) var revision: Int64 = 1
    private(set) var entries: [KeyBytes: KeyValue] = [:]
    /// Keys in byte order (for prefix ranges).
    private(set) var sortedKeys: [KeyBytes] = []
    private(set) var leases: [Int64: LeaseState] = [:]
    /// Next lease id to grant; only grows, and is persisted (snapshot and grant records), so ids are never reused.
    private(set) var nextLeaseId: Int64 = 1

    // MARK: reads

    func get(_ key: KeyBytes) -> KeyValue? { entries[key] }

    private func lowerBound(_ key: [UInt8]) -> Int {
        var lo = 0
        var hi = sortedKeys.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sortedKeys[mid].bytes.lexicographicallyPrecedes(key) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    func keys(withPrefix prefix: [UInt8], limit: Int = 0) -> ArraySlice<KeyBytes> {
        let start = lowerBound(prefix)
        var end = start
        while end < sortedKeys.count, sortedKeys[end].hasPrefix(prefix), limit <= 0 || end - start < limit { end += 1 }
        return sortedKeys[start..<end]
    }

    func range(prefix: [UInt8], limit: Int) -> [KeyValue] {
        keys(withPrefix: prefix, limit: limit).map { entries[$0]! }
    }

    /// etcd's compare: a missing key compares as createRevision = modRevision = version = 0, and a value compare on
    /// a missing key is false whatever the operator.
    func holds(_ c: Compare) -> Bool {
        let kv = entries[KeyBytes(c.key)]
        func cmp<T: Comparable>(_ a: T, _ b: T) -> Bool {
            switch c.op {
            case .equal: a == b
            case .notEqual: a != b
            case .greater: a > b
            case .less: a < b
            }
        }
        switch c.target {
        case .createRevision(let r): return cmp(kv?.createRevision ?? 0, r)
        case .modRevision(let r): return cmp(kv?.modRevision ?? 0, r)
        case .version(let v): return cmp(kv?.version ?? 0, v)
        case .value(let v):
            guard let kv else { return false }
            switch c.op {
            case .equal: return kv.value == v
            case .notEqual: return kv.value != v
            case .greater: return v.lexicographicallyPrecedes(kv.value)
            case .less: return kv.value.lexicographicallyPrecedes(v)
            }
        }
    }

    /// Leases whose deadline has passed, in id order.
    func expiredLeases(nowMillis: UInt64) -> [Int64] {
        leases.filter { $0.value.deadlineMillis <= nowMillis }.keys.sorted()
    }

    var earliestLeaseDeadline: UInt64? { leases.values.map(\.deadlineMillis).min() }

    // MARK: planning (validation, no mutation)

    /// Plans a transaction: checks it, evaluates the compares, and returns the record to commit (nil when the
    /// branch writes nothing) with the branch's gets, which see the branch's own earlier writes (as in etcd).
    func planTxn(compare: [Compare], then: [TxnOp], else elseOps: [TxnOp], limits: RequestLimits, store: String)
        throws(WoodpeckerError) -> (succeeded: Bool, record: JournalRecord?, gets: [KeyValue?])
    {
        try validate(compare: compare, ops: then, limits: limits, store: store)
        try validate(compare: [], ops: elseOps, limits: limits, store: store)
        let succeeded = compare.allSatisfy(holds)
        let ops = succeeded ? then : elseOps
        let rev = revision + 1
        var effects: [Effect] = []
        var overlay: [KeyBytes: KeyValue?] = [:]
        var gets: [KeyValue?] = []
        func current(_ k: KeyBytes) -> KeyValue? {
            if let o = overlay[k] { return o }
            return entries[k]
        }
        for op in ops {
            switch op {
            case let .put(key, value, lease):
                let k = KeyBytes(key)
                let old = current(k)
                effects.append(.put(key: k, value: value, lease: lease))
                overlay[k] = KeyValue(key: key, value: value, createRevision: old?.createRevision ?? rev,
                                      modRevision: rev, version: (old?.version ?? 0) + 1, lease: lease)
            case let .delete(key):
                let k = KeyBytes(key)
                if current(k) != nil {
                    effects.append(.delete(k))
                    overlay[k] = .some(nil)
                }
            case let .deletePrefix(prefix):
                for k in keys(withPrefix: Array(prefix.utf8)) where current(k) != nil {
                    effects.append(.delete(k))
                    overlay[k] = .some(nil)
                }
            case let .get(key):
                gets.append(current(KeyBytes(key)))
            }
        }
        return (succeeded, effects.isEmpty ? nil : .commit(revision: rev, effects: effects), gets)
    }

    private func validate(compare: [Compare], ops: [TxnOp], limits: RequestLimits, store: String) throws(WoodpeckerError) {
        guard compare.count <= limits.maxTxnOps, ops.count <= limits.maxTxnOps else {
            throw WoodpeckerError(.invalidArgument,
                                  "\(store): transaction has \(compare.count) compares and \(ops.count) operations; at most \(limits.maxTxnOps) of each (split it)")
        }
        var bytes = 0
        var putKeys = Set<KeyBytes>()
        var deletes: [(key: KeyBytes, prefix: Bool)] = []
        for c in compare {
            guard !c.key.isEmpty else { throw WoodpeckerError(.invalidArgument, "\(store): compare with an empty key") }
        }
        for op in ops {
            switch op {
            case let .put(key, value, lease):
                guard !key.isEmpty else { throw WoodpeckerError(.invalidArgument, "\(store): put with an empty key") }
                bytes += key.utf8.count + value.count
                guard putKeys.insert(KeyBytes(key)).inserted else {
                    throw WoodpeckerError(.invalidArgument, "\(store): duplicate key '\(key)' given in transaction")
                }
                if lease != 0, leases[lease] == nil {
                    throw WoodpeckerError(.keyNotFound, "\(store): lease \(lease) for key '\(key)' not found (expired or revoked); grant a new lease")
                }
            case let .delete(key):
                guard !key.isEmpty else { throw WoodpeckerError(.invalidArgument, "\(store): delete with an empty key") }
                deletes.append((KeyBytes(key), false))
            case let .deletePrefix(prefix):
                deletes.append((KeyBytes(prefix), true))
            case let .get(key):
                guard !key.isEmpty else { throw WoodpeckerError(.invalidArgument, "\(store): get with an empty key") }
            }
        }
        guard bytes <= limits.maxRequestBytes else {
            throw WoodpeckerError(.invalidArgument, "\(store): request of \(bytes) bytes exceeds the limit of \(limits.maxRequestBytes) bytes")
        }
        for d in deletes {
            let hit = d.prefix ? putKeys.first { $0.hasPrefix(d.key.bytes) } : (putKeys.contains(d.key) ? d.key : nil)
            if let hit {
                throw WoodpeckerError(.invalidArgument, "\(store): key '\(hit.string)' is both put and deleted in one transaction")
            }
        }
    }

    /// The record revoking `lease` (its keys are deleted at one new revision, if it has any).
    func planRevoke(_ lease: Int64) -> JournalRecord? {
        guard let l = leases[lease] else { return nil }
        return .revoke(lease: lease, revision: l.keys.isEmpty ? 0 : revision + 1)
    }

    // MARK: mutation

    mutating func extendLease(_ id: Int64, nowMillis: UInt64) -> Bool {
        guard var l = leases[id] else { return false }
        l.deadlineMillis = nowMillis + UInt64(l.ttlSeconds) * 1000
        leases[id] = l
        return true
    }

    /// Applies one record and returns the watch events it produced, in order. Throws if the record does not fit
    /// the state (a revision gap, an unknown lease): that is corruption, never a user error.
    mutating func apply(_ record: JournalRecord, nowMillis: UInt64) throws(WoodpeckerError) -> [WatchEvent] {
        switch record {
        case let .commit(rev, effects):
            guard rev == revision + 1, !effects.isEmpty else {
                throw WoodpeckerError(.metadataCorrupted, "commit at revision \(rev) does not follow revision \(revision)")
            }
            revision = rev
            return try effects.map { (e) throws(WoodpeckerError) -> WatchEvent in try applyEffect(e, revision: rev) }
        case let .grant(id, ttl):
            guard id > 0, leases[id] == nil, ttl > 0 else {
                throw WoodpeckerError(.metadataCorrupted, "lease grant \(id) (ttl \(ttl)) conflicts with the state")
            }
            leases[id] = LeaseState(ttlSeconds: ttl, deadlineMillis: nowMillis + UInt64(ttl) * 1000)
            nextLeaseId = max(nextLeaseId, id + 1)
            return []
        case let .revoke(id, rev):
            guard let l = leases[id], rev == (l.keys.isEmpty ? 0 : revision + 1) else {
                throw WoodpeckerError(.metadataCorrupted, "lease revoke \(id) at revision \(rev) does not fit the state (revision \(revision))")
            }
            var events: [WatchEvent] = []
            if rev != 0 {
                revision = rev
                for k in l.keys.sorted() { events.append(try applyEffect(.delete(k), revision: rev)) }
            }
            leases[id] = nil
            return events
        }
    }

    private mutating func applyEffect(_ e: Effect, revision rev: Int64) throws(WoodpeckerError) -> WatchEvent {
        switch e {
        case let .put(k, value, lease):
            let old = entries[k]
            if old == nil { sortedKeys.insert(k, at: lowerBound(k.bytes)) }
            if let oldLease = old?.lease, oldLease != 0 { leases[oldLease]?.keys.remove(k) }
            if lease != 0 {
                guard leases[lease] != nil else {
                    throw WoodpeckerError(.metadataCorrupted, "put of '\(k.string)' at revision \(rev) names unknown lease \(lease)")
                }
                leases[lease]!.keys.insert(k)
            }
            let kv = KeyValue(key: old?.key ?? k.string, value: value, createRevision: old?.createRevision ?? rev,
                              modRevision: rev, version: (old?.version ?? 0) + 1, lease: lease)
            entries[k] = kv
            return WatchEvent(kind: .put, kv: kv)
        case let .delete(k):
            guard let old = entries.removeValue(forKey: k) else {
                throw WoodpeckerError(.metadataCorrupted, "delete of absent key '\(k.string)' at revision \(rev)")
            }
            let i = lowerBound(k.bytes)
            precondition(i < sortedKeys.count && sortedKeys[i] == k, "sorted key index out of sync")
            sortedKeys.remove(at: i)
            if old.lease != 0 { leases[old.lease]?.keys.remove(k) }
            return WatchEvent(kind: .delete, kv: KeyValue(key: old.key, value: [], createRevision: 0, modRevision: rev, version: 0))
        }
    }

    // MARK: snapshot

    static let snapshotMagic: UInt32 = 0x5750_4D53  // "WPMS"
    static let snapshotVersion: UInt16 = 1

    /// The whole state as bytes: magic, version, journal generation that follows, revision, next lease id,
    /// leases (id, ttl), keys (key, value, createRevision, modRevision, version, lease), then CRC-32C of all before.
    func encodeSnapshot(journalGeneration: UInt64) -> [UInt8] {
        var b = ByteBuffer(capacity: 64 + entries.count * 64)
        b.writeInteger(Self.snapshotMagic)
        b.writeInteger(Self.snapshotVersion)
        b.writeInteger(journalGeneration)
        b.writeInteger(revision)
        b.writeInteger(nextLeaseId)
        b.writeUnsignedVarint(UInt64(leases.count))
        for (id, l) in leases.sorted(by: { $0.key < $1.key }) {
            b.writeInteger(id)
            b.writeInteger(l.ttlSeconds)
        }
        b.writeUnsignedVarint(UInt64(sortedKeys.count))
        for k in sortedKeys {
            let kv = entries[k]!
            b.writeUnsignedVarint(UInt64(k.bytes.count))
            b.writeBytes(k.bytes)
            b.writeUnsignedVarint(UInt64(kv.value.count))
            b.writeBytes(kv.value)
            b.writeInteger(kv.createRevision)
            b.writeInteger(kv.modRevision)
            b.writeInteger(kv.version)
            b.writeInteger(kv.lease)
        }
        b.writeInteger(CRC32C.checksum(b))
        return b.readableBytesArray
    }

    /// Decodes a snapshot; every lease gets a fresh deadline of its TTL from `nowMillis`.
    static func decodeSnapshot(_ bytes: [UInt8], nowMillis: UInt64, path: String) throws(WoodpeckerError)
        -> (state: MetadataState, journalGeneration: UInt64)
    {
        func corrupted(_ why: String) -> WoodpeckerError {
            WoodpeckerError(.metadataCorrupted, "snapshot \(path): \(why); restore the directory from a backup")
        }
        guard bytes.count >= 4 else { throw corrupted("only \(bytes.count) bytes") }
        let body = bytes[0..<(bytes.count - 4)]
        let crc = ByteBuffer(bytes: bytes[(bytes.count - 4)...])
        let stored: UInt32 = (try? crc.getInteger(at: 0)) ?? 0  // 4 bytes are present: checked above
        guard body.withUnsafeBytes({ CRC32C.checksum($0) }) == stored else { throw corrupted("CRC-32C mismatch") }
        var b = ByteBuffer(bytes: body)
        do {
            guard try b.readInteger(as: UInt32.self) == snapshotMagic else { throw corrupted("bad magic") }
            let version = try b.readInteger(as: UInt16.self)
            guard version == snapshotVersion else { throw corrupted("unknown format version \(version)") }
            let generation = try b.readInteger(as: UInt64.self)
            var s = MetadataState()
            s.revision = try b.readInteger()
            s.nextLeaseId = try b.readInteger()
            let leaseCount = try b.readUnsignedVarint()
            for _ in 0..<leaseCount {
                let id: Int64 = try b.readInteger()
                let ttl: Int64 = try b.readInteger()
                s.leases[id] = LeaseState(ttlSeconds: ttl, deadlineMillis: nowMillis + UInt64(max(ttl, 0)) * 1000)
            }
            let keyCount = try b.readUnsignedVarint()
            s.sortedKeys.reserveCapacity(Int(min(keyCount, 1 << 24)))
            for _ in 0..<keyCount {
                let k = KeyBytes(bytes: try b.readLengthPrefixedBytes())
                let value = try b.readLengthPrefixedBytes()
                let kv = KeyValue(key: k.string, value: value, createRevision: try b.readInteger(),
                                  modRevision: try b.readInteger(), version: try b.readInteger(), lease: try b.readInteger())
                if let last = s.sortedKeys.last, !(last < k) { throw corrupted("keys out of order at '\(k.string)'") }
                s.sortedKeys.append(k)
                s.entries[k] = kv
                if kv.lease != 0 {
                    guard s.leases[kv.lease] != nil else { throw corrupted("key '\(k.string)' names unknown lease \(kv.lease)") }
                    s.leases[kv.lease]!.keys.insert(k)
                }
            }
            guard b.readableBytes == 0 else { throw corrupted("\(b.readableBytes) trailing bytes") }
            return (s, generation)
        } catch let e as WoodpeckerError {
            throw e
        } catch {
            throw corrupted("\(error)")
        }
    }
}
