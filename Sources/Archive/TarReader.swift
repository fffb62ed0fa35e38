import CArchive
import Foundation

/// One entry of a tar stream, as its header describes it.
///
/// Everything here comes from the stream's producer: treat names, sizes and
/// link targets as untrusted.
public struct TarEntry: Sendable {
    /// The kinds of entry a tar stream can hold.
    public enum Kind: Sendable, Equatable {
        case file, directory, symlink, hardlink, fifo, socket, characterDevice, blockDevice, other
    }

    /// The entry's path, raw bytes as stored.
    public let path: [UInt8]
    public let kind: Kind
    /// The size the header claims for the data that follows.
    public let size: Int64
    /// Permission bits (including setuid, setgid and sticky).
    public let mode: UInt32
    /// For links, the stored target.
    public let linkTarget: [UInt8]?
}

/// Reads a tar stream from a source that is pulled on demand.
///
/// Only the tar family of formats is enabled, and no compression filters.
public final class TarReader {
    private let archive: OpaquePointer
    private let context: SourceContext

    /// - Parameter source: Fills the buffer and returns the byte count, 0 at
    ///   the end of the stream. An error it throws ends reading and is
    ///   rethrown by the failing call.
    /// - Throws: The source's own error, or `ArchiveError` when libarchive cannot start reading.
    public init(source: @escaping (UnsafeMutableRawBufferPointer) throws -> Int) throws {
        guard let archive = archive_read_new() else {
            throw ArchiveError(message: "libarchive could not allocate a reader")
        }
        self.archive = archive
        self.context = SourceContext(source: source)
        archive_read_support_format_tar(archive)
        archive_read_support_format_gnutar(archive)
        // A producer may send several archives back to back.
        archive_read_set_options(archive, "tar:read_concatenated_archives")
        let opaque = Unmanaged.passUnretained(context).toOpaque()
        let status = archive_read_open(
            archive, opaque, nil,
            { _, context, pointer in
                guard let context, let pointer else { return -1 }
                let box = Unmanaged<SourceContext>.fromOpaque(context).takeUnretainedValue()
                do {
                    let count = try box.source(box.buffer)
                    pointer.pointee = UnsafeRawPointer(box.buffer.baseAddress)
                    return la_ssize_t(count)
                } catch {
                    box.error = error
                    return -1
                }
            }, nil)
        if status != ARCHIVE_OK {
            // deinit frees the archive: every stored property is set by now.
            throw context.error ?? ArchiveError.last(archive, "open")
        }
    }

    deinit {
        archive_read_free(archive)
    }

    /// The error thrown by the source, if reading stopped because of it.
    public var sourceError: Error? { context.error }

    /// Moves to the next entry.
    ///
    /// - Returns: The entry's header, or nil at the end of the archive.
    public func next() throws -> TarEntry? {
        var entry: OpaquePointer?
        let status = archive_read_next_header(archive, &entry)
        if status == ARCHIVE_EOF {
            return nil
        }
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else {
            throw context.error ?? ArchiveError.last(archive, "next")
        }
        let path = archive_entry_pathname(entry).map(bytes) ?? []
        let kind: TarEntry.Kind
        var target: [UInt8]?
        if let hardlink = archive_entry_hardlink(entry) {
            kind = .hardlink
            target = bytes(hardlink)
        } else {
            switch UInt32(archive_entry_filetype(entry)) {
            case airlock_ae_ifreg: kind = .file
            case airlock_ae_ifdir: kind = .directory
            case airlock_ae_iflnk:
                kind = .symlink
                target = archive_entry_symlink(entry).map(bytes)
            case airlock_ae_ififo: kind = .fifo
            case airlock_ae_ifsock: kind = .socket
            case airlock_ae_ifchr: kind = .characterDevice
            case airlock_ae_ifblk: kind = .blockDevice
            default: kind = .other
            }
        }
        return TarEntry(
            path: path, kind: kind, size: archive_entry_size(entry),
            mode: UInt32(archive_entry_perm(entry)), linkTarget: target)
    }

    /// Reads the current entry's data.
    ///
    /// - Returns: The byte count, 0 once the entry's data is exhausted.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let count = archive_read_data(archive, buffer.baseAddress, buffer.count)
        if count < 0 {
            throw context.error ?? ArchiveError.last(archive, "read")
        }
        return count
    }
}

/// Carries the Swift source and its buffer through libarchive's C callback.
private final class SourceContext {
    let source: (UnsafeMutableRawBufferPointer) throws -> Int
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    var error: Error?

    init(source: @escaping (UnsafeMutableRawBufferPointer) throws -> Int) {
        self.source = source
    }

    deinit {
        buffer.deallocate()
    }
}

/// The bytes of a C string, exactly as stored (no UTF-8 repair).
private func bytes(_ pointer: UnsafePointer<CChar>) -> [UInt8] {
    let length = strlen(pointer)
    return pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
        Array(UnsafeBufferPointer(start: $0, count: length))
    }
}
