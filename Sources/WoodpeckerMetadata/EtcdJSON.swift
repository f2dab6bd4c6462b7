import Foundation
import WoodpeckerCore

/// A decoded JSON object from the etcd gateway. Read on the task that decoded it; never shared.
struct EtcdObject: @unchecked Sendable {
    let fields: [String: Any]

    init(_ fields: [String: Any]) { self.fields = fields }

    subscript(_ name: String) -> Any? { fields[name] }

    /// A nested object, or nil when absent (the gateway omits messages at their default value).
    func object(_ name: String) -> EtcdObject? {
        (fields[name] as? [String: Any]).map(EtcdObject.init)
    }

    func objects(_ name: String) -> [EtcdObject] {
        (fields[name] as? [Any] ?? []).compactMap { ($0 as? [String: Any]).map(EtcdObject.init) }
    }

    /// An int64 field. The gateway sends int64 as a JSON string ("7"); plain numbers are accepted too. An omitted
    /// field is 0 (proto3 default); nil means present but not an integer.
    func int64(_ name: String) -> Int64? {
        guard let v = fields[name] else { return 0 }
        return EtcdJSON.int64(v)
    }

    func string(_ name: String) -> String? { fields[name] as? String }

    /// A bool field; omitted means false.
    func bool(_ name: String) -> Bool {
        switch fields[name] {
        case let b as Bool: b
        case let n as NSNumber: n.boolValue
        case let s as String: s == "true"
        default: false
        }
    }

    /// `header.revision`, 0 if omitted.
    var headerRevision: Int64? {
        guard let header = object("header") else { return 0 }
        return header.int64("revision")
    }
}

/// Encoding and decoding helpers for etcd's JSON gateway (keys and values in base64, int64 as strings).
enum EtcdJSON {
    static func int64(_ v: Any) -> Int64? {
        if let s = v as? String { return Int64(s) }
        if let n = v as? NSNumber {
            // Reject fractions and booleans masquerading as numbers.
            let d = n.doubleValue
            guard d == d.rounded(), abs(d) <= 9.2e18 else { return nil }
            return n.int64Value
        }
        return nil
    }

    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    static func base64(_ s: String) -> String { base64(Array(s.utf8)) }

    static func decodeBase64(_ s: String) -> [UInt8]? { Data(base64Encoded: s).map { Array($0) } }

    /// The `range_end` that selects every key starting with `prefix`: the prefix with its last byte below 0xff
    /// incremented and the rest dropped; "\0" (all keys from `key` on) when there is no such byte.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }

    static func encode(_ object: [String: Any]) -> ByteBuffer {
        // Only strings, numbers, bools, arrays and dictionaries are put in, so serialization cannot fail.
        let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8)
        return ByteBuffer(bytes: data)
    }

    /// Parses one JSON object; nil when the bytes are not a JSON object.
    static func decode(_ bytes: some Collection<UInt8>) -> EtcdObject? {
        guard let any = try? JSONSerialization.jsonObject(with: Data(bytes)), let dict = any as? [String: Any] else {
            return nil
        }
        return EtcdObject(dict)
    }

    /// A `mvccpb.KeyValue`. Omitted fields are their defaults (an empty value, version 0, lease 0); the key is
    /// required. Nil when a field does not decode.
    static func keyValue(_ o: EtcdObject) -> KeyValue? {
        guard let k = o.string("key"), let key = decodeBase64(k) else { return nil }
        var value: [UInt8] = []
        if let v = o["value"] {
            guard let s = v as? String, let bytes = decodeBase64(s) else { return nil }
            value = bytes
        }
        guard let create = o.int64("create_revision"), let mod = o.int64("mod_revision"),
              let version = o.int64("version"), let lease = o.int64("lease")
        else { return nil }
        return KeyValue(key: String(decoding: key, as: UTF8.self), value: value, createRevision: create,
                        modRevision: mod, version: version, lease: lease)
    }

    /// The key/value list of a range response (`kvs` omitted when empty). Nil when an entry does not decode.
    static func keyValues(_ o: EtcdObject) -> [KeyValue]? {
        var out: [KeyValue] = []
        for kv in o.objects("kvs") {
            guard let d = keyValue(kv) else { return nil }
            out.append(d)
        }
        return out
    }

    /// The first bytes of a response body, for error messages.
    static func snippet(_ bytes: [UInt8], limit: Int = 200) -> String {
        let s = String(decoding: bytes.prefix(limit), as: UTF8.self)
        return bytes.count > limit ? s + "…" : s
    }
}
