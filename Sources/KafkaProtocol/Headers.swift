import WoodpeckerCore

/// Request and response header framing (KIP-482, KIP-511).
///
/// A request frame is `int32 size | request header | body`; this type handles the part after the size.
/// The request header is v2 for flexible (apiKey, version) pairs and v1 otherwise; its `client_id` is always a
/// classic int16-length string, even in v2. Response headers are v1 for flexible pairs and v0 otherwise, except
/// ApiVersions, whose response header is always v0 so that any client can parse it.
public enum KafkaHeaders {
    /// True when (apiKey, version) uses the flexible encoding; nil for an API key Kafka does not define.
    public static func isFlexible(apiKey: Int16, version: Int16) -> Bool? {
        guard let key = ApiKey(rawValue: apiKey) else { return nil }
        return key.isFlexible(version: version)
    }

    /// Header version of a request: 2 if flexible, 1 otherwise (0 for ControlledShutdown v0).
    /// Unknown API keys are assumed non-flexible, which is enough to read the correlation id and client id.
    public static func requestHeaderVersion(apiKey: Int16, version: Int16) -> Int16 {
        if apiKey == ApiKey.controlledShutdown.rawValue && version == 0 { return 0 }
        return isFlexible(apiKey: apiKey, version: version) == true ? 2 : 1
    }

    /// Header version of a response: 1 if flexible, 0 otherwise; always 0 for ApiVersions.
    public static func responseHeaderVersion(apiKey: Int16, version: Int16) -> Int16 {
        if apiKey == ApiKey.apiVersions.rawValue { return 0 }
        return isFlexible(apiKey: apiKey, version: version) == true ? 1 : 0
    }

    /// Decodes the request header at the reader index (after the size prefix) and leaves the reader at the body.
    /// The header version follows from the api key and version in its first four bytes.
    public static func decodeRequestHeader(from buffer: inout ByteBuffer) throws(DecodeError) -> RequestHeader {
        let apiKey = try buffer.getInteger(at: buffer.readerIndex, as: Int16.self)
        let version = try buffer.getInteger(at: buffer.readerIndex + 2, as: Int16.self)
        return try RequestHeader(from: &buffer, version: requestHeaderVersion(apiKey: apiKey, version: version))
    }

    /// Writes the response header for a response to (apiKey, version).
    public static func encodeResponseHeader(correlationId: Int32, apiKey: Int16, version: Int16,
                                            to buffer: inout ByteBuffer) {
        let header = ResponseHeader(correlationId: correlationId)
        header.encode(to: &buffer, version: responseHeaderVersion(apiKey: apiKey, version: version))
    }

    /// A complete response frame: `int32 size | response header | body`. `capacity`: the expected size, when known
    /// (a large frame then needs no copies while it grows).
    public static func responseFrame<M: KafkaMessage>(_ body: M, correlationId: Int32, version: Int16,
                                                      capacity: Int = 0) -> ByteBuffer {
        var out = ByteBuffer(capacity: capacity)
        let sizeAt = out.reserveBytes(4)
        encodeResponseHeader(correlationId: correlationId, apiKey: M.apiKey, version: version, to: &out)
        body.encode(to: &out, version: version)
        out.setInteger(Int32(out.writerIndex - sizeAt - 4), at: sizeAt)
        return out
    }

    /// A complete request frame: `int32 size | request header | body` (for tests and the native load generator).
    public static func requestFrame<M: KafkaMessage>(_ body: M, version: Int16, correlationId: Int32,
                                                     clientId: String?) -> ByteBuffer {
        var out = ByteBuffer()
        let sizeAt = out.reserveBytes(4)
        let header = RequestHeader(requestApiKey: M.apiKey, requestApiVersion: version, correlationId: correlationId,
                                   clientId: clientId)
        header.encode(to: &out, version: requestHeaderVersion(apiKey: M.apiKey, version: version))
        body.encode(to: &out, version: version)
        out.setInteger(Int32(out.writerIndex - sizeAt - 4), at: sizeAt)
        return out
    }
}
