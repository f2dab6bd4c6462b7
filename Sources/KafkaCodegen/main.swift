// KafkaCodegen: reads Apache Kafka's message JSON definitions and writes the Swift codec in
// Sources/KafkaProtocol/Generated. Development tool, not shipped.
//
// Usage: swift run KafkaCodegen [messagesDir] [outputDir]
//   defaults: ../shared/kafka-messages  Sources/KafkaProtocol/Generated  (relative to the package root)
import Foundation

// MARK: - model

/// An inclusive version range; `hi == nil` means open-ended ("3+").
struct Versions {
    var lo: Int
    var hi: Int?

    static func parse(_ s: String?) -> Versions? {
        guard let s = s?.trimmingCharacters(in: .whitespaces), !s.isEmpty, s != "none" else { return nil }
        if s.hasSuffix("+") { return Versions(lo: Int(s.dropLast())!, hi: nil) }
        if let dash = s.firstIndex(of: "-") {
            return Versions(lo: Int(s[..<dash])!, hi: Int(s[s.index(after: dash)...])!)
        }
        return Versions(lo: Int(s)!, hi: Int(s)!)
    }

    func contains(_ v: Int) -> Bool { v >= lo && (hi == nil || v <= hi!) }

    /// A Swift condition on `version` that is true exactly inside this range, given the message's valid range;
    /// nil when it is always true there.
    func condition(within valid: Versions) -> String? {
        var parts: [String] = []
        if lo > valid.lo { parts.append("version >= \(lo)") }
        if let hi, hi < (valid.hi ?? Int.max) { parts.append("version <= \(hi)") }
        return parts.isEmpty ? nil : parts.joined(separator: " && ")
    }
}

final class Field {
    let name: String
    let type: String
    let versions: Versions?
    let nullable: Versions?
    let tagged: Versions?
    let tag: Int?
    let defaultValue: String?
    let about: String?
    let classicOnly: Bool
    var fields: [Field]?

    init(_ d: [String: Any]) {
        name = d["name"] as! String
        type = d["type"] as! String
        versions = Versions.parse(d["versions"] as? String)
        nullable = Versions.parse(d["nullableVersions"] as? String)
        tagged = Versions.parse(d["taggedVersions"] as? String)
        tag = d["tag"] as? Int
        if let s = d["default"] as? String { defaultValue = s }
        else if let n = d["default"] as? NSNumber { defaultValue = n.stringValue }
        else { defaultValue = nil }
        about = d["about"] as? String
        classicOnly = (d["flexibleVersions"] as? String) == "none"
        fields = (d["fields"] as? [[String: Any]])?.map(Field.init)
    }

    var isArray: Bool { type.hasPrefix("[]") }
    var elementType: String { isArray ? String(type.dropFirst(2)) : type }
    var isStructLike: Bool { elementType.first!.isUppercase }
    var isNullable: Bool { nullable != nil || type == "records" }
    var isTagged: Bool { tag != nil }
    var propertyName: String {
        let n = name.prefix(1).lowercased() + name.dropFirst()
        return swiftKeywords.contains(n) ? "`\(n)`" : n
    }
}

let swiftKeywords: Set<String> = [
    "protocol", "default", "internal", "public", "operator", "repeat", "where", "in", "is", "as", "self", "init",
    "extension", "func", "var", "let", "class", "struct", "enum", "case", "switch", "return", "throw", "throws",
    "try", "import", "static", "subscript", "for", "while", "if", "else", "guard", "do", "break", "continue",
]

struct Message {
    let name: String
    let apiKey: Int?
    let valid: Versions
    let flexible: Versions?
    let fields: [Field]
    let file: String
}

/// Named struct definitions of one message (flattened), in first-seen order.
struct StructDef {
    let name: String
    let fields: [Field]
    /// Versions in which this struct can appear (for the array length lower bound).
    let versions: Versions
}

// MARK: - JSON with comments

