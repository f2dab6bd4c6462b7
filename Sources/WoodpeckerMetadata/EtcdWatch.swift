import Synchronization
import WoodpeckerCore
import WoodpeckerIO

/// A watch on an `EtcdMetadataStore`.
///
/// Delivers every change under the prefix with revision > `fromRevision`, in order. When the stream drops (etcd
/// restarted, endpoint lost) it reconnects, trying every endpoint, from the revision after the last one delivered,
/// so nothing is missed or repeated (etcd never splits one revision across messages). The stream ends:
/// - normally after `cancel()` or when the consumer stops iterating;
/// - with `.revisionConflict` ("compacted") when the revision to continue from is no longer kept;
/// - with retryable `.metadataUnavailable` when no endpoint answered for `watchReconnectTimeoutMs`;
/// - with retryable `.bufferFull` when the consumer falls more than `watchBufferEvents` behind;
/// - with `.clientClosed` when the store closes.
public final class EtcdWatch: MetadataWatch {
    public let events: AsyncThrowingStream<WatchEvent, any Error>
    private let continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation
    private let prefix: String
    private let fromRevision: Int64
    private let options: EtcdMetadataStore.Options
    private let connection: EtcdConnection
    private let onEnd: @Sendable () -> Void
    private struct State {
        var ended = false
        var current: EtcdWatchStream?
    }
    private let state: Mutex<State>

    init(stream: EtcdWatchStream, prefix: String, fromRevision: Int64, options: EtcdMetadataStore.Options,
         connection: EtcdConnection, onEnd: @escaping @Sendable () -> Void)
    {
        (events, continuation) = AsyncThrowingStream.makeStream(of: WatchEvent.self,
                                                                bufferingPolicy: .bufferingOldest(options.watchBufferEvents))
        self.prefix = prefix
        self.fromRevision = fromRevision
        self.options = options
        self.connection = connection
        self.onEnd = onEnd
        state = Mutex(State(current: stream))
    }

    public func cancel() { end(nil) }

    func fail(_ error: any Error) { end(error) }

    private func end(_ error: (any Error)?) {
        let (first, stream) = state.withLock { s -> (Bool, EtcdWatchStream?) in
            guard !s.ended else { return (false, nil) }
            s.ended = true
            defer { s.current = nil }
            return (true, s.current)
        }
        guard first else { return }
        if let error { continuation.finish(throwing: error) } else { continuation.finish() }
        if let stream { Task { await stream.cancel() } }
        onEnd()
    }

    func start(loop: EventLoop) {
        continuation.onTermination = { [weak self] _ in self?.end(nil) }
        Task(executorPreference: loop) { await self.run() }
    }

    // MARK: pump

    private var subject: String { "watch on prefix '\(prefix)'" }

    private func run() async {
        guard var stream = state.withLock({ $0.current }) else { return }
        var last = fromRevision > 0 ? fromRevision : stream.createdRevision
        while true {
            do {
                while let message = try await stream.nextMessage() {
                    guard try deliver(message, from: stream, last: &last) else { return }
                }
                // etcd closed the stream (shutdown): continue elsewhere.
            } catch is EtcdEndpointFailure {
                // Dropped: reconnect below.
            } catch {
                end(error)
                return
            }
            if state.withLock({ $0.ended }) { return }
            do {
                guard let next = try await reconnect(after: last) else { return }
                stream = next
            } catch {
                end(error)
                return
            }
        }
    }

    /// Yields the events of one message; false when the watch ended. Throws for a canceled watch.
    private func deliver(_ message: EtcdObject, from stream: EtcdWatchStream, last: inout Int64) throws -> Bool {
        if let e = message.object("error") {
            let code = e.int64("code") ?? 0
            if code == 16 || code == 14 {
                throw EtcdEndpointFailure.transport("\(stream.endpoint): \(e.string("message") ?? "stream error")")
            }
            throw connection.mapError(code: code, message: e.string("message") ?? "stream error",
                                      endpoint: stream.endpoint, path: "/v3/watch", subject: subject)
        }
        guard let result = message.object("result") else {
            throw WoodpeckerError(.metadataCorrupted, "\(stream.endpoint)/v3/watch for prefix '\(prefix)': message without result")
        }
        if result.bool("canceled") {
            let reason = result.string("cancel_reason") ?? ""
            if reason.contains("invalid auth token") {
                connection.invalidateToken(nil)
                throw EtcdEndpointFailure.transport("\(stream.endpoint): \(reason)")
            }
            throw EtcdWatchStream.canceledError(result, endpoint: stream.endpoint, subject: subject,
                                                storeName: connection.storeName)
        }
        var newest = last
        for e in result.objects("events") {
            guard let kv = e.object("kv").flatMap(EtcdJSON.keyValue) else {
                throw WoodpeckerError(.metadataCorrupted,
                                      "\(stream.endpoint)/v3/watch for prefix '\(prefix)': undecodable event after revision \(last)")
            }
            // Replayed duplicates cannot happen (we resume after `last`), but never deliver one.
            guard kv.modRevision > last else { continue }
            let kind: WatchEvent.Kind = e.string("type") == "DELETE" ? .delete : .put  // PUT is omitted (default)
            switch continuation.yield(WatchEvent(kind: kind, kv: kv)) {
            case .enqueued:
                newest = max(newest, kv.modRevision)
            case .dropped:
                end(WoodpeckerError(.bufferFull,
                                    "\(connection.storeName): \(subject) fell more than \(options.watchBufferEvents) events behind at revision \(kv.modRevision); watch again from the last revision received"))
                return false
            case .terminated:
                return false
            @unknown default:
                return false
            }
        }
        last = newest
        return true
    }

    /// Opens a new stream from `after + 1`, retrying with backoff up to `watchReconnectTimeoutMs`; nil if the
    /// watch ended meanwhile.
    private func reconnect(after last: Int64) async throws -> EtcdWatchStream? {
        let giveUpAt = Clock.monotonicMillis() + options.watchReconnectTimeoutMs
        var delayMs: UInt64 = 50
        while true {
            if state.withLock({ $0.ended }) { return nil }
            do {
                let s = try await EtcdWatchStream.open(connection: connection, prefix: prefix, startRevision: last + 1,
                                                       maxMessageBytes: options.maxWatchMessageBytes)
                let installed = state.withLock { st -> Bool in
                    guard !st.ended else { return false }
                    st.current = s
                    return true
                }
                if !installed {
                    await s.cancel()
                    return nil
                }
                return s
            } catch let e as WoodpeckerError where e.code == .metadataUnavailable && e.isRetryable {
                guard Clock.monotonicMillis() < giveUpAt else {
                    throw WoodpeckerError(.metadataUnavailable,
                                          "\(subject): could not resume from revision \(last + 1) within \(options.watchReconnectTimeoutMs) ms: \(e.message)")
                }
            }
            try? await Task.sleep(nanoseconds: delayMs * 1_000_000)  // cancellation is seen through `ended`
            delayMs = min(delayMs * 2, 1_000)
        }
    }
}
