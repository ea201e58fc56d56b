import Domain
import Testing

/// The outcome of a validation, so tables can list successes and failures side by side.
func outcome<Value>(_ validate: () throws(ValidationError) -> Value) -> Result<Value, ValidationError> {
    Result(catching: validate)
}

@Suite struct StringValidationTests {
    static let usernames: [(String, ValidationError?)] = [
        ("abc", nil),
        (String(repeating: "a", count: 64), nil),
        ("alice.smith_2-x@example.com", nil),
        ("", .stringTooShort(minimum: 3)),
        ("ab", .stringTooShort(minimum: 3)),
        (String(repeating: "a", count: 65), .stringTooLong(maximum: 64)),
        ("alice smith", .stringPatternMismatch(pattern: "^[A-Za-z0-9._@-]+$")),
        ("élise", .stringPatternMismatch(pattern: "^[A-Za-z0-9._@-]+$")),
        ("Ａlice", .stringPatternMismatch(pattern: "^[A-Za-z0-9._@-]+$")),
        ("bob\u{0}", .stringPatternMismatch(pattern: "^[A-Za-z0-9._@-]+$")),
        ("bob'--", .stringPatternMismatch(pattern: "^[A-Za-z0-9._@-]+$")),
    ]

    @Test(arguments: usernames)
    func usernamesAreThreeToSixtyFourLettersDigitsOrDotUnderscoreDashAt(_ row: (String, ValidationError?)) {
        #expect(outcome { () throws(ValidationError) in try Validation.username(row.0) } == expected(row))
    }

    static let names: [(String, ValidationError?)] = [
        ("p", nil),
        ("prod cluster 2", nil),
        ("日本語の名前 🚀", nil),
        ("'; DROP TABLE clusters; --", nil),
        (String(repeating: "é", count: 128), nil),
        ("", .stringTooShort(minimum: 1)),
        (String(repeating: "x", count: 129), .stringTooLong(maximum: 128)),
        // "e" followed by a combining accent is two characters in Python's `len`, as here.
        (String(repeating: "e\u{301}", count: 65), .stringTooLong(maximum: 128)),
        ("tab\there", .nonPrintableCharacter),
        ("new\nline", .nonPrintableCharacter),
        ("delete\u{7F}", .nonPrintableCharacter),
        ("zero\u{200B}width", .nonPrintableCharacter),
        ("right\u{202E}to-left", .nonPrintableCharacter),
        ("no\u{A0}break", .nonPrintableCharacter),
        ("line\u{2028}separator", .nonPrintableCharacter),
        ("private\u{E000}use", .nonPrintableCharacter),
    ]

    @Test(arguments: names)
    func namesAreOneToOneHundredTwentyEightPrintableCharacters(_ row: (String, ValidationError?)) {
        #expect(outcome { () throws(ValidationError) in try Validation.name(row.0) } == expected(row))
    }

    static let passwords: [(String, ValidationError?)] = [
        ("s", nil),
        ("string", nil),
        ("pässwörd 🔑\twith tab", nil),
        (String(repeating: "p", count: 1024), nil),
        ("", .stringTooShort(minimum: 1)),
        (String(repeating: "p", count: 1025), .stringTooLong(maximum: 1024)),
    ]

    @Test(arguments: passwords)
    func passwordsAreOneToOneThousandTwentyFourCharacters(_ row: (String, ValidationError?)) {
        #expect(outcome { () throws(ValidationError) in try Validation.password(row.0) } == expected(row))
    }

    static let digest = String(repeating: "0123456789abcdef", count: 4)

    static let images: [(String, ImageReferenceProblem?)] = [
        ("nginx", nil),
        ("nginx:latest", nil),
        ("library/ubuntu:22.04", nil),
        ("docker.io/library/nginx:1.25-alpine", nil),
        ("localhost/app", nil),
        ("localhost:5000", nil),
        ("localhost:5000/team/app", nil),
        ("192.168.1.10:5000/app:v1", nil),
        ("[::1]:5000/app", nil),
        ("[fe80::1]/app", nil),
        ("Registry.Example.com/app", nil),
        ("my-registry.example.com:443/a/b/c:v1@sha256:\(digest)", nil),
        ("ghcr.io/org/app@sha256:\(digest)", nil),
        ("my_app", nil),
        ("my__app", nil),
        ("my---app.v2", nil),
        ("app:" + "T" + String(repeating: "_.-", count: 42) + "a", nil),
        ("a/" + String(repeating: "b", count: 253), nil),
        ("", .invalidRepository),
        ("Nginx", .invalidRepository),
        ("nginx latest", .invalidRepository),
        ("ünicode", .invalidRepository),
        ("my..app", .invalidRepository),
        ("my___app", .invalidRepository),
        ("-app", .invalidRepository),
        ("app-", .invalidRepository),
        ("app_", .invalidRepository),
        ("a//b", .invalidRepository),
        ("a/", .invalidRepository),
        ("/a", .invalidRepository),
        ("docker.io/Library/nginx", .invalidRepository),
        ("-bad.host/app", .invalidRegistry),
        ("bad-.host/app", .invalidRegistry),
        ("host..com/app", .invalidRegistry),
        ("host.com:http/app", .invalidRegistry),
        ("host.com:/app", .invalidRegistry),
        (":5000/app", .invalidRegistry),
        ("[::1/app", .invalidRegistry),
        ("[]/app", .invalidRepository),
        ("[::g]/app", .invalidRegistry),
        ("[::1]x/app", .invalidRegistry),
        ("a/" + String(repeating: "b", count: 254), .nameTooLong),
        ("nginx:", .invalidTag),
        ("nginx:-rc", .invalidTag),
        ("nginx:.rc", .invalidTag),
        ("nginx:v1+build", .invalidTag),
        ("app:" + String(repeating: "t", count: 129), .invalidTag),
        ("nginx@sha256:abc", .invalidDigest),
        ("nginx@sha256:\(digest.uppercased())", .invalidDigest),
        ("nginx@sha512:\(digest)\(digest)", .invalidDigest),
        ("nginx@\(digest)", .invalidDigest),
        ("nginx@sha256:\(digest)0", .invalidDigest),
    ]