/// Removes `//` comments outside string literals (the Kafka JSON files carry license and version notes).
func stripComments(_ text: String) -> String {
    var out = [UInt8]()
    let b = Array(text.utf8)
    var i = 0
    var inString = false
    while i < b.count {
        let c = b[i]
        if inString {
            out.append(c)
            if c == UInt8(ascii: "\\"), i + 1 < b.count { out.append(b[i + 1]); i += 2; continue }
            if c == UInt8(ascii: "\"") { inString = false }
            i += 1
        } else if c == UInt8(ascii: "\"") {
            inString = true
            out.append(c)
            i += 1
        } else if c == UInt8(ascii: "/"), i + 1 < b.count, b[i + 1] == UInt8(ascii: "/") {
            while i < b.count, b[i] != UInt8(ascii: "\n") { i += 1 }
        } else {
            out.append(c)
            i += 1
        }
    }
    return String(decoding: out, as: UTF8.self)
}

func loadMessage(_ path: String) throws -> Message {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    let data = Data(stripComments(text).utf8)
    let d = try JSONSerialization.jsonObject(with: data) as! [String: Any]
    return Message(
        name: d["name"] as! String,
        apiKey: d["apiKey"] as? Int,
        valid: Versions.parse(d["validVersions"] as? String)!,
        flexible: Versions.parse(d["flexibleVersions"] as? String),
        fields: (d["fields"] as! [[String: Any]]).map(Field.init),
        file: (path as NSString).lastPathComponent)
}

// MARK: - generation

struct Generator {
    let msg: Message
    var structs: [StructDef] = []
    var out: [String] = []

    init(_ msg: Message) {
        self.msg = msg
        collect(msg.fields)
    }

    /// Flattens nested struct definitions; a type referenced again without `fields` reuses the first definition.
    mutating func collect(_ fields: [Field]) {
        for f in fields where f.isStructLike {
            if let sub = f.fields {
                if !structs.contains(where: { $0.name == f.elementType }) {
                    structs.append(StructDef(name: f.elementType, fields: sub, versions: f.versions ?? msg.valid))
                }
                collect(sub)
            }
        }
        for f in fields where f.isStructLike && f.fields == nil {
            guard let def = structs.first(where: { $0.name == f.elementType }) else {
                fatalError("\(msg.name): struct \(f.elementType) has no definition")
            }
            f.fields = def.fields
        }
    }

    var flexLo: Int? { msg.flexible?.lo }

    func isFlexible(_ v: Int) -> Bool { msg.flexible?.contains(v) ?? false }

    // MARK: types and defaults

    func baseType(_ t: String) -> String {
        switch t {
        case "int8": "Int8"
        case "int16": "Int16"
        case "int32": "Int32"
        case "int64": "Int64"
        case "uint16": "UInt16"
        case "float64": "Double"
        case "bool": "Bool"
        case "string": "String"
        case "bytes": "[UInt8]"
        case "records": "ByteBuffer"
        case "uuid": "KafkaUUID"
        default: t
        }
    }

    func swiftType(_ f: Field) -> String {
        let t = f.isArray ? "[\(baseType(f.elementType))]" : baseType(f.type)
        return f.isNullable ? t + "?" : t
    }

    func defaultExpr(_ f: Field) -> String {
        if f.type == "records" { return "nil" }
        if f.isNullable, f.defaultValue == "null" { return "nil" }
        if f.isArray { return "[]" }
        let d = f.defaultValue
        switch f.type {
        case "int8", "int16", "int32", "int64", "uint16":
            guard let d, !d.isEmpty else { return "0" }
            if d.hasPrefix("0x") { return String(Int(d.dropFirst(2), radix: 16)!) }
            return String(Int(d)!)
        case "float64": return d.map { String(Double($0)!) } ?? "0"
        case "bool": return d == "true" ? "true" : "false"
        case "string": return "\"\(d ?? "")\""
        case "bytes": return "[]"
        case "uuid": return ".zero"
        default: return "\(f.type)()"
        }
    }

