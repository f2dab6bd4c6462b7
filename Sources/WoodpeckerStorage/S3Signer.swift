import WoodpeckerCore
import WoodpeckerIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An access key pair, optionally with the session token of temporary (STS) credentials.
public struct S3Credentials: Sendable, Equatable, CustomStringConvertible {
    public var accessKeyId: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyId: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// Never shows the secret or the token.
    public var description: String { "S3Credentials(\(accessKeyId), secret: <hidden>\(sessionToken == nil ? "" : ", token: <hidden>"))" }
}

/// AWS Signature Version 4 for header-based authentication (`Authorization: AWS4-HMAC-SHA256 ...`).
///
/// Guarantees: the canonical request follows the SigV4 rules exactly — query parameters RFC 3986
/// percent-encoded (`/` included) and sorted, header names lower-cased, values trimmed with inner runs of
/// spaces collapsed, headers sorted, every header handed in is signed. The path is used as given, so the caller
/// must encode it once with `encodePath` (S3 does not double-encode). Thread-safe (a value type).
public struct S3Signer: Sendable {
    public var credentials: S3Credentials
    public var region: String
    public var service: String

    /// The hex SHA-256 of an empty payload.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// The `x-amz-content-sha256` value that signs everything but the body.
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The intermediate values, for tests and for diagnosing a `SignatureDoesNotMatch`.
    public struct Signature: Sendable {
        public var canonicalRequest: String
        public var stringToSign: String
        public var signature: String
        public var authorization: String
    }

    /// Signs exactly `headers` (a `host` header must be among them). `amzDate` is `yyyyMMdd'T'HHmmss'Z'` and must
    /// equal the `x-amz-date` header; `query` holds raw (unencoded) names and values.
    public func sign(method: String, path: String, query: [(String, String)], headers: [(String, String)],
                     payloadHash: String, amzDate: String) -> Signature
    {
        let canonicalHeaders = Self.canonicalHeaders(headers)
        let signedHeaders = canonicalHeaders.map(\.0).joined(separator: ";")
        let canonicalRequest = [
            method.uppercased(),
            path,
            Self.canonicalQuery(query),
            canonicalHeaders.map { "\($0.0):\($0.1)\n" }.joined(),
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let day = String(amzDate.prefix(8))
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, S3Crypto.hex(S3Crypto.sha256(Array(canonicalRequest.utf8))),
        ].joined(separator: "\n")
        var key = S3Crypto.hmacSHA256(key: Array("AWS4\(credentials.secretAccessKey)".utf8), day)
        for part in [region, service, "aws4_request"] { key = S3Crypto.hmacSHA256(key: key, part) }
        let signature = S3Crypto.hex(S3Crypto.hmacSHA256(key: key, stringToSign))
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyId)/\(scope),"
            + "SignedHeaders=\(signedHeaders),Signature=\(signature)"
        return Signature(canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature,
                         authorization: authorization)
    }

    /// Adds `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token` (with a session token) and
    /// `Authorization` to `headers`, signing every header already in it plus those.
    public func sign(method: String, path: String, query: [(String, String)], headers: inout HTTPHeaders,
                     payloadHash: String, amzDate: String)
    {
        headers.replace("x-amz-date", amzDate)
        headers.replace("x-amz-content-sha256", payloadHash)
        if let token = credentials.sessionToken { headers.replace("x-amz-security-token", token) }
        headers.remove("Authorization")
        let s = sign(method: method, path: path, query: query, headers: headers.map { ($0.name, $0.value) },
                     payloadHash: payloadHash, amzDate: amzDate)
        headers.add("Authorization", s.authorization)
    }

    // MARK: canonical forms

    /// `name=value` pairs, both percent-encoded, sorted by name then value, joined by `&`.
    public static func canonicalQuery(_ query: [(String, String)]) -> String {
        query.map { (uriEncode($0.0), uriEncode($0.1)) }
            .sorted { $0.0 != $1.0 ? $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) : $0.1.utf8.lexicographicallyPrecedes($1.1.utf8) }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// Lower-cased names, trimmed values with runs of spaces collapsed, sorted; repeated names joined with `,`.
    static func canonicalHeaders(_ headers: [(String, String)]) -> [(String, String)] {
        var byName: [String: [String]] = [:]
        var order: [String] = []
        for (name, value) in headers {
            let n = asciiLowercased(name)
            if byName[n] == nil { order.append(n) }
            byName[n, default: []].append(normalizeValue(value))
        }
        return order.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.map { ($0, byName[$0]!.joined(separator: ",")) }
    }

    private static func normalizeValue(_ value: String) -> String {
        var out: [UInt8] = []
        var lastWasSpace = false
        for c in value.utf8 {
            let isSpace = c == 0x20 || c == 0x09
            if isSpace {
                if !lastWasSpace && !out.isEmpty { out.append(0x20) }
            } else {
                out.append(c)
            }
            lastWasSpace = isSpace
        }
        if out.last == 0x20 { out.removeLast() }
        return String(decoding: out, as: UTF8.self)
    }

    static func asciiLowercased(_ s: String) -> String {
        String(decoding: s.utf8.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - _ . ~` becomes `%XY` (upper-case hex), UTF-8
    /// byte by byte. `/` is encoded unless `keepSlash`.
    public static func uriEncode(_ s: String, keepSlash: Bool = false) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        for c in s.utf8 {
            let unreserved = (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
                || c == 0x2D || c == 0x5F || c == 0x2E || c == 0x7E
            if unreserved || (keepSlash && c == 0x2F) {
                out.append(c)
            } else {
                out += [0x25, hex[Int(c >> 4)], hex[Int(c & 0x0F)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A path for both the URL and the canonical request: each segment encoded once, `/` kept.
    public static func encodePath(_ path: String) -> String { uriEncode(path, keepSlash: true) }

    /// Decodes `%XY` escapes (and `+` as space when `plusIsSpace`); nil for a malformed escape or invalid UTF-8.
    static func percentDecode(_ s: String, plusIsSpace: Bool = false) -> String? {
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == 0x25 {
                guard it.count >= 2, let h = hexValue(it.removeFirst()), let l = hexValue(it.removeFirst()) else {
                    return nil
                }
                out.append(h << 4 | l)
            } else if c == 0x2B && plusIsSpace {
                out.append(0x20)
            } else {
                out.append(c)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x41...0x46: c - 0x41 + 10
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC.
    public static func amzDate(epochSeconds: Int) -> String {
        var t = time_t(epochSeconds)
        var tm = tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return pad(tm.tm_year + 1900, 4) + pad(tm.tm_mon + 1, 2) + pad(tm.tm_mday, 2) + "T"
            + pad(tm.tm_hour, 2) + pad(tm.tm_min, 2) + pad(tm.tm_sec, 2) + "Z"
    }
}
