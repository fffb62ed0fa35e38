import Foundation
import Synchronization

/// Writes records to standard error: the message alone, or with a timestamp,
/// level and metadata in verbose mode. Control characters are escaped so that
/// nothing a guest supplies can drive the terminal.
public struct StderrLogHandler: LogHandler {
    private let verbose: Bool

    public init(verbose: Bool) {
        self.verbose = verbose
    }

    public func write(_ record: LogRecord) {
        var line: String
        if verbose {
            let stamp = record.date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
            line = "\(stamp) \(record.level) \(record.label): \(record.message)"
            for key in record.metadata.keys.sorted() {
                line += " \(key)=\(record.metadata[key] ?? "")"
            }
        } else {
            let prefix = record.level >= .warning ? "airlock: \(record.level): " : "airlock: "
            line = prefix + record.message
        }
        FileHandle.standardError.write(Data((Terminal.escape(line) + "\n").utf8))
    }
}

/// Keeps records in memory, for tests.
public final class InMemoryLogHandler: LogHandler {
    private let storage = Mutex<[LogRecord]>([])

    public init() {}

    public func write(_ record: LogRecord) {
        storage.withLock { $0.append(record) }
    }

    /// Every record written so far.
    public var records: [LogRecord] { storage.withLock { $0 } }
}

/// Makes untrusted text safe to print on a terminal.
public enum Terminal {
    /// Replaces control characters (C0, DEL, C1) with visible escapes such as `\x1b`.
    public static func escape(_ text: String) -> String {
        // Most text is printable ASCII, which needs no look-up.
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) {
            return text
        }
        var out = ""
        out.reserveCapacity(text.count)
        for scalar in text.unicodeScalars {
            let value = scalar.value
            // C0, DEL, C1, and invisible format characters (bidirectional
            // controls, zero-width marks, line separators) that can make a
            // name read differently from what it is.
            let category = scalar.properties.generalCategory
            let invisible = category == .format || category == .lineSeparator || category == .paragraphSeparator
            if value < 0x20 || value == 0x7f || (0x80...0x9f).contains(value) || invisible {
                switch value {
                case 0x0a: out += "\\n"
                case 0x09: out += "\\t"
                case 0x0d: out += "\\r"
                default: out += value > 0xff ? String(format: "\\u{%04x}", value) : String(format: "\\x%02x", value)
                }
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

extension Terminal {
    /// Escapes raw bytes for display: valid UTF-8 is kept (control characters
    /// escaped), other bytes are shown as `\xNN`.
    public static func escapeBytes(_ bytes: [UInt8]) -> String {
        if let text = String(validating: bytes, as: UTF8.self) {
            return escape(text)
        }
        return bytes.map { $0 >= 0x20 && $0 < 0x7f ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }
            .joined()
    }
}

/// Makes a guest's byte stream safe for a terminal as it arrives: valid
/// UTF-8 text passes, newlines and tabs included; every other control
/// character (C0 such as ESC and CR, DEL, and the C1 controls U+0080 to
/// U+009F) and every byte that is not part of valid UTF-8 (raw 8-bit C1,
/// overlong forms, surrogates, stray continuation bytes) becomes a visible
/// `\xNN`. It keeps the state a character split across chunks needs.
public struct TerminalFilter: Sendable {
    /// The bytes of a character begun but not finished, and how many it needs.
    private var pending: [UInt8] = []
    private var needed = 0

    public init() {}

    public mutating func filter(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for byte in bytes {
            take(byte, into: &out)
        }
        return out
    }

    /// What an unfinished character left at the end of the stream, made visible.
    public mutating func finish() -> [UInt8] {
        var out: [UInt8] = []
        for byte in pending { out += Self.visible(byte) }
        pending = []
        needed = 0
        return out
    }

    private mutating func take(_ byte: UInt8, into out: inout [UInt8]) {
        if !pending.isEmpty {
            if continues(byte) {
                pending.append(byte)
                if pending.count == needed {
                    // U+0080 to U+009F are C2 80 to C2 9F.
                    if pending[0] == 0xc2 && pending[1] <= 0x9f {
                        for part in pending { out += Self.visible(part) }
                    } else {
                        out += pending
                    }
                    pending = []
                }
                return
            }
            for part in pending { out += Self.visible(part) }
            pending = []
        }
        switch byte {
        case 0x0a, 0x09: out.append(byte)
        case 0..<0x20, 0x7f: out += Self.visible(byte)
        case 0x20..<0x7f: out.append(byte)
        case 0xc2...0xdf: start(byte, needing: 2)
        case 0xe0...0xef: start(byte, needing: 3)
        case 0xf0...0xf4: start(byte, needing: 4)
        default: out += Self.visible(byte)
        }
    }

    private mutating func start(_ byte: UInt8, needing count: Int) {
        pending = [byte]
        needed = count
    }

    /// Whether `byte` may come next in the pending character: a continuation
    /// byte, within the narrower ranges that rule out overlong forms,
    /// surrogates and code points above U+10FFFF.
    private func continues(_ byte: UInt8) -> Bool {
        guard (0x80...0xbf).contains(byte) else { return false }
        guard pending.count == 1 else { return true }
        switch pending[0] {
        case 0xe0: return byte >= 0xa0
        case 0xed: return byte <= 0x9f
        case 0xf0: return byte >= 0x90
        case 0xf4: return byte <= 0x8f
        default: return true
        }
    }

    private static func visible(_ byte: UInt8) -> [UInt8] {
        let digits = Array("0123456789abcdef".utf8)
        return [UInt8(ascii: "\\"), UInt8(ascii: "x"), digits[Int(byte >> 4)], digits[Int(byte & 0xf)]]
    }
}