    /// Swift expression that is true when a tagged field differs from its default (so it must be written).
    func nonDefaultCondition(_ f: Field) -> String {
        let p = "self.\(f.propertyName)"
        let d = defaultExpr(f)
        if d == "nil" { return "\(p) != nil" }
        if d == "[]" { return f.isNullable ? "\(p) != []" : "!\(p).isEmpty" }
        return "\(p) != \(d)"
    }

    // MARK: minimum wire sizes (bounds for array lengths)

    func fixedSize(_ t: String) -> Int? {
        switch t {
        case "int8", "bool": 1
        case "int16", "uint16": 2
        case "int32": 4
        case "int64", "float64": 8
        case "uuid": 16
        default: nil
        }
    }

    func minSize(_ f: Field, version v: Int) -> Int {
        let flex = isFlexible(v) && !f.classicOnly
        if f.isArray { return flex ? 1 : 4 }
        if let s = fixedSize(f.type) { return s }
        switch f.type {
        case "string": return flex ? 1 : 2
        case "bytes", "records": return flex ? 1 : 4
        default: return minStructSize(f.fields ?? [], version: v)
        }
    }

    func minStructSize(_ fields: [Field], version v: Int) -> Int {
        var n = isFlexible(v) ? 1 : 0
        for f in fields where !f.isTagged && (f.versions?.contains(v) ?? false) { n += minSize(f, version: v) }
        return n
    }

    /// Lower bound of one array element's encoded size over every version in which the array exists.
    func minElementSize(_ f: Field) -> Int {
        if let s = fixedSize(f.elementType) { return s }
        let hi = min(f.versions?.hi ?? msg.valid.hi!, msg.valid.hi!)
        let lo = max(f.versions?.lo ?? 0, msg.valid.lo)
        var best = Int.max
        for v in lo...max(lo, hi) {
            if f.elementType == "string" { best = min(best, isFlexible(v) ? 1 : 2) }
            else if f.elementType == "bytes" { best = min(best, isFlexible(v) ? 1 : 4) }
            else { best = min(best, minStructSize(f.fields ?? [], version: v)) }
        }
        return max(1, best)
    }

    // MARK: decode / encode statements

    func flexArg(_ f: Field, _ flex: String) -> String { f.classicOnly ? "false" : flex }

    func readScalar(_ t: String, nullable: Bool, buf: String, flex: String) -> String {
        switch t {
        case "int8", "int16", "int32", "int64", "uint16": return "try \(buf).readInteger(as: \(baseType(t)).self)"
        case "float64": return "try \(buf).kReadFloat64()"
        case "bool": return "try \(buf).kReadBool()"
        case "uuid": return "try \(buf).kReadUUID()"
        case "string": return nullable ? "try \(buf).kReadNullableString(\(flex))" : "try \(buf).kReadString(\(flex))"
        case "bytes": return nullable ? "try \(buf).kReadNullableBytes(\(flex))" : "try \(buf).kReadBytes(\(flex))"
        case "records": return "try \(buf).kReadRecords(\(flex))"
        default: return "try \(t)(from: &\(buf), version: version)"
        }
    }

    func readStatements(_ f: Field, buf: String, flex rawFlex: String) -> [String] {
        let flex = flexArg(f, rawFlex)
        let target = "self.\(f.propertyName)"
        guard f.isArray else {
            return ["\(target) = \(readScalar(f.type, nullable: f.isNullable, buf: buf, flex: flex))"]
        }
        let elem = baseType(f.elementType)
        let elemRead = readScalar(f.elementType, nullable: false, buf: buf, flex: flex)
        let count = "try \(buf).kReadArrayCount(\(flex), minElementSize: \(minElementSize(f)))"
        let body = [
            "    var a: [\(elem)] = []",
            "    a.reserveCapacity(Swift.min(n, 1024))",
            "    for _ in 0..<n { a.append(\(elemRead)) }",
            "    \(target) = a",
        ]
        if f.isNullable {
            return ["if let n = \(count) {"] + body + ["} else {", "    \(target) = nil", "}"]
        }
        return ["do {", "    guard let n = \(count) else { throw DecodeError.malformed(\"null array \(msg.name).\(f.name)\") }"]
            + body + ["}"]
    }

