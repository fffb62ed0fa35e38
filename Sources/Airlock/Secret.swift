import Foundation

/// A value the job's command finds in its environment, which Airlock never
/// stores, logs or hands to libvirt: only its name and where to read it are
/// kept, and the value is read when the job starts and sent to the guest
/// over the job's SSH connection.
public struct Secret: Sendable, Equatable, Codable {
    /// The variable the command sees.
    public var name: String
    /// The file holding the value; nil reads the variable `name` from the
    /// environment of the process that runs the job (`airlock run`, or the
    /// controller for submitted jobs).
    public var file: String?

    /// The largest value taken.
    public static let maxBytes = 64 * 1024

    public init(name: String, file: String? = nil) {
        self.name = name
        self.file = file
    }

    /// Where the value comes from, for messages.
    var source: String {
        file.map { "file '\($0)'" } ?? "the environment variable '\(name)'"
    }

    /// Reads the value. Messages name the secret and its source, never the value.
    ///
    /// A file's value is its content without one trailing newline.
    ///
    /// - Throws: `AirlockError` `.invalidArgument` when the value is missing,
    ///   too big, not UTF-8 or holds a NUL byte.
    public func value(environment: [String: String]) throws(AirlockError) -> String {
        let text: String
        if let file {
            let bytes = try Self.readFile(file, name: name)
            guard bytes.count <= Self.maxBytes else {
                throw AirlockError(
                    .invalidArgument, "secret '\(name)' from \(source) is over \(Self.maxBytes / 1024) KiB")
            }
            guard let decoded = String(validating: bytes, as: UTF8.self) else {
                throw AirlockError(.invalidArgument, "secret '\(name)' in file '\(file)' is not UTF-8 text")
            }
            // "\r\n" is one Character in Swift.
            text = decoded.last == "\n" || decoded.last == "\r\n" ? String(decoded.dropLast()) : decoded
        } else {
            guard let found = environment[name] else {
                throw AirlockError(
                    .invalidArgument, "secret '\(name)' is not set in the environment of the process running the job",
                    hint: "for 'airlock run', export \(name) first; for submitted jobs the controller reads it: start "
                        + "'airlock controller' with \(name) exported (under systemd, in /etc/airlock/controller.env); "
                        + "or read it from a file with --secret-file \(name)=PATH")
            }
            text = found
        }
        guard text.utf8.count <= Self.maxBytes else {
            throw AirlockError(
                .invalidArgument, "secret '\(name)' from \(source) is over \(Self.maxBytes / 1024) KiB")
        }
        guard !text.utf8.contains(0) else {
            throw AirlockError(.invalidArgument, "secret '\(name)' from \(source) contains a NUL byte")
        }
        return text
    }

    /// Reads at most `maxBytes` + 1 bytes of a regular file.
    private static func readFile(_ path: String, name: String) throws(AirlockError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            throw AirlockError(
                .invalidArgument, "cannot read secret '\(name)' from file '\(path)'", cause: POSIXFailure())
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw AirlockError(.invalidArgument, "secret file '\(path)' of '\(name)' is not a regular file")
        }
        var bytes = [UInt8](repeating: 0, count: maxBytes + 1)
        var count = 0
        while count < bytes.count {
            let got = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress?.advanced(by: count), $0.count - count) }
            if got < 0 && errno == EINTR { continue }
            guard got >= 0 else {
                throw AirlockError(
                    .invalidArgument, "cannot read secret '\(name)' from file '\(path)'", cause: POSIXFailure())
            }
            if got == 0 { break }
            count += got
        }
        return Array(bytes[0..<count])
    }
}