    @Test(arguments: images)
    func imageReferencesFollowTheDistributionGrammar(_ row: (String, ImageReferenceProblem?)) {
        let expected: Result<String, ValidationError> =
            row.1.map { .failure(.invalidImageReference($0)) }
            ?? .success(row.0)
        #expect(outcome { () throws(ValidationError) in try Validation.imageReference(row.0) } == expected)
    }

    private func expected(_ row: (String, ValidationError?)) -> Result<String, ValidationError> {
        row.1.map { .failure($0) } ?? .success(row.0)
    }
}

@Suite struct JSONNumberTests {
    static let cpu: [(String, Result<Int64, ValidationError>)] = [
        ("35", .success(35000)),
        ("35.0", .success(35000)),
        ("1.5", .success(1500)),
        ("0.125", .success(125)),
        ("0.1000", .success(100)),
        ("1e2", .success(100_000)),
        ("1E+2", .success(100_000)),
        ("1.5e-1", .success(150)),
        ("1.0005e3", .success(1_000_500)),
        ("0", .success(0)),
        ("-0", .success(0)),
        ("-0.0", .success(0)),
        ("0e400", .success(0)),
        ("9223372036854775.807", .success(.max)),
        ("-1", .failure(.lessThanMinimum("0"))),
        ("-0.5", .failure(.lessThanMinimum("0"))),
        ("-1e400", .failure(.lessThanMinimum("0"))),
        ("0.0001", .failure(.tooManyDecimalPlaces(maximum: 3))),
        ("1.2345", .failure(.tooManyDecimalPlaces(maximum: 3))),
        ("1e-400", .failure(.tooManyDecimalPlaces(maximum: 3))),
        ("9223372036854775.808", .failure(.greaterThanMaximum("9223372036854775.807"))),
        ("1e16", .failure(.greaterThanMaximum("9223372036854775.807"))),
        ("1e400", .failure(.greaterThanMaximum("9223372036854775.807"))),
        ("1e99999999999999999999", .failure(.greaterThanMaximum("9223372036854775.807"))),
        ("", .failure(.invalidNumber)),
        ("abc", .failure(.invalidNumber)),
        ("01", .failure(.invalidNumber)),
        ("1.", .failure(.invalidNumber)),
        (".5", .failure(.invalidNumber)),
        ("+1", .failure(.invalidNumber)),
        ("1e", .failure(.invalidNumber)),
        ("-", .failure(.invalidNumber)),
        (" 1", .failure(.invalidNumber)),
        ("NaN", .failure(.invalidNumber)),
        ("Infinity", .failure(.invalidNumber)),
        ("true", .failure(.invalidNumber)),
        ("0x10", .failure(.invalidNumber)),
    ]

    @Test(arguments: cpu)
    func cpuIsANonNegativeNumberWithAtMostThreeDecimals(_ row: (String, Result<Int64, ValidationError>)) {
        #expect(outcome { () throws(ValidationError) in try JSONNumber.millicores(row.0) } == row.1)
    }

    static let amounts: [(String, Result<Int64, ValidationError>)] = [
        ("0", .success(0)),
        ("-0", .success(0)),
        ("2", .success(2)),
        ("2.0", .success(2)),
        ("2e3", .success(2000)),
        ("2.5e1", .success(25)),
        ("9223372036854775807", .success(.max)),
        ("1.5", .failure(.fractionalInteger)),
        ("-1.5", .failure(.fractionalInteger)),
        ("1e-1", .failure(.fractionalInteger)),
        ("-1", .failure(.lessThanMinimum("0"))),
        ("-9223372036854775809", .failure(.lessThanMinimum("0"))),
        ("9223372036854775808", .failure(.greaterThanMaximum("9223372036854775807"))),
        ("18446744073709551616", .failure(.greaterThanMaximum("9223372036854775807"))),
        ("1e19", .failure(.greaterThanMaximum("9223372036854775807"))),
        ("1e400", .failure(.greaterThanMaximum("9223372036854775807"))),
        ("", .failure(.invalidInteger)),
        ("1,000", .failure(.invalidInteger)),
        ("null", .failure(.invalidInteger)),
    ]

