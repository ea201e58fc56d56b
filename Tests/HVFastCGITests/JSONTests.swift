import Testing

@testable import HVFastCGI

@Suite struct JSONTests {
    private func parse(_ text: String) throws(JSON.SyntaxError) -> JSON { try JSON.parse(Array(text.utf8)) }

    @Test func parsesObjectsKeepingNumberText() throws {
        let value = try parse(#" {"a": 1.50, "b": [true, null, "x\u00e9\n"], "c": -0, "d": 1e400} "#)
        #expect(
            value
                == .object([
                    "a": .number("1.50"), "b": .array([.bool(true), .null, .string("xé\n")]), "c": .number("-0"),
                    "d": .number("1e400"),
                ]))
    }

    @Test func duplicateKeysKeepTheLast() throws {
        #expect(try parse(#"{"a":1,"a":2}"#) == .object(["a": .number("2")]))
    }

    @Test func surrogatePairsDecode() throws {
        #expect(try parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(throws: JSON.SyntaxError.self) { try parse(#""\ud800""#) }
        #expect(throws: JSON.SyntaxError.self) { try parse(#""x\udc00y""#) }
    }

    @Test func invalidUTF8InStringsIsRefused() {
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0x61, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xC3, 0x22]] {
            #expect(throws: JSON.SyntaxError.self) { try JSON.parse(bytes) }
        }
        #expect((try? JSON.parse([0x22, 0xC3, 0xA9, 0x22])) == .string("é"))
    }

    @Test(arguments: [
        "", "{", "{\"a\"}", "{\"a\":}", "[1,]", "01", "1.", ".5", "-", "NaN", "Infinity", "-Infinity", "nul", "tru",
        "\"abc", "\"a\u{01}b\"", "\"\\x\"", "{\"a\":1}x", "{'a':1}", "[1 2]", "1e", "\"\\u12\"",
    ])
    func rejectsMalformedText(_ text: String) {
        #expect(throws: JSON.SyntaxError.self) { try parse(text) }
    }

    @Test func deepNestingIsRefusedNotRecursedWithoutBound() {
        let deep = String(repeating: "[", count: 100_000)
        #expect(throws: JSON.SyntaxError.self) { try parse(deep) }
        #expect((try? parse(String(repeating: "[", count: 10) + String(repeating: "]", count: 10))) != nil)
    }

    @Test func writerEscapesAndSeparates() {
        var writer = JSONWriter()
        writer.beginObject()
        writer.key("s")
        writer.value("q\"\\\u{01}\n")
        writer.key("n")
        writer.value(Int64(-5))
        writer.key("a")
        writer.beginArray()
        writer.value(true)
        writer.null()
        writer.rawNumber("1.5")
        writer.beginObject()
        writer.endObject()
        writer.beginArray()
        writer.beginObject()
        writer.key("é")
        writer.value("ünïcode")
        writer.endObject()
        writer.endArray()
        writer.beginArray()
        writer.endArray()
        writer.endArray()
        writer.key("z")
        writer.value(0)
        writer.endObject()
        #expect(
            String(decoding: writer.bytes, as: UTF8.self)
                == #"{"s":"q\"\\\u0001\n","n":-5,"a":[true,null,1.5,{},[{"é":"ünïcode"}],[]],"z":0}"#)
    }
}
