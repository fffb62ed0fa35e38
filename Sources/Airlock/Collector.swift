import AirlockLog
import Archive
import Foundation

/// Limits on what a job may bring back from its guest.
public struct CollectLimits: Sendable, Equatable, Codable {
    /// Total bytes of file data kept.
    public var maxBytes: Int64
    /// Number of entries read from the stream, kept or skipped.
    public var maxEntries: Int

    public static let `default` = CollectLimits(maxBytes: 4 << 30, maxEntries: 50_000)

    public init(maxBytes: Int64, maxEntries: Int) {
        self.maxBytes = maxBytes
        self.maxEntries = maxEntries
    }
}

/// What a collection kept and what it refused.
public struct CollectReport: Sendable, Equatable, Codable {
    /// An entry that was not written, and why.
    public struct Skipped: Sendable, Equatable, Codable {
        /// The guest's name for it, with control characters escaped.
        public var path: String
        public var reason: String
    }

    public var files = 0
    public var folders = 0
    public var bytes: Int64 = 0
    /// The first `maxListed` skipped entries; `skippedUnlisted` counts the rest.
    public var skipped: [Skipped] = []
    public var skippedUnlisted = 0
    /// Set when a limit stopped the collection early.
    public var limitReached: String?
    /// Set when the collect folder did not exist in the guest.
    public var folderMissing = false

    /// How many skipped entries are listed one by one.
    public static let maxListed = 1000

    public init() {}

    /// Records a skipped entry, keeping the list and each text bounded: a
    /// guest must not be able to grow the report (or the host's memory) at will.
    public mutating func note(_ path: String, _ reason: String) {
        guard skipped.count < Self.maxListed else {
            skippedUnlisted += 1
            return
        }
        skipped.append(Skipped(path: Self.clip(path), reason: Self.clip(reason)))
    }

    /// Records several skipped entries.
    public mutating func note(_ entries: [Skipped]) {
        for entry in entries {
            note(entry.path, entry.reason)
        }
    }

    private static func clip(_ text: String) -> String {
        text.count <= 300 ? text : String(text.prefix(300)) + "..."
    }
}

/// Unpacks a tar stream that came from a guest into a result folder, treating
/// every header as hostile.
///
/// All writes are `openat`/`mkdirat` relative to descriptors of folders that
/// this collector made itself, with `O_NOFOLLOW` and `O_EXCL`: no name can
/// reach outside the folder, no link is ever followed, nothing that exists is
/// overwritten. Links, devices, FIFOs and sockets are never created; they are
/// listed as skipped. File modes keep only the permission bits.
struct Collector {
    let limits: CollectLimits
    /// Called for every entry and every chunk of data; throws to stop (a
    /// cancel or a deadline). Tiny archives can expand to much work.
    var checkpoint: () throws -> Void = {}

