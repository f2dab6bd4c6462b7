import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata

/// Keeps a LogStore node registered in the metadata store: its address under `<root>/logstores/<address>`,
/// attached to a lease renewed every third of its TTL. If the node dies the key disappears with the lease, and
/// writers stop choosing the node for new segments. A lost lease (etcd away longer than the TTL) is replaced by a
/// new one once the store answers. Runs on `loop` until `stop()`.
public final class LogStoreRegistration: @unchecked Sendable {
    public let address: String
    public let key: String
    let metadata: any MetadataStore
    let loop: EventLoop
    let ttlSeconds: Int64
    private var lease: Int64 = 0
    private var task: Task<Void, Never>?

    /// Registers `address` now (failing if the metadata store cannot be reached) and keeps it registered.
    public static func start(metadata: any MetadataStore, metadataRoot: String = "woodpecker", address: String,
                             ttlSeconds: Int64 = 10, loop: EventLoop) async throws -> LogStoreRegistration {
        let r = LogStoreRegistration(metadata: metadata, key: MetaKeys(root: metadataRoot).logstoresPrefix + address,
                                     address: address, ttlSeconds: max(2, ttlSeconds), loop: loop)
        try await r.register()
        r.task = Task(executorPreference: loop) { await r.keepRegistered() }
        return r
    }

    private init(metadata: any MetadataStore, key: String, address: String, ttlSeconds: Int64, loop: EventLoop) {
        self.metadata = metadata
        self.key = key
        self.address = address
        self.ttlSeconds = ttlSeconds
        self.loop = loop
    }

    private func register() async throws {
        lease = try await metadata.grantLease(ttlSeconds: ttlSeconds)
        _ = try await metadata.put(key, Array(address.utf8), lease: lease)
    }

    private func keepRegistered() async {
        let interval = UInt64(ttlSeconds) * 1000 / 3
        var healthy = true
        while !Task.isCancelled {
            await loop.sleep(ms: healthy ? interval : 500)
            if Task.isCancelled { break }
            do {
                if healthy {
                    try await metadata.keepAlive(lease: lease)
                } else {
                    try await register()
                    Diagnostics.info("logstore \(address): registered again under \(key)")
                }
                healthy = true
            } catch {
                if healthy { Diagnostics.warn("logstore \(address): keeping \(key) registered failed: \(error); retrying") }
                healthy = false
            }
        }
    }

    /// Stops renewing and removes the registration (revoking the lease deletes the key).
    public func stop() async {
        task?.cancel()
        task = nil
        try? await metadata.revokeLease(lease)
    }
}

extension WoodpeckerClient {
    /// QuorumBuffer with `discoverFromMetadata`: lists the registered LogStore nodes now, then every
    /// `discoveryIntervalMs` in the background, so that new segments are placed on live nodes only.
    public func startLogStoreDiscovery() async throws {
        guard let pool, let quorum, quorum.discoverFromMetadata else { return }
        let prefix = keys.logstoresPrefix
        let metadata = self.metadata
        @Sendable func refresh() async throws {
            let kvs = try await metadata.range(prefix: prefix)
            pool.setRegistered(kvs.map { String(decoding: $0.value, as: UTF8.self) })
        }
        try await refresh()
        let interval = quorum.discoveryIntervalMs
        discoveryTask.start(Task(executorPreference: loop) {
            while !Task.isCancelled {
                await pool.loop.sleep(ms: interval)
                if Task.isCancelled { break }
                do { try await refresh() } catch { Diagnostics.debug("LogStore discovery: \(error)") }
            }
        })
    }
}

/// Holds the background discovery task of a client so that `closeNodes()` can cancel it.
final class TaskHolder: @unchecked Sendable {
    private var task: Task<Void, Never>?
    func start(_ t: Task<Void, Never>) {
        task?.cancel()
        task = t
    }
    func cancel() {
        task?.cancel()
        task = nil
    }
}