    @Test(arguments: amounts)
    func ramAndGPUAreNonNegativeIntegersIncludingIntegralFloats(_ row: (String, Result<Int64, ValidationError>)) {
        #expect(outcome { () throws(ValidationError) in try JSONNumber.nonNegativeInt64(row.0) } == row.1)
    }

    static let priorities: [(String, Result<Int32, ValidationError>)] = [
        ("0", .success(0)),
        ("-5", .success(-5)),
        ("3.0", .success(3)),
        ("2147483647", .success(.max)),
        ("-2147483648", .success(.min)),
        ("3.5", .failure(.fractionalInteger)),
        ("2147483648", .failure(.greaterThanMaximum("2147483647"))),
        ("1e10", .failure(.greaterThanMaximum("2147483647"))),
        ("-2147483649", .failure(.lessThanMinimum("-2147483648"))),
        ("-1e400", .failure(.lessThanMinimum("-2147483648"))),
        ("high", .failure(.invalidInteger)),
    ]

    @Test(arguments: priorities)
    func prioritiesAreAnyThirtyTwoBitInteger(_ row: (String, Result<Int32, ValidationError>)) {
        #expect(outcome { () throws(ValidationError) in try JSONNumber.int32(row.0) } == row.1)
    }

    static let formatted: [(Int64, String)] = [
        (35000, "35.0"),
        (1500, "1.5"),
        (125, "0.125"),
        (100, "0.1"),
        (1010, "1.01"),
        (1, "0.001"),
        (0, "0.0"),
        (.max, "9223372036854775.807"),
    ]

    @Test(arguments: formatted)
    func millicoresFormatAsAJSONNumberWithAFractionalPart(_ row: (Int64, String)) {
        #expect(JSONNumber.text(millicores: row.0) == row.1)
    }

    @Test func otherScalesFormatTheSameWay() {
        #expect(JSONNumber.text(7143, decimals: 4) == "0.7143")
        #expect(JSONNumber.text(10_000, decimals: 4) == "1.0")
        #expect(JSONNumber.text(5, decimals: 4) == "0.0005")
        #expect(JSONNumber.text(-15, decimals: 1) == "-1.5")
    }

    @Test func formattedMillicoresParseBackToTheSameValue() throws {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<3000 {
            let millicores = Int64.random(in: 0...(Bool.random(using: &rng) ? 100_000 : .max), using: &rng)
            #expect(try JSONNumber.millicores(JSONNumber.text(millicores: millicores)) == millicores)
        }
    }
}

@Suite struct ValidationErrorTests {
    static let entries: [(ValidationError, msg: String, type: String)] = [
        (.stringTooShort(minimum: 3), "String should have at least 3 characters", "string_too_short"),
        (.stringTooShort(minimum: 1), "String should have at least 1 character", "string_too_short"),
        (.stringTooLong(maximum: 64), "String should have at most 64 characters", "string_too_long"),
        (
            .stringPatternMismatch(pattern: "^[A-Za-z0-9._@-]+$"),
            "String should match pattern '^[A-Za-z0-9._@-]+$'", "string_pattern_mismatch"
        ),
        (.nonPrintableCharacter, "String should contain only printable characters", "string_pattern_mismatch"),
        (
            .invalidImageReference(.invalidDigest),
            "Value error, invalid image reference: digest must be sha256: followed by 64 lowercase hexadecimal digits",
            "value_error"
        ),
        (.invalidNumber, "Input should be a valid number, unable to parse string as a number", "float_parsing"),
        (.invalidInteger, "Input should be a valid integer, unable to parse string as an integer", "int_parsing"),
        (
            .fractionalInteger, "Input should be a valid integer, got a number with a fractional part",
            "int_from_float"
        ),
        (
            .tooManyDecimalPlaces(maximum: 3), "Decimal input should have no more than 3 decimal places",
            "decimal_max_places"
        ),
        (.lessThanMinimum("0"), "Input should be greater than or equal to 0", "greater_than_equal"),
        (.greaterThanMaximum("2147483647"), "Input should be less than or equal to 2147483647", "less_than_equal"),
    ]

    @Test(arguments: entries)
    func errorsCarryFastAPIMessageAndType(_ row: (ValidationError, msg: String, type: String)) {
        #expect(row.0.msg == row.msg)
        #expect(row.0.type == row.type)
    }
}
