import Testing

@testable import HVFastCGI

@Suite struct Base64URLTests {
    /// RFC 4648 §10, without padding.
    static let rfc4648: [(text: String, encoded: String)] = [
        ("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ]

    @Test func encodesRFC4648Vectors() {
        for (text, encoded) in Self.rfc4648 {
            #expect(Base64URL.encode(Array(text.utf8)) == encoded)
            #expect(Base64.encode(Array(text.utf8)) == encoded)
        }
    }

    @Test func decodesRFC4648Vectors() {
        for (text, encoded) in Self.rfc4648 {
            #expect(Base64URL.decode(encoded) == Array(text.utf8))
            #expect(Base64.decode(encoded) == Array(text.utf8))
        }
    }

    @Test func usesTheURLAlphabetOnlyInBase64URL() {
        let bytes: [UInt8] = [0xFB, 0xFF, 0xBF]
        #expect(Base64URL.encode(bytes) == "-_-_")
        #expect(Base64.encode(bytes) == "+/+/")
        #expect(Base64URL.decode("-_-_") == bytes)
        #expect(Base64.decode("+/+/") == bytes)
        #expect(Base64URL.decode("+/+/") == nil)
        #expect(Base64.decode("-_-_") == nil)
    }

    @Test func standardBase64PadsOnRequestAndDecodesEitherForm() {
        #expect(Base64.encode(Array("f".utf8), padded: true) == "Zg==")
        #expect(Base64.encode(Array("fo".utf8), padded: true) == "Zm8=")
        #expect(Base64.encode(Array("foo".utf8), padded: true) == "Zm9v")
        #expect(Base64.decode("Zg==") == Array("f".utf8))
        #expect(Base64.decode("Zm8=") == Array("fo".utf8))
        #expect(Base64.decode("Zg") == Array("f".utf8))
    }

    @Test(arguments: [
        "Zg==", "Zm8=", "=", "Zm9v=", "Zm 9v", "Zm9v\n", "Zm9v!", "é", "Z", "Zm9vY", "Zh", "Zm9", "Zm9vYmF",
    ])
    func base64URLRejectsInvalidText(_ text: String) {
        // Padding, foreign characters, impossible lengths (4k+1) and non-zero unused bits ("Zh", "Zm9", "Zm9vYmF").
        #expect(Base64URL.decode(text) == nil)
    }

    @Test(arguments: ["Zg=", "Z===", "Zm9v====", "====", "Zg==Zg==", "Zh==", "Z", "Zm8==", "Zm-8"])
    func base64RejectsInvalidText(_ text: String) {
        #expect(Base64.decode(text) == nil)
    }

    @Test func roundTripsEveryLengthAndByteValue() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<70 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(Base64URL.decode(Base64URL.encode(bytes)) == bytes)
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
            #expect(Base64.decode(Base64.encode(bytes, padded: true)) == bytes)
        }
        let all = (0...255).map { UInt8($0) }
        #expect(Base64URL.decode(Base64URL.encode(all)) == all)
    }

    @Test func decodesSubstrings() {
        let token = "xx.Zm9vYmFy.yy"
        let middle = token.split(separator: ".")[1]
        #expect(Base64URL.decode(middle) == Array("foobar".utf8))
    }
}
