import Synchronization
import WoodpeckerCore
import WoodpeckerIO

/// Why one endpoint did not answer a call.
enum EtcdEndpointFailure: Error {
    /// Nothing was sent (refused, unresolvable, not yet connected): safe to try the next endpoint for any call.
    case connect(String)
    /// The request may have reached etcd (reset, timeout, etcd without leader): only reads may be tried elsewhere.
    case transport(String)
}

/// The etcd client behind `EtcdMetadataStore`: JSON calls against a list of endpoints with failover, optional
/// authentication (token header, renewed when etcd rejects it) and a deadline per call.
final class EtcdConnection: Sendable {
    struct Credentials: Sendable {
        var username: String
        var password: String
    }

    private struct State {
        /// Index of the endpoint that answered last; calls start there.
        var preferred = 0
        var token: String?
    }

    let endpoints: [String]
    let http: HTTPClient
    let credentials: Credentials?
    let requestTimeoutMs: UInt64
    let storeName: String
    private let state = Mutex(State())

    init(endpoints: [String], http: HTTPClient, credentials: Credentials?, requestTimeoutMs: UInt64, storeName: String) {
        precondition(!endpoints.isEmpty, "EtcdConnection needs at least one endpoint")
        self.endpoints = endpoints
        self.http = http
        self.credentials = credentials
        self.requestTimeoutMs = requestTimeoutMs
        self.storeName = storeName
    }

    /// Endpoint indexes in the order to try them: the last one that answered first.
    func endpointOrder() -> [Int] {
        let start = state.withLock { $0.preferred }
        return (0..<endpoints.count).map { (start + $0) % endpoints.count }
    }

    func markPreferred(_ index: Int) { state.withLock { $0.preferred = index } }

    /// POSTs `body` to `path` (e.g. "/v3/kv/range") and returns the decoded response.
    ///
    /// Tries the endpoints in turn while they cannot be reached; when `idempotent`, also after errors that may have
    /// happened after etcd received the request. `subject` names what the call is about ("key 'x'") in errors.
    func call(_ path: String, _ body: [String: Any], subject: String, idempotent: Bool) async throws -> EtcdObject {
        let payload = EtcdJSON.encode(body)
        let deadline = Clock.monotonicMillis() + requestTimeoutMs
        var failures: [String] = []
        for index in endpointOrder() {
            let endpoint = endpoints[index]
            do {
                let result = try await callEndpoint(endpoint, path, payload, subject: subject, deadline: deadline)
                markPreferred(index)
                return result
            } catch let f as EtcdEndpointFailure {
                switch f {
                case let .connect(m):
                    failures.append(m)
                case let .transport(m):
                    guard idempotent else {
                        throw WoodpeckerError(.metadataUnavailable,
                                              "\(storeName): \(path) for \(subject) failed on \(endpoint): \(m); the outcome is unknown, read the key and retry")
                    }
                    failures.append(m)
                }
            }
            if Clock.monotonicMillis() >= deadline { break }
        }
        throw WoodpeckerError(.metadataUnavailable,
                              "\(storeName): \(path) for \(subject): no etcd endpoint answered (\(failures.joined(separator: "; "))); check that etcd is running and retry")
    }

    /// One call against one endpoint, authenticating first when needed and once more if the token was rejected.
    private func callEndpoint(_ endpoint: String, _ path: String, _ payload: ByteBuffer, subject: String,
                              deadline: UInt64) async throws -> EtcdObject
    {
        var renewed = false
        while true {
            let token = try await authToken(endpoint, deadline: deadline, subject: subject)
            let (status, object) = try await post(endpoint, path, payload, token: token, subject: subject,
                                                  deadline: deadline)
            if status == 200, object["error"] == nil { return object }
            let code = object.int64("code") ?? 0
            let message = object.string("message") ?? object.string("error") ?? "HTTP \(status)"
            if code == 16, credentials != nil, !renewed {  // Unauthenticated: the token expired or etcd restarted
                invalidateToken(token)
                renewed = true
                continue
            }
            throw mapError(code: code, message: message, endpoint: endpoint, path: path, subject: subject)
        }
    }

