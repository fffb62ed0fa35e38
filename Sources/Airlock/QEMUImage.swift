import Foundation
import Synchronization

/// What `qemu-img` says about disk image files, and the conversions Airlock
/// asks of it. QEMU's own tool reads every format QEMU does, so Airlock
/// parses no image format itself.
enum QEMUImage {
    static let tool = "/usr/bin/qemu-img"

    /// The facts of one image file that decide whether it can be a base disk.
    struct Info: Decodable {
        var format: String
        var virtualSize: Int64
        var backingFilename: String?
        var encrypted: Bool?
        var dirtyFlag: Bool?
        var formatSpecific: FormatSpecific?

        /// The qcow2 details that matter: an external data file would make
        /// a host file the disk's content, as a backing file would.
        struct FormatSpecific: Decodable {
            struct Details: Decodable {
                var dataFile: String?
                var corrupt: Bool?

                enum CodingKeys: String, CodingKey {
                    case dataFile = "data-file"
                    case corrupt
                }
            }
            var data: Details?
        }

        var dataFile: String? { formatSpecific?.data?.dataFile }

        enum CodingKeys: String, CodingKey {
            case format
            case virtualSize = "virtual-size"
            case backingFilename = "backing-filename"
            case encrypted
            case dirtyFlag = "dirty-flag"
            case formatSpecific = "format-specific"
        }
    }

    /// Reads an image's header. The format is probed, then checked against
    /// the formats a base disk may have.
    ///
    /// - Throws: `AirlockError` `.imageInvalid` with qemu-img's reason.
    static func info(_ file: URL, named name: URL? = nil) throws(AirlockError) -> Info {
        let output = try run(["info", "--output=json", file.path], about: name ?? file)
        do {
            return try JSONDecoder().decode(Info.self, from: output)
        } catch {
            throw AirlockError(
                .imageInvalid, "qemu-img could not describe '\((name ?? file).path)'",
                cause: ManifestError(description: "\(error)"))
        }
    }

    /// Checks a qcow2 file's metadata for corruption (refcounts, tables
    /// pointing past the end of a truncated file).
    static func check(_ file: URL, named name: URL? = nil) throws(AirlockError) {
        _ = try run(["check", "-q", "-f", "qcow2", file.path], about: name ?? file, what: "is damaged")
    }

    /// Copies an image into a new, self-contained qcow2 file.
    static func convert(_ source: URL, format: String, to target: URL, named name: URL? = nil) throws(AirlockError) {
        _ = try run(
            ["convert", "-q", "-f", format, "-O", "qcow2", source.path, target.path], about: name ?? source,
            what: "could not be converted to qcow2")
    }

    /// Makes a qcow2 overlay on a qcow2 base (for the floor benchmark; jobs
    /// get theirs through libvirt's storage pool).
    static func createOverlay(_ overlay: URL, base: URL) throws(AirlockError) {
        _ = try run(
            ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base.path, overlay.path], about: base,
            what: "could not get an overlay")
    }

    private static func run(_ arguments: [String], about file: URL, what: String = "is not a disk image qemu can read")
        throws(AirlockError) -> Data
    {
        guard FileManager.default.isExecutableFile(atPath: tool) else {
            throw AirlockError(
                .unsupported, "qemu-img is not installed at \(tool)", hint: "install it: apt-get install qemu-utils")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw AirlockError(.internalError, "cannot run \(tool)", cause: error)
        }
        // Both pipes are read at once, so that neither can fill and stall qemu-img.
        let errorText = PipeReader(errors.fileHandleForReading)
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let message = String(decoding: errorText.finish(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard process.terminationStatus == 0 else {
            // A damaged image can make qemu-img list thousands of errors: the first few say enough.
            let lines = message.split(separator: "\n")
            var said = lines.prefix(4).map { String($0.prefix(300)) }.joined(separator: "\n")
            if lines.count > 4 {
                said += "\n(\(lines.count - 4) more lines from qemu-img)"
            }
            throw AirlockError(
                .imageInvalid, "'\(file.path)' \(what)" + (said.isEmpty ? "" : ": \(said)"),
                hint: "check the file with: qemu-img check '\(file.path)'")
        }
        return data
    }
}

/// Reads a pipe to its end on a thread of its own.
private final class PipeReader: Sendable {
    private let data = Mutex(Data())
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread { [self] in
            let bytes = handle.readDataToEndOfFile()
            data.withLock { $0 = bytes }
            done.signal()
        }.start()
    }

    /// Waits for the end of the pipe and returns what it carried.
    func finish() -> Data {
        done.wait()
        return data.withLock { $0 }
    }
}
