/// Checks on the strings clients send, returning the value to store (unchanged: names are stored exactly as sent).
///
/// Lengths count Unicode scalars, as Python's `len` does, so limits match what FastAPI clients were written against
/// and do not depend on the grapheme rules of a Unicode version.
public enum Validation {
    /// Usernames: 3–64 ASCII letters, digits and `._-@`; ASCII only, so no two usernames look alike.
    ///
    /// Throws `stringTooShort`, `stringTooLong` or `stringPatternMismatch`.
    public static func username(_ value: String) throws(ValidationError) -> String {
        try checkLength(value, 3...64)
        guard value.unicodeScalars.allSatisfy(isUsernameCharacter) else {
            throw .stringPatternMismatch(pattern: "^[A-Za-z0-9._@-]+$")
        }
        return value
    }

    /// Organization, cluster and deployment names: 1–128 printable characters, spaces allowed.
    ///
    /// Printable is Python's `str.isprintable`: no control, format, surrogate, private-use or unassigned characters
    /// and no separators other than the ASCII space, so a name cannot hide text or break a log line.
    /// Throws `stringTooShort`, `stringTooLong` or `nonPrintableCharacter`.
    public static func name(_ value: String) throws(ValidationError) -> String {
        try checkLength(value, 1...128)
        guard value.unicodeScalars.allSatisfy(isPrintable) else { throw .nonPrintableCharacter }
        return value
    }

    /// Passwords: 1–1024 characters of any kind.
    ///
    /// No minimum beyond non-empty, because the seed API accepted any password and its clients (down to the Swagger
    /// default `"string"`) must keep registering; the maximum bounds the work of hashing a request body.
    /// Throws `stringTooShort` or `stringTooLong`.
    public static func password(_ value: String) throws(ValidationError) -> String {
        try checkLength(value, 1...1024)
        return value
    }

    private static func checkLength(_ value: String, _ limits: ClosedRange<Int>) throws(ValidationError) {
        let length = value.unicodeScalars.count
        if length < limits.lowerBound { throw .stringTooShort(minimum: limits.lowerBound) }
        if length > limits.upperBound { throw .stringTooLong(maximum: limits.upperBound) }
    }

    private static func isUsernameCharacter(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isASCII && (isASCIIAlphanumeric(scalar) || "._-@".unicodeScalars.contains(scalar))
    }

    private static func isPrintable(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator: false
        case .spaceSeparator: scalar == " "
        default: true
        }
    }
}

func isASCIIAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
    ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
}