    func writeScalar(_ t: String, value v: String, nullable: Bool, buf: String, flex: String) -> String {
        switch t {
        case "int8", "int16", "int32", "int64", "uint16": return "\(buf).writeInteger(\(v))"
        case "float64": return "\(buf).kWriteFloat64(\(v))"
        case "bool": return "\(buf).kWriteBool(\(v))"
        case "uuid": return "\(buf).kWriteUUID(\(v))"
        case "string": return nullable ? "\(buf).kWriteNullableString(\(v), \(flex))" : "\(buf).kWriteString(\(v), \(flex))"
        case "bytes": return nullable ? "\(buf).kWriteNullableBytes(\(v), \(flex))" : "\(buf).kWriteBytes(\(v), \(flex))"
        case "records": return "\(buf).kWriteRecords(\(v), \(flex))"
        default: return "\(v).encode(to: &\(buf), version: version)"
        }
    }

    func writeStatements(_ f: Field, buf: String, flex rawFlex: String) -> [String] {
        let flex = flexArg(f, rawFlex)
        let v = "self.\(f.propertyName)"
        guard f.isArray else {
            return [writeScalar(f.type, value: v, nullable: f.isNullable, buf: buf, flex: flex)]
        }
        let elemWrite = writeScalar(f.elementType, value: "e", nullable: false, buf: buf, flex: flex)
        if f.isNullable {
            return [
                "if let a = \(v) {",
                "    \(buf).kWriteArrayCount(a.count, \(flex))",
                "    for e in a { \(elemWrite) }",
                "} else {",
                "    \(buf).kWriteNullArrayCount(\(flex))",
                "}",
            ]
        }
        return ["\(buf).kWriteArrayCount(\(v).count, \(flex))", "for e in \(v) { \(elemWrite) }"]
    }

    func guarded(_ cond: String?, _ lines: [String]) -> [String] {
        guard let cond else { return lines }
        return ["if \(cond) {"] + lines.map { "    " + $0 } + ["}"]
    }

    func and(_ a: String?, _ b: String) -> String { a.map { "\($0) && \(b)" } ?? b }

    // MARK: struct emission

