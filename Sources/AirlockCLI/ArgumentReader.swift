import Airlock

/// A usage error: the message names the bad token; the CLI prints the
/// command's usage line after it and exits 64.
public struct UsageError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public let hint: String?

    public init(_ message: String, hint: String? = nil) {
        self.message = message
        self.hint = hint
    }

    public var description: String { message }
}

/// Walks a command's arguments: `--flag value`, `--flag=value`, bare
/// switches, and everything after `--` as the trailing command.
struct ArgumentReader {
    private var remaining: ArraySlice<String>
    /// Everything after `--`, untouched.
    private(set) var trailing: [String] = []

    init(_ arguments: [String]) {
        if let separator = arguments.firstIndex(of: "--") {
            remaining = arguments[..<separator]
            trailing = Array(arguments[(separator + 1)...])
        } else {
            remaining = arguments[...]
        }
    }

    /// The next option as (name, inline value), or nil when none are left.
    /// A bare word that is not an option is returned with a nil name.
    mutating func next() -> (name: String?, inline: String?, word: String)? {
        guard let word = remaining.popFirst() else { return nil }
        guard word.hasPrefix("-"), word.count > 1 else {
            return (nil, nil, word)
        }
        if let equals = word.firstIndex(of: "=") {
            return (String(word[..<equals]), String(word[word.index(after: equals)...]), word)
        }
        return (word, nil, word)
    }

    /// The value of an option: its inline `=value` or the next argument.
    mutating func value(for name: String, inline: String?) throws(UsageError) -> String {
        if let inline { return inline }
        guard let value = remaining.first else {
            throw UsageError("option '\(name)' needs a value")
        }
        // `--state-dir --force` is a forgotten value, not a folder named "--force".
        if value.hasPrefix("--") && value.count > 2 {
            throw UsageError(
                "option '\(name)' needs a value, but the next argument is the option '\(value)'",
                hint: "give the value, or write \(name)=\(value) if that really is the value")
        }
        remaining.removeFirst()
        return value
    }

    /// The words left before `--`.
    var rest: [String] { Array(remaining) }

    /// Takes `word` as the one bare argument a command accepts (a job id);
    /// a second one is an error.
    static func single(_ word: String, into slot: inout String?) throws(UsageError) {
        guard slot == nil else { throw UsageError("unexpected argument '\(word)'") }
        slot = word
    }
}

/// Parsers for option values. The units themselves are Airlock's (`Durations`,
/// `Sizes`), shared with job spec files.
enum ValueParser {
    /// "90", "90s", "5m", "2h", "1h30m", "1.5s", "2d" as a duration.
    static func duration(_ text: String, option: String) throws(UsageError) -> Duration {
        if text.hasPrefix("-") {
            throw UsageError(
                "'\(text)' for \(option) is negative", hint: "durations are positive, such as 30s, 10m or 2h")
        }
        guard let duration = Durations.parse(text) else {
            throw UsageError(
                "'\(text)' is not a duration for \(option)",
                hint: "use forms such as 30s, 10m or 2h, at most \(Durations.maximum.components.seconds / 86400)d")
        }
        return duration
    }

    /// A size such as "512M", "1G", "100MiB"; a bare number is taken in `defaultUnit` bytes.
    static func size(_ text: String, option: String, defaultUnit: Int64 = 1) throws(UsageError) -> Int64 {
        guard let bytes = Sizes.parse(text, defaultUnit: defaultUnit) else {
            throw UsageError("'\(text)' is not a size for \(option)", hint: "use forms such as 512M, 2G or 100MiB")
        }
        return bytes
    }

    static func integer(_ text: String, option: String) throws(UsageError) -> Int {
        guard let value = Int(text) else {
            throw UsageError("'\(text)' is not a whole number for \(option)")
        }
        return value
    }
}
