import CArchive
import Foundation

/// Writes a folder tree as a tar stream (GNU format), handing the bytes to a
/// sink as they are produced. Nothing is buffered beyond one tar block.
///
/// Symbolic links are stored as links, never followed; file modes are kept;
/// owners are stored as root. Sockets and device nodes are refused.
public final class TarWriter {
    private let archive: OpaquePointer
    private let context: SinkContext

    /// - Parameter sink: Receives every chunk of the stream, in order. An error
    ///   it throws stops the archive and is rethrown by the failing call.
    /// - Throws: `ArchiveError` when libarchive cannot start writing.
    public init(sink: @escaping (UnsafeRawBufferPointer) throws -> Void) throws(ArchiveError) {
        guard let archive = archive_write_new() else {
            throw ArchiveError(message: "libarchive could not allocate a writer")
        }
        self.archive = archive
        self.context = SinkContext(sink: sink)
        archive_write_set_format_gnutar(archive)
        archive_write_set_bytes_in_last_block(archive, 1)
        let opaque = Unmanaged.passUnretained(context).toOpaque()
        let status = archive_write_open(
            archive, opaque, nil,
            { _, context, buffer, length in
                guard let context, let buffer else { return -1 }
                let box = Unmanaged<SinkContext>.fromOpaque(context).takeUnretainedValue()
                do {
                    try box.sink(UnsafeRawBufferPointer(start: buffer, count: length))
                    return la_ssize_t(length)
                } catch {
                    box.error = error
                    return -1
                }
            }, nil)
        if status != ARCHIVE_OK {
            // deinit frees the archive: every stored property is set by now.
            throw ArchiveError.last(archive, "open")
        }
    }

    deinit {
        archive_write_free(archive)
    }

    /// Adds `folder`'s contents (not the folder itself) under relative names.
    ///
    /// - Returns: The number of entries written.
    /// - Throws: `ArchiveError`, or the sink's own error.
    @discardableResult
    public func appendContents(of folder: URL) throws -> Int {
        guard let disk = archive_read_disk_new() else {
            throw ArchiveError(message: "libarchive could not allocate a disk reader")
        }
        defer { archive_read_free(disk) }
        archive_read_disk_set_symlink_physical(disk)
        archive_read_disk_set_standard_lookup(disk)

        // A folder named through a symbolic link is archived as the folder
        // it points to: links are kept as links only inside it.
        let root = folder.standardizedFileURL.resolvingSymlinksInPath().path
        guard archive_read_disk_open(disk, root) == ARCHIVE_OK else {
            throw ArchiveError.last(disk, "appendContents")
        }
        guard let entry = archive_entry_new() else {
            throw ArchiveError(message: "libarchive could not allocate an entry")
        }
        defer { archive_entry_free(entry) }

        var count = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            archive_entry_clear(entry)
            let status = archive_read_next_header2(disk, entry)
            if status == ARCHIVE_EOF {
                break
            }
            if status != ARCHIVE_OK && status != ARCHIVE_WARN {
                throw ArchiveError.last(disk, "appendContents")
            }
            archive_read_disk_descend(disk)

            let path = String(cString: archive_entry_pathname(entry))
            guard path != root else { continue }
            let relative = String(path.dropFirst(root.hasSuffix("/") ? root.count : root.count + 1))
            let type = UInt32(archive_entry_filetype(entry))
            guard type == airlock_ae_ifreg || type == airlock_ae_ifdir || type == airlock_ae_iflnk else {
                throw ArchiveError(message: "'\(relative)' is not a file, folder or symbolic link")
            }
            archive_entry_set_pathname(entry, relative)
            archive_entry_set_uid(entry, 0)
            archive_entry_set_gid(entry, 0)
            archive_entry_set_uname(entry, "root")
            archive_entry_set_gname(entry, "root")
            try writeHeader(entry)
            if type == airlock_ae_ifreg {
                try copyData(from: path, size: archive_entry_size(entry), buffer: buffer)
            }
            count += 1
        }
        return count
    }

    /// Adds one entry exactly as given: any name, kind and link target. This
    /// is how tests build hostile archives; `appendContents(of:)` is the
    /// normal path.
    public func append(
        path: String, kind: TarEntry.Kind, mode: UInt32 = 0o644, data: [UInt8] = [],
        linkTarget: String? = nil, size: Int64? = nil
    ) throws {
        guard let entry = archive_entry_new() else {
            throw ArchiveError(message: "libarchive could not allocate an entry")
        }
        defer { archive_entry_free(entry) }
        archive_entry_set_pathname(entry, path)
        archive_entry_set_perm(entry, mode_t(mode))
        switch kind {
        case .file: archive_entry_set_filetype(entry, airlock_ae_ifreg)
        case .directory: archive_entry_set_filetype(entry, airlock_ae_ifdir)
        case .symlink:
            archive_entry_set_filetype(entry, airlock_ae_iflnk)
            archive_entry_set_symlink(entry, linkTarget ?? "")
        case .hardlink:
            archive_entry_set_filetype(entry, airlock_ae_ifreg)
            archive_entry_set_hardlink(entry, linkTarget ?? "")
        case .fifo: archive_entry_set_filetype(entry, airlock_ae_ififo)
        case .socket: archive_entry_set_filetype(entry, airlock_ae_ifsock)
        case .characterDevice: archive_entry_set_filetype(entry, airlock_ae_ifchr)
        case .blockDevice: archive_entry_set_filetype(entry, airlock_ae_ifblk)
        case .other: archive_entry_set_filetype(entry, airlock_ae_ifreg)
        }
        archive_entry_set_size(entry, kind == .file ? (size ?? Int64(data.count)) : 0)
        try writeHeader(entry)
        if kind == .file && !data.isEmpty {
            let written = data.withUnsafeBytes { archive_write_data(archive, $0.baseAddress, $0.count) }
            if written != data.count {
                throw context.error ?? ArchiveError.last(archive, "append")
            }
        }
    }

    /// Ends the stream (writes the trailer) and flushes it to the sink.
    public func finish() throws {
        if archive_write_close(archive) != ARCHIVE_OK {
            throw context.error ?? ArchiveError.last(archive, "finish")
        }
    }

    private func writeHeader(_ entry: OpaquePointer) throws {
        if archive_write_header(archive, entry) != ARCHIVE_OK {
            throw context.error ?? ArchiveError.last(archive, "writeHeader")
        }
    }

    /// Copies exactly `size` bytes of a regular file; a file that changes
    /// size while it is read is an error, never a silently short entry.
    private func copyData(from path: String, size: Int64, buffer: UnsafeMutableRawBufferPointer) throws {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            throw ArchiveError(code: errno, message: "cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var remaining = size
        while remaining > 0 {
            let want = Int(min(Int64(buffer.count), remaining))
            let got = read(fd, buffer.baseAddress, want)
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else {
                throw ArchiveError(message: "'\(path)' shrank while it was being sent")
            }
            let written = archive_write_data(archive, buffer.baseAddress, got)
            if written != got {
                throw context.error ?? ArchiveError.last(archive, "copyData")
            }
            remaining -= Int64(got)
        }
    }
}

/// Carries the Swift sink through libarchive's C callback.
private final class SinkContext {
    let sink: (UnsafeRawBufferPointer) throws -> Void
    var error: Error?

    init(sink: @escaping (UnsafeRawBufferPointer) throws -> Void) {
        self.sink = sink
    }
}