    mutating func emitStruct(name: String, fields: [Field], indent: String, conformances: String, extra: [String]) {
        let i = indent
        out.append("\(i)public struct \(name): \(conformances) {")
        for line in extra { out.append("\(i)    \(line)") }
        if !extra.isEmpty { out.append("") }
        for f in fields {
            if let about = f.about, !about.isEmpty { out.append("\(i)    /// \(about)") }
            var notes: [String] = []
            if let v = f.versions { notes.append("versions \(describe(v))") }
            if let n = f.nullable { notes.append("nullable \(describe(n))") }
            if let t = f.tag { notes.append("tag \(t)") }
            out.append("\(i)    /// (\(notes.joined(separator: ", ")))")
            out.append("\(i)    public var \(f.propertyName): \(swiftType(f)) = \(defaultExpr(f))")
        }
        if !fields.isEmpty { out.append("") }

        // Memberwise initializer; every parameter defaults to the JSON default.
        if fields.isEmpty {
            out.append("\(i)    public init() {}")
        } else {
            out.append("\(i)    public init(")
            for (k, f) in fields.enumerated() {
                let comma = k == fields.count - 1 ? "" : ","
                out.append("\(i)        \(f.propertyName): \(swiftType(f)) = \(defaultExpr(f))\(comma)")
            }
            out.append("\(i)    ) {")
            for f in fields { out.append("\(i)        self.\(f.propertyName) = \(f.propertyName)") }
            out.append("\(i)    }")
        }
        out.append("")

        // Decoder.
        var dec: [String] = []
        for f in fields where !f.isTagged {
            guard let v = f.versions else { continue }
            dec += guarded(v.condition(within: msg.valid), readStatements(f, buf: "buffer", flex: "flexible"))
        }
        let tagged = fields.filter(\.isTagged).sorted { $0.tag! < $1.tag! }
        if msg.flexible != nil {
            if tagged.isEmpty {
                dec += ["if flexible { try buffer.kSkipTaggedFields() }"]
            } else {
                dec += [
                    "if flexible {",
                    "    let tagCount = try buffer.kReadTagCount()",
                    "    for _ in 0..<tagCount {",
                    "        var field = try buffer.kReadTaggedField()",
                    "        switch field.tag {",
                ]
                for f in tagged {
                    let cond = f.tagged!.condition(within: msg.valid)
                    dec.append("        case \(f.tag!)\(cond.map { " where \($0)" } ?? ""):")
                    dec += readStatements(f, buf: "field.data", flex: "true").map { "            " + $0 }
                }
                dec += ["        default:", "            break", "        }", "    }", "}"]
            }
        }
        out.append("\(i)    public init(from buffer: inout ByteBuffer, version: Int16) throws(DecodeError) {")
        if dec.joined().contains("flexible") { out.append("\(i)        let flexible = \(flexibleExpr)") }
        for l in dec { out.append("\(i)        \(l)") }
        out.append("\(i)    }")
        out.append("")

        // Encoder.
        var enc: [String] = []
        for f in fields where !f.isTagged {
            guard let v = f.versions else { continue }
            enc += guarded(v.condition(within: msg.valid), writeStatements(f, buf: "buffer", flex: "flexible"))
        }
        if msg.flexible != nil {
            if tagged.isEmpty {
                enc += ["if flexible { buffer.writeUnsignedVarint(0) }"]
            } else {
                var body = ["var tagCount: UInt64 = 0"]
                for f in tagged {
                    let cond = and(f.tagged!.condition(within: msg.valid), nonDefaultCondition(f))
                    body.append("if \(cond) { tagCount += 1 }")
                }
                body.append("buffer.writeUnsignedVarint(tagCount)")
                for f in tagged {
                    let cond = and(f.tagged!.condition(within: msg.valid), nonDefaultCondition(f))
                    body.append("if \(cond) {")
                    body.append("    var t = ByteBuffer()")
                    body += writeStatements(f, buf: "t", flex: "true").map { "    " + $0 }
                    body.append("    buffer.kWriteTaggedField(tag: \(f.tag!), t)")
                    body.append("}")
                }
                enc += guarded("flexible", body)
            }
        }
        out.append("\(i)    public func encode(to buffer: inout ByteBuffer, version: Int16) {")
        if enc.joined().contains("flexible") { out.append("\(i)        let flexible = \(flexibleExpr)") }
        for l in enc { out.append("\(i)        \(l)") }
        out.append("\(i)    }")
    }

    var flexibleExpr: String {
        guard let f = msg.flexible else { return "false" }
        return f.condition(within: msg.valid) ?? "true"
    }

    func describe(_ v: Versions) -> String {
        if let hi = v.hi { return hi == v.lo ? "\(v.lo)" : "\(v.lo)-\(hi)" }
        return "\(v.lo)+"
    }