    /// Unpacks everything `reader` yields under `destination`, recording
    /// progress in `report` as it goes, so that a failure part-way still
    /// says what was written.
    func collect(from reader: TarReader, into destination: URL, report: inout CollectReport) throws {
        guard mkdir(destination.path, 0o755) == 0 || errno == EEXIST else {
            throw AirlockError(
                .internalError, "cannot create result folder '\(destination.path)'", cause: POSIXFailure())
        }
        let root = open(destination.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard root >= 0 else {
            throw AirlockError(.internalError, "cannot open result folder '\(destination.path)'", cause: POSIXFailure())
        }
        defer { close(root) }

        var entries = 0
        let folders = FolderCursor(root: root)
        defer { folders.closeAll() }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        defer { buffer.deallocate() }

        while let entry = try reader.next() {
            try checkpoint()
            // Every entry counts, refused ones too: refusing costs work as well.
            if entries >= limits.maxEntries {
                report.limitReached = "more than \(limits.maxEntries) entries"
                break
            }
            entries += 1
            // Names are shown escaped and clipped: they come from the guest.
            let shown = Terminal.escapeBytes(Array(entry.path.prefix(1024)))
            guard let components = Self.components(of: entry.path) else {
                report.note(shown, "rejected remote name")
                continue
            }
            guard let name = components.last else {
                continue  // the collect folder itself ("./")
            }
            guard components.count <= Self.maxDepth else {
                report.note(shown, "deeper than \(Self.maxDepth) folders")
                continue
            }
            let parentPath = components.dropLast()
            if let link = folders.refusedLink(above: parentPath) {
                // Nothing is collected below a link that was refused.
                report.note(shown, "inside symbolic link '\(Terminal.escape(link))'")
                continue
            }
            switch entry.kind {
            case .directory:
                let parent = try folders.open(parentPath)
                if mkdirat(parent, name, 0o755) != 0 && errno != EEXIST {
                    throw AirlockError(.internalError, "cannot create folder '\(shown)'", cause: POSIXFailure())
                }
                report.folders += 1
            case .file:
                // Sizes come from the guest: compare without overflowing.
                if entry.size < 0 || entry.size > limits.maxBytes - report.bytes {
                    report.note(
                        shown,
                        "result exceeds limit (\(Sizes.format(report.bytes.addingClamped(entry.size))) > "
                            + "\(Sizes.format(limits.maxBytes)))")
                    report.limitReached = "more than \(Sizes.format(limits.maxBytes)) of files"
                    return
                }
                let parent = try folders.open(parentPath)
                guard let written = try writeFile(entry, name: name, in: parent, from: reader, buffer: buffer) else {
                    report.note(shown, "name already collected")
                    continue
                }
                guard written == entry.size else {
                    throw AirlockError(
                        .guestFailed, "result file '\(shown)' is \(written) bytes, but its header said \(entry.size)")
                }
                report.files += 1
                report.bytes += written
            case .symlink:
                folders.refuseLink(components)
                let target = entry.linkTarget.map { Terminal.escapeBytes(Array($0.prefix(256))) } ?? ""
                report.note(shown, "symbolic link to '\(target)' not collected")
            case .hardlink:
                report.note(shown, "hard link not collected")
            case .fifo:
                report.note(shown, "FIFO not collected")
            case .socket:
                report.note(shown, "socket not collected")
            case .characterDevice, .blockDevice:
                report.note(shown, "device node not collected")
            case .other:
                report.note(shown, "unknown entry type not collected")
            }
        }
    }

    /// Deeper entries are refused: it bounds the work each entry can cost.
    static let maxDepth = 128

    /// Splits a stored path into safe components, or nil when it must be
    /// rejected: absolute, containing `..`, a NUL, or an over-long name.
    static func components(of path: [UInt8]) -> [String]? {
        if path.first == UInt8(ascii: "/") || path.contains(0) || path.count > 4096 {
            return nil
        }
        var result: [String] = []
        for part in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if part.elementsEqual([UInt8(ascii: ".")]) {
                continue
            }
            if part.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) || part.count > 255 {
                return nil
            }
            // Names are kept byte for byte; invalid UTF-8 is rejected rather than altered.
            guard let name = String(validating: part, as: UTF8.self) else {
                return nil
            }
            result.append(name)
        }
        return result
    }

    /// Writes one file's data; returns nil when the name is taken already.
    private func writeFile(
        _ entry: TarEntry, name: String, in parent: Int32, from reader: TarReader,
        buffer: UnsafeMutableRawBufferPointer
    ) throws -> Int64? {
        let fd = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 && errno == EEXIST {
            return nil
        }
        guard fd >= 0 else {
            throw AirlockError(
                .internalError, "cannot create result file '\(Terminal.escape(name))'", cause: POSIXFailure())
        }
        defer { close(fd) }
        var total: Int64 = 0
        while true {
            try checkpoint()
            let count = try reader.read(into: buffer)
            if count == 0 { break }
            total += Int64(count)
            if total > entry.size {
                break
            }
            // Runs of zeros (sparse files, mostly) become holes, not disk blocks.
            if UnsafeRawBufferPointer(rebasing: buffer[0..<count]).allSatisfy({ $0 == 0 }) {
                guard lseek(fd, off_t(count), SEEK_CUR) >= 0 else {
                    throw AirlockError(
                        .internalError, "cannot write result file '\(Terminal.escape(name))'", cause: POSIXFailure())
                }
                continue
            }
            guard writeAll(fd, UnsafeRawBufferPointer(rebasing: buffer[0..<count])) else {
                throw AirlockError(
                    .internalError, "cannot write result file '\(Terminal.escape(name))'", cause: POSIXFailure())
            }
        }
        // A file that ends in a hole needs its length set explicitly.
        guard ftruncate(fd, off_t(total)) == 0 else {
            throw AirlockError(
                .internalError, "cannot write result file '\(Terminal.escape(name))'", cause: POSIXFailure())
        }
        // Permission bits only, never writable by group or others.
        _ = fchmod(fd, mode_t((entry.mode & 0o755) | 0o600))
        return total
    }
}

