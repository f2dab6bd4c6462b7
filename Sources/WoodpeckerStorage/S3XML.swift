/// A small, tolerant reader for the flat XML documents S3 returns (ListBucketResult, Error, DeleteResult,
/// InitiateMultipartUploadResult, CompleteMultipartUploadResult).
///
/// It finds elements by local name (namespace prefixes are ignored), skips the prolog, comments, attributes and
/// CDATA-free whitespace, and decodes the five named entities plus numeric ones (`&#34;`, `&#x22;`). It does not
/// validate: malformed input yields fewer matches, never a crash. Same-named elements must not nest (true of
/// every S3 response it reads).
struct S3XML {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }
    init(_ s: String) { bytes = Array(s.utf8) }

    private init(slice: ArraySlice<UInt8>) { bytes = Array(slice) }

    /// The inner content of every element named `name`, in document order.
    func elements(_ name: String) -> [S3XML] {
        var out: [S3XML] = []
        var i = bytes.startIndex
        let target = Array(name.utf8)
        while let open = nextTag(from: i) {
            i = open.end
            guard !open.closing, open.name.elementsEqual(target) else { continue }
            if open.selfClosing {
                out.append(S3XML(slice: []))
                continue
            }
            // The matching close tag: the next `</name>` (same names do not nest in S3 documents).
            var j = open.end
            var closeStart: Int? = nil
            while let t = nextTag(from: j) {
                j = t.end
                if t.closing && t.name.elementsEqual(target) {
                    closeStart = t.start
                    break
                }
            }
            guard let cs = closeStart else { break }
            out.append(S3XML(slice: bytes[open.end..<cs]))
            i = j
        }
        return out
    }

    /// The decoded text of the first element named `name`, or nil if there is none.
    func text(_ name: String) -> String? {
        elements(name).first.map { $0.decodedText }
    }

    /// This fragment's text with tags removed and entities decoded, trimmed of surrounding whitespace.
    var decodedText: String {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "<") {
                while i < bytes.count && bytes[i] != UInt8(ascii: ">") { i += 1 }
                i += 1
            } else if c == UInt8(ascii: "&"), let semi = bytes[i...].prefix(12).firstIndex(of: UInt8(ascii: ";")),
                      let decoded = Self.entity(bytes[(i + 1)..<semi])
            {
                out += decoded
                i = semi + 1
            } else {
                out.append(c)
                i += 1
            }
        }
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        let trimmed = out.drop(while: isSpace).reversed().drop(while: isSpace).reversed()
        return String(decoding: Array(trimmed), as: UTF8.self)
    }

    private static func entity(_ name: ArraySlice<UInt8>) -> [UInt8]? {
        switch String(decoding: name, as: UTF8.self) {
        case "amp": return Array("&".utf8)
        case "lt": return Array("<".utf8)
        case "gt": return Array(">".utf8)
        case "quot": return Array("\"".utf8)
        case "apos": return Array("'".utf8)
        case let s where s.hasPrefix("#x") || s.hasPrefix("#X"):
            return UInt32(s.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init).map { Array(String($0).utf8) }
        case let s where s.hasPrefix("#"):
            return UInt32(s.dropFirst(1)).flatMap(Unicode.Scalar.init).map { Array(String($0).utf8) }
        default: return nil
        }
    }

    private struct Tag {
        var start: Int
        var end: Int  // index after '>'
        var name: ArraySlice<UInt8>
        var closing: Bool
        var selfClosing: Bool
    }

    /// The next element tag at or after `from`, skipping `<?...?>`, `<!...>` and comments.
    private func nextTag(from: Int) -> Tag? {
        var i = from
        while i < bytes.count {
            guard let lt = bytes[i...].firstIndex(of: UInt8(ascii: "<")) else { return nil }
            guard let gt = bytes[lt...].firstIndex(of: UInt8(ascii: ">")) else { return nil }
            var n = lt + 1
            guard n < gt else { i = gt + 1; continue }
            if bytes[n] == UInt8(ascii: "?") || bytes[n] == UInt8(ascii: "!") {
                if bytes[n...].starts(with: "!--".utf8) {
                    // Comments may contain '>': end at "-->".
                    var k = n + 3
                    while k + 2 < bytes.count && !(bytes[k] == 0x2D && bytes[k + 1] == 0x2D && bytes[k + 2] == 0x3E) { k += 1 }
                    i = k + 3
                } else {
                    i = gt + 1
                }
                continue
            }
            let closing = bytes[n] == UInt8(ascii: "/")
            if closing { n += 1 }
            var e = n
            while e < gt && !Self.isNameEnd(bytes[e]) { e += 1 }
            var name = bytes[n..<e]
            if let colon = name.lastIndex(of: UInt8(ascii: ":")) { name = bytes[(colon + 1)..<e] }
            let selfClosing = !closing && bytes[gt - 1] == UInt8(ascii: "/")
            return Tag(start: lt, end: gt + 1, name: name, closing: closing, selfClosing: selfClosing)
        }
        return nil
    }

    private static func isNameEnd(_ c: UInt8) -> Bool {
        c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 || c == UInt8(ascii: "/") || c == UInt8(ascii: ">")
    }

    /// Escapes text for element content (`&`, `<`, `>`, `"`, `'`).
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }
}
