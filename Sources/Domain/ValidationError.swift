/// What is wrong with one input field, worded like FastAPI (pydantic) so that existing clients parse it the same way.
///
/// The HTTP layer adds `loc` and answers `422 {"detail": [{"loc", "msg", "type"}]}`.
public enum ValidationError: Error, Sendable, Equatable {
    case stringTooShort(minimum: Int)
    case stringTooLong(maximum: Int)
    case stringPatternMismatch(pattern: String)
    /// A control, format, separator (other than the ASCII space), private-use or unassigned character.
    case nonPrintableCharacter
    case invalidImageReference(ImageReferenceProblem)
    /// Not the text of a JSON number.
    case invalidNumber
    /// Not the text of a JSON number, where an integer is expected.
    case invalidInteger
    /// A number with a non-zero fractional part where an integer is expected (`2.0` is accepted, as by pydantic).
    case fractionalInteger
    case tooManyDecimalPlaces(maximum: Int)
    /// Below the smallest allowed value, given as its JSON text.
    case lessThanMinimum(String)
    /// Above the largest allowed value, given as its JSON text.
    case greaterThanMaximum(String)

    /// The human-readable `msg` of the FastAPI error entry.
    public var msg: String {
        switch self {
        case .stringTooShort(let minimum): "String should have at least \(count(minimum, "character"))"
        case .stringTooLong(let maximum): "String should have at most \(count(maximum, "character"))"
        case .stringPatternMismatch(let pattern): "String should match pattern '\(pattern)'"
        case .nonPrintableCharacter: "String should contain only printable characters"
        case .invalidImageReference(let problem): "Value error, invalid image reference: \(problem.description)"
        case .invalidNumber: "Input should be a valid number, unable to parse string as a number"
        case .invalidInteger: "Input should be a valid integer, unable to parse string as an integer"
        case .fractionalInteger: "Input should be a valid integer, got a number with a fractional part"
        case .tooManyDecimalPlaces(let maximum):
            "Decimal input should have no more than \(count(maximum, "decimal place"))"
        case .lessThanMinimum(let minimum): "Input should be greater than or equal to \(minimum)"
        case .greaterThanMaximum(let maximum): "Input should be less than or equal to \(maximum)"
        }
    }

    /// The machine-readable `type` of the FastAPI error entry.
    public var type: String {
        switch self {
        case .stringTooShort: "string_too_short"
        case .stringTooLong: "string_too_long"
        case .stringPatternMismatch, .nonPrintableCharacter: "string_pattern_mismatch"
        case .invalidImageReference: "value_error"
        case .invalidNumber: "float_parsing"
        case .invalidInteger: "int_parsing"
        case .fractionalInteger: "int_from_float"
        case .tooManyDecimalPlaces: "decimal_max_places"
        case .lessThanMinimum: "greater_than_equal"
        case .greaterThanMaximum: "less_than_equal"
        }
    }
}

/// Which part of a container image reference breaks the Docker distribution reference grammar.
public enum ImageReferenceProblem: Sendable, Equatable, CustomStringConvertible {
    case invalidRegistry
    case invalidRepository
    case nameTooLong
    case invalidTag
    case invalidDigest

    public var description: String {
        switch self {
        case .invalidRegistry: "registry must be a host name, IPv4 or [IPv6] address, with an optional numeric port"
        case .invalidRepository:
            "repository path components must be lowercase letters and digits, separated by '.', '_', '__' or dashes"
        case .nameTooLong: "name must be at most \(Validation.maximumImageNameLength) characters"
        case .invalidTag: "tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
        case .invalidDigest: "digest must be sha256: followed by 64 lowercase hexadecimal digits"
        }
    }
}

/// Pydantic's wording: "1 character", "3 characters".
private func count(_ number: Int, _ noun: String) -> String {
    number == 1 ? "1 \(noun)" : "\(number) \(noun)s"
}
