import CArchive
import Foundation

/// Writes a small ISO 9660 image (with Rock Ridge names) holding a few
/// files, such as the NoCloud seed cloud-init reads at boot.
public enum ISOWriter {
    /// Writes `files` (name to contents, at the image's root) to `file`,
    /// which is created with mode 0600 and must not exist.
    ///
    /// - Parameters:
    ///   - files: The files, by name, in order.
    ///   - volumeID: The volume label, for example `cidata`.
    ///   - file: Where to write the image.
    /// - Throws: `ArchiveError` with libarchive's reason.
    public static func write(files: [(name: String, contents: Data)], volumeID: String, to file: URL)
        throws(ArchiveError)
    {
        guard let archive = archive_write_new() else {
            throw ArchiveError(message: "libarchive could not allocate a writer")
        }
        defer { archive_write_free(archive) }
        guard archive_write_set_format_iso9660(archive) == ARCHIVE_OK,
            archive_write_set_format_option(archive, "iso9660", "volume-id", volumeID) == ARCHIVE_OK,
            archive_write_set_format_option(archive, "iso9660", "rockridge", "1") == ARCHIVE_OK
        else {
            throw ArchiveError.last(archive, "format")
        }
        let fd = open(file.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ArchiveError(
                code: errno, message: "cannot create '\(file.path)': \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        guard archive_write_open_fd(archive, fd) == ARCHIVE_OK else {
            throw ArchiveError.last(archive, "open")
        }
        guard let entry = archive_entry_new() else {
            throw ArchiveError(message: "libarchive could not allocate an entry")
        }
        defer { archive_entry_free(entry) }
        for (name, contents) in files {
            archive_entry_clear(entry)
            archive_entry_set_pathname(entry, name)
            archive_entry_set_filetype(entry, airlock_ae_ifreg)
            archive_entry_set_perm(entry, 0o444)
            archive_entry_set_size(entry, la_int64_t(contents.count))
            archive_entry_set_mtime(entry, time(nil), 0)
            guard archive_write_header(archive, entry) == ARCHIVE_OK else {
                throw ArchiveError.last(archive, "header")
            }
            let written = contents.withUnsafeBytes { archive_write_data(archive, $0.baseAddress, $0.count) }
            guard written == contents.count else {
                throw ArchiveError.last(archive, "data")
            }
        }
        guard archive_write_close(archive) == ARCHIVE_OK else {
            throw ArchiveError.last(archive, "close")
        }
    }
}
