/// A parsed JSON document. Numbers keep their source text so that validation can apply exact rules
/// (64-bit range, decimal places, no floating-point rounding) before any conversion.
enum JSON: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSON])
    case object([String: JSON])

    /// A syntax error at a byte offset, as FastAPI reports `json_invalid`.
    struct SyntaxError: Error, Equatable {
        let offset: Int
        let reason: String
    }

    /// Nesting beyond this is refused instead of recursing without bound.
    static let maximumDepth = 64

    /// Parses one JSON text (RFC 8259). Duplicate keys keep the last value, as Python does.
    ///
    /// - Throws: `SyntaxError` for anything that is not exactly one JSON value.
    static func parse(_ bytes: [UInt8]) throws(SyntaxError) -> JSON {
        var parser = Parser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw SyntaxError(offset: parser.index, reason: "Extra data") }
        return value
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        mutating func skipWhitespace() {
            while index < bytes.count,
                bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D
                    || bytes[index] == 0x09
            {
                index += 1
            }
        }

        func fail(_ reason: String) -> SyntaxError { SyntaxError(offset: index, reason: reason) }

        mutating func value(depth: Int) throws(SyntaxError) -> JSON {
            guard depth < JSON.maximumDepth else { throw fail("Nesting too deep") }
            guard index < bytes.count else { throw fail("Expecting value") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
            default: throw fail("Expecting value")
            }
        }

        mutating func literal(_ word: StaticString) throws(SyntaxError) {
            let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
            guard index + expected.count <= bytes.count,
                bytes[index..<index + expected.count].elementsEqual(expected)
            else { throw fail("Expecting value") }
            index += expected.count
        }

        mutating func object(depth: Int) throws(SyntaxError) -> JSON {
            index += 1
            var members: [String: JSON] = [:]
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                    throw fail("Expecting property name enclosed in double quotes")
                }
                let key = try string()
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                    throw fail("Expecting ':' delimiter")
                }
                index += 1
                skipWhitespace()
                members[key] = try value(depth: depth + 1)
                skipWhitespace()
                guard index < bytes.count else { throw fail("Expecting ',' delimiter") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard bytes[index] == UInt8(ascii: "}") else { throw fail("Expecting ',' delimiter") }
                index += 1
                return .object(members)
            }
        }

        mutating func array(depth: Int) throws(SyntaxError) -> JSON {
            index += 1
            var elements: [JSON] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            }
            while true {
                skipWhitespace()
                elements.append(try value(depth: depth + 1))
                skipWhitespace()
                guard index < bytes.count else { throw fail("Expecting ',' delimiter") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard bytes[index] == UInt8(ascii: "]") else { throw fail("Expecting ',' delimiter") }
                index += 1
                return .array(elements)
            }
        }

        mutating func number() throws(SyntaxError) -> String {
            let start = index
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            func digits(_ parser: inout Parser) -> Int {
                let from = parser.index
                while parser.index < parser.bytes.count, (0x30...0x39).contains(parser.bytes[parser.index]) {
                    parser.index += 1
                }
                return parser.index - from
            }
            guard index < bytes.count else { throw fail("Expecting value") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
            } else if digits(&self) == 0 {
                throw fail("Expecting value")
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard digits(&self) > 0 else { throw fail("Expecting digits after the decimal point") }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                    index += 1
                }
                guard digits(&self) > 0 else { throw fail("Expecting digits in the exponent") }
            }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }

        mutating func string() throws(SyntaxError) -> String {
            index += 1
            var scalars = String.UnicodeScalarView()
            var runStart = index
            var out = ""
            while true {
                guard index < bytes.count else { throw fail("Unterminated string") }
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    out += try run(from: runStart)
                    out.unicodeScalars.append(contentsOf: scalars)
                    index += 1
                    return out
                }
                if byte < 0x20 { throw fail("Invalid control character") }
                if byte == UInt8(ascii: "\\") {
                    out += try run(from: runStart)
                    out.unicodeScalars.append(contentsOf: scalars)
                    scalars = String.UnicodeScalarView()
                    index += 1
                    guard index < bytes.count else { throw fail("Unterminated string") }
                    let escape = bytes[index]
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""): out += "\""
                    case UInt8(ascii: "\\"): out += "\\"
                    case UInt8(ascii: "/"): out += "/"
                    case UInt8(ascii: "b"): out += "\u{08}"
                    case UInt8(ascii: "f"): out += "\u{0C}"
                    case UInt8(ascii: "n"): out += "\n"
                    case UInt8(ascii: "r"): out += "\r"
                    case UInt8(ascii: "t"): out += "\t"
                    case UInt8(ascii: "u"):
                        var code = try hex4()
                        if (0xD800...0xDBFF).contains(code), index + 1 < bytes.count,
                            bytes[index] == UInt8(ascii: "\\"),
                            bytes[index + 1] == UInt8(ascii: "u")
                        {
                            let save = index
                            index += 2
                            let low = try hex4()
                            if (0xDC00...0xDFFF).contains(low) {
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                index = save
                            }
                        }
                        // A lone surrogate has no UTF-8 form: refuse it rather than store something else.
                        guard let scalar = Unicode.Scalar(code) else { throw fail("Lone surrogate in \\u escape") }
                        out.unicodeScalars.append(scalar)
                    default:
                        index -= 1
                        throw fail("Invalid \\escape")
                    }
                    runStart = index
                    continue
                }
                index += 1
            }
        }

        /// The raw bytes of a string from `start` to the current index, which must be valid UTF-8: replacing bad
        /// bytes would store something other than what was sent and make different inputs equal.
        func run(from start: Int) throws(SyntaxError) -> String {
            guard let text = String(validating: bytes[start..<index], as: UTF8.self) else {
                throw SyntaxError(offset: start, reason: "Invalid UTF-8")
            }
            return text
        }

        mutating func hex4() throws(SyntaxError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw fail("Invalid \\uXXXX escape") }
            var code: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt8
                switch byte {
                case 0x30...0x39: digit = byte - 0x30
                case 0x41...0x46: digit = byte - 0x41 + 10
                case 0x61...0x66: digit = byte - 0x61 + 10
                default: throw fail("Invalid \\uXXXX escape")
                }
                code = code << 4 | UInt32(digit)
                index += 1
            }
            return code
        }
    }
}