    /// Sends one POST and decodes the JSON body, whatever the status.
    func post(_ endpoint: String, _ path: String, _ payload: ByteBuffer, token: String?, subject: String,
              deadline: UInt64) async throws -> (Int, EtcdObject)
    {
        let now = Clock.monotonicMillis()
        guard now < deadline else {
            throw EtcdEndpointFailure.transport("\(endpoint): timed out after \(requestTimeoutMs) ms")
        }
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/json")
        if let token { headers.add("Authorization", token) }
        let request = HTTPRequest(method: "POST", url: endpoint + path, headers: headers, body: payload,
                                  timeoutMs: deadline - now)
        let response: HTTPResponse
        do {
            response = try await http.execute(request)
        } catch let e as WoodpeckerError {
            throw classify(e, endpoint: endpoint)
        }
        let bytes = response.body.readableBytesArray
        guard let object = EtcdJSON.decode(bytes) else {
            throw WoodpeckerError(.metadataCorrupted,
                                  "\(storeName): \(endpoint)\(path) for \(subject): undecodable response (HTTP \(response.status)): \(EtcdJSON.snippet(bytes)); is this an etcd v3 endpoint?")
        }
        return (response.status, object)
    }

    /// Sorts an HTTP client error into "nothing sent" and "maybe sent"; a closed client is passed through.
    func classify(_ e: WoodpeckerError, endpoint: String) -> any Error {
        if e.code == .clientClosed { return WoodpeckerError(.clientClosed, "\(storeName) is closed") }
        if e.code == .timeout { return EtcdEndpointFailure.transport("\(endpoint): \(e.message)") }
        let m = e.message
        if m.contains("could not connect") || m.contains("could not resolve") {
            return EtcdEndpointFailure.connect("\(endpoint) unreachable: \(m)")
        }
        return EtcdEndpointFailure.transport("\(endpoint): \(m)")
    }

    /// Maps a gRPC status from the gateway to a Woodpecker error.
    func mapError(code: Int64, message: String, endpoint: String, path: String, subject: String) -> any Error {
        let where_ = "\(storeName): \(endpoint)\(path) for \(subject)"
        switch code {
        case 5:  // NotFound: lease not found
            return WoodpeckerError(.keyNotFound, "\(where_): \(message)")
        case 4, 8, 14:  // DeadlineExceeded, ResourceExhausted, Unavailable (no leader, request timed out)
            return EtcdEndpointFailure.transport("\(endpoint): \(message)")
        case 16:
            return WoodpeckerError(.invalidArgument,
                                   "\(where_): etcd rejected the request as unauthenticated (\(message)); configure a user and password")
        case 3 where message.contains("user name is empty"):
            return WoodpeckerError(.invalidArgument,
                                   "\(where_): etcd has authentication enabled (\(message)); configure a user and password")
        case 7:  // PermissionDenied
            return WoodpeckerError(.invalidArgument, "\(where_): permission denied (\(message)); grant the user access to these keys")
        case 11 where message.contains("compacted"):
            return WoodpeckerError(.revisionConflict, "\(where_): \(message)")
        default:
            return WoodpeckerError(.invalidArgument, "\(where_): etcd error \(code): \(message)")
        }
    }

    // MARK: authentication

    /// The token to send, authenticating against `endpoint` when there is none yet; nil without credentials.
    func authToken(_ endpoint: String, deadline: UInt64, subject: String) async throws -> String? {
        guard let credentials else { return nil }
        if let t = state.withLock({ $0.token }) { return t }
        let body = EtcdJSON.encode(["name": credentials.username, "password": credentials.password])
        let (status, object) = try await post(endpoint, "/v3/auth/authenticate", body, token: nil, subject: subject,
                                              deadline: deadline)
        if status == 200, let token = object.string("token"), !token.isEmpty {
            state.withLock { $0.token = token }
            return token
        }
        let code = object.int64("code") ?? 0
        let message = object.string("message") ?? object.string("error") ?? "HTTP \(status)"
        if code == 4 || code == 8 || code == 14 {
            throw EtcdEndpointFailure.transport("\(endpoint): authenticate: \(message)")
        }
        throw WoodpeckerError(.invalidArgument,
                              "\(storeName): authentication as user '\(credentials.username)' at \(endpoint) failed: \(message); check the user name and password")
    }

    /// The cached authentication token (for tests).
    var currentToken: String? { state.withLock { $0.token } }

    /// Forgets `token` (nil: whatever token is cached) so the next call authenticates again, unless another call
    /// already replaced it.
    func invalidateToken(_ token: String?) {
        state.withLock { s in
            if token == nil || s.token == token { s.token = nil }
        }
    }
}