/// The chain of folders open below the result root, reused from one entry
/// to the next: tar streams list a folder's entries together, so each entry
/// opens only the components that differ from the previous one. Every
/// folder is created and opened by name relative to its parent's descriptor
/// with `O_NOFOLLOW`, so no link (planted or raced in) is ever followed.
private final class FolderCursor {
    private var names: [String] = []
    private var descriptors: [Int32]
    /// Paths of refused symbolic links, by their components.
    private var refusedLinks: Set<[String]> = []

    init(root: Int32) {
        descriptors = [root]
    }

    /// The descriptor of the folder at `path`, creating missing folders.
    func open(_ path: ArraySlice<String>) throws -> Int32 {
        var common = 0
        while common < names.count && common < path.count && names[common] == path[path.startIndex + common] {
            common += 1
        }
        while names.count > common {
            names.removeLast()
            close(descriptors.removeLast())
        }
        for name in path.dropFirst(common) {
            let parent = descriptors[descriptors.count - 1]
            if mkdirat(parent, name, 0o755) != 0 && errno != EEXIST {
                throw AirlockError(
                    .internalError, "cannot create folder '\(Terminal.escape(name))'", cause: POSIXFailure())
            }
            let next = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard next >= 0 else {
                throw AirlockError(
                    .guestFailed, "result path '\(Terminal.escape(name))' is not a folder", cause: POSIXFailure())
            }
            names.append(name)
            descriptors.append(next)
        }
        return descriptors[descriptors.count - 1]
    }

    func refuseLink(_ path: [String]) {
        refusedLinks.insert(path)
    }

    /// The refused link that `path` lies in or below, if any. Cheap when no
    /// link was refused, linear in the depth otherwise.
    func refusedLink(above path: ArraySlice<String>) -> String? {
        guard !refusedLinks.isEmpty else { return nil }
        var prefix: [String] = []
        for name in path {
            prefix.append(name)
            if refusedLinks.contains(prefix) {
                return prefix.joined(separator: "/")
            }
        }
        return nil
    }

    /// Closes every folder but the root, which belongs to the caller.
    func closeAll() {
        for descriptor in descriptors.dropFirst() {
            close(descriptor)
        }
        descriptors = Array(descriptors.prefix(1))
        names = []
    }
}

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
///
/// - Returns: false when a write fails; `errno` then says why.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let written = write(fd, bytes.baseAddress?.advanced(by: offset), bytes.count - offset)
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return false }
        offset += written
    }
    return true
}

/// The current `errno` as an error.
struct POSIXFailure: Error, CustomStringConvertible, Sendable {
    let code: Int32
    init(code: Int32 = errno) { self.code = code }
    var description: String { String(cString: strerror(code)) }
}

extension Int64 {
    /// The sum, or `Int64.max` where it would overflow.
    func addingClamped(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}