/// Builds a JSON text by appending, without an intermediate tree: the response path stays allocation-light.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []
    /// Whether the next value or key needs a comma before it: false right after an opening bracket or a key, true
    /// after any complete value (a closed container is one), so no stack of containers is needed.
    private var needsComma = false

    init() { bytes.reserveCapacity(256) }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        needsComma = true
    }

    mutating func beginObject() {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }
    mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }
    mutating func beginArray() {
        separate()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
    }
    mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }
    /// The key of the next member; the value follows with any `value` call.
    mutating func key(_ name: String) {
        separate()
        appendString(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }
    mutating func value(_ text: String) {
        separate()
        appendString(text)
    }
    mutating func value(_ number: Int64) {
        separate()
        bytes += String(number).utf8
    }
    mutating func value(_ number: Int) { value(Int64(number)) }
    mutating func value(_ flag: Bool) {
        separate()
        bytes += (flag ? "true" : "false").utf8
    }
    /// A number given as its exact JSON text (e.g. millicores formatted as `1.5`).
    mutating func rawNumber(_ text: String) {
        separate()
        bytes += text.utf8
    }
    mutating func null() {
        separate()
        bytes += "null".utf8
    }
    mutating func value(_ number: Int64?) {
        if let number { value(number) } else { null() }
    }
    mutating func value(_ text: String?) {
        if let text { value(text) } else { null() }
    }
    private mutating func appendString(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        let isPlain = text.utf8.withContiguousStorageIfAvailable { !$0.contains(where: Self.needsEscape) } ?? false
        if !isPlain {
            for byte in text.utf8 {
                switch byte {
                case UInt8(ascii: "\""): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
                case UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
                case 0x0A: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
                case 0x0D: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
                case 0x09: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
                case 0..<0x20, 0x7F:
                    let hex = Array("0123456789abcdef".utf8)
                    bytes += [
                        UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                        hex[Int(byte >> 4)], hex[Int(byte & 15)],
                    ]
                default: bytes.append(byte)
                }
            }
        } else {
            bytes.append(contentsOf: text.utf8)  // nearly every string: one copy instead of a loop
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }
}