    mutating func generate() -> String {
        out = [
            "// Generated by KafkaCodegen from \(msg.file) — do not edit.",
            "// Regenerate with `make codegen`.",
            "import WoodpeckerCore",
            "",
        ]
        let hi = msg.valid.hi ?? msg.valid.lo
        var extra = [
            "public static let validVersions: ClosedRange<Int16> = \(msg.valid.lo)...\(hi)",
            "public static let flexibleVersions: PartialRangeFrom<Int16>? = \(msg.flexible.map { "\($0.lo)..." } ?? "nil")",
            "/// A value with every field at its JSON default.",
            "public static var defaultValue: Self { Self() }",
        ]
        var conformances = "KafkaCodable"
        if let key = msg.apiKey {
            extra.insert("public static let apiKey: Int16 = \(key)", at: 0)
            conformances = "KafkaMessage"
        }
        out.append("/// Kafka `\(msg.name)` (versions \(describe(msg.valid)), flexible \(msg.flexible.map(describe) ?? "none")).")
        emitStruct(name: msg.name, fields: msg.fields, indent: "", conformances: conformances, extra: extra)
        for s in structs {
            out.append("")
            out.append("    /// Element of `\(msg.name)` (`\(s.name)`).")
            emitStruct(name: s.name, fields: s.fields, indent: "    ", conformances: "Sendable, Equatable", extra: [])
            out.append("    }")
        }
        out.append("}")
        out.append("")
        return out.joined(separator: "\n")
    }
}

// MARK: - version table of every upstream API

/// Writes `UpstreamApis.swift`: valid and flexible request versions of every API key in the JSON directory,
/// so request headers of APIs without a generated codec can still be parsed.
func writeUpstreamTable(inputDir: String, outputDir: String) throws {
    let files = try FileManager.default.contentsOfDirectory(atPath: inputDir)
        .filter { $0.hasSuffix("Request.json") }.sorted()
    var rows: [(Int, String)] = []
    for f in files {
        let m = try loadMessage("\(inputDir)/\(f)")
        guard let key = m.apiKey else { continue }
        let hi = m.valid.hi ?? m.valid.lo
        let flex = m.flexible.map { "\($0.lo)" } ?? "nil"
        rows.append((key, "        case \(key): (\(m.valid.lo)...\(hi), \(flex)) // \(m.name)"))
    }
    rows.sort { $0.0 < $1.0 }
    let code = [
        "// Generated by KafkaCodegen from *Request.json — do not edit.",
        "// Regenerate with `make codegen`.",
        "",
        "/// Request versions of every API key Kafka defines (from the upstream JSON), including APIs without a codec here.",
        "enum UpstreamApis {",
        "    /// Valid request versions and the first flexible version (nil: never flexible); nil for an unknown key.",
        "    static func lookup(_ apiKey: Int16) -> (valid: ClosedRange<Int16>, flexibleFrom: Int16?)? {",
        "        switch apiKey {",
    ] + rows.map(\.1) + [
        "        default: nil",
        "        }",
        "    }",
        "}",
        "",
    ]
    try code.joined(separator: "\n").write(toFile: "\(outputDir)/UpstreamApis.swift", atomically: true, encoding: .utf8)
}

// MARK: - main

let apis = [
    "ApiVersions", "Metadata", "Produce", "Fetch", "ListOffsets", "InitProducerId", "CreateTopics", "DeleteTopics",
    "CreatePartitions", "DescribeConfigs", "DescribeCluster", "FindCoordinator", "JoinGroup", "SyncGroup",
    "Heartbeat", "LeaveGroup", "OffsetCommit", "OffsetFetch", "ListGroups", "DescribeGroups", "DeleteGroups",
    "OffsetDelete", "AlterConfigs", "IncrementalAlterConfigs",
]
let names = apis.flatMap { [$0 + "Request", $0 + "Response"] } + ["RequestHeader", "ResponseHeader"]

let args = CommandLine.arguments
let inputDir = args.count > 1 ? args[1] : "../shared/kafka-messages"
let outputDir = args.count > 2 ? args[2] : "Sources/KafkaProtocol/Generated"

do {
    try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
    for name in names {
        let msg = try loadMessage("\(inputDir)/\(name).json")
        var gen = Generator(msg)
        let code = gen.generate()
        try code.write(toFile: "\(outputDir)/\(name).swift", atomically: true, encoding: .utf8)
    }
    try writeUpstreamTable(inputDir: inputDir, outputDir: outputDir)
    print("KafkaCodegen: wrote \(names.count + 1) files to \(outputDir)")
} catch {
    FileHandle.standardError.write(Data("KafkaCodegen: \(error)\n".utf8))
    exit(1)
}
