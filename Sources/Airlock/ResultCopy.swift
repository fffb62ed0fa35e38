import Foundation

/// Copies a result folder that Airlock wrote: folders and regular files
/// only (that is all a result folder holds), modes kept, links never
/// followed, and runs of zeros left as holes, so that a sparse result that
/// was cheap to keep is cheap to copy.
///
/// Every step is relative to an open folder (`openat`, `mkdirat`), as the
/// collector wrote it: a guest's tree may be deeper than a path can say.
enum ResultCopy {
    /// Copies `source` to `target`, which must not exist. The top level's
    /// `.result.json` temporaries, left by a write in progress, are not copied.
    ///
    /// - Throws: `AirlockError` `.internalError` naming the entry that failed.
    static func copyFolder(_ source: URL, to target: URL) throws(AirlockError) {
        let from = open(source.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard from >= 0 else {
            throw AirlockError(.internalError, "cannot open '\(source.path)'", cause: POSIXFailure())
        }
        defer { close(from) }
        guard mkdir(target.path, 0o700) == 0 else {
            throw AirlockError(.internalError, "cannot create '\(target.path)'", cause: POSIXFailure())
        }
        let to = open(target.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard to >= 0 else {
            throw AirlockError(.internalError, "cannot open '\(target.path)'", cause: POSIXFailure())
        }
        defer { close(to) }
        try copyContents(from, to, path: source.path, skipping: { $0.hasPrefix(".result.json") })
        var info = stat()
        if fstat(from, &info) == 0 {
            _ = fchmod(to, info.st_mode & 0o777)
        }
    }

    /// Copies the entries of folder `from` into folder `to`; `path` names `from` in messages.
    private static func copyContents(
        _ from: Int32, _ to: Int32, path: String, skipping skip: (String) -> Bool = { _ in false }
    ) throws(AirlockError) {
        for name in try names(in: from, path: path) where !skip(name) {
            let entryPath = path + "/" + name
            var info = stat()
            guard fstatat(from, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw AirlockError(.internalError, "cannot read '\(entryPath)'", cause: POSIXFailure())
            }
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                let source = openat(from, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard source >= 0 else {
                    throw AirlockError(.internalError, "cannot open '\(entryPath)'", cause: POSIXFailure())
                }
                defer { close(source) }
                guard mkdirat(to, name, 0o700) == 0 else {
                    throw AirlockError(.internalError, "cannot create a copy of '\(entryPath)'", cause: POSIXFailure())
                }
                let target = openat(to, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard target >= 0 else {
                    throw AirlockError(.internalError, "cannot open the copy of '\(entryPath)'", cause: POSIXFailure())
                }
                defer { close(target) }
                try copyContents(source, target, path: entryPath)
                _ = fchmod(target, info.st_mode & 0o777)
            case S_IFREG:
                try copyFile(name, from: from, to: to, mode: info.st_mode & 0o777, path: entryPath)
            default:
                continue
            }
        }
    }

    /// The entry names of an open folder, sorted.
    static func names(in folder: Int32, path: String) throws(AirlockError) -> [String] {
        // fdopendir takes the descriptor over: give it a copy.
        let copy = dup(folder)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            throw AirlockError(.internalError, "cannot list '\(path)'", cause: POSIXFailure())
        }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." {
                names.append(name)
            }
        }
        return names.sorted()
    }

    private static func copyFile(
        _ name: String, from: Int32, to: Int32, mode: mode_t, path: String
    ) throws(AirlockError) {
        let input = openat(from, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard input >= 0 else {
            throw AirlockError(.internalError, "cannot open '\(path)'", cause: POSIXFailure())
        }
        defer { close(input) }
        let output = openat(to, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard output >= 0 else {
            throw AirlockError(.internalError, "cannot create a copy of '\(path)'", cause: POSIXFailure())
        }
        defer { close(output) }
        let size = 64 * 1024
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        var length: off_t = 0
        while true {
            let count = read(input, buffer.baseAddress, size)
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                throw AirlockError(.internalError, "cannot read '\(path)'", cause: POSIXFailure())
            }
            if count == 0 { break }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            if chunk.allSatisfy({ $0 == 0 }) {
                guard lseek(output, off_t(count), SEEK_CUR) >= 0 else {
                    throw AirlockError(.internalError, "cannot write a copy of '\(path)'", cause: POSIXFailure())
                }
            } else if !writeAll(output, chunk) {
                throw AirlockError(.internalError, "cannot write a copy of '\(path)'", cause: POSIXFailure())
            }
            length += off_t(count)
        }
        // A file that ends in a hole gets its length from the truncate.
        guard ftruncate(output, length) == 0 else {
            throw AirlockError(.internalError, "cannot write a copy of '\(path)'", cause: POSIXFailure())
        }
    }
}

/// Removing a folder tree that a guest shaped: relative to open folders,
/// so that a tree deeper than a path can name still goes, and links are
/// removed, never followed.
public enum FileTree {
    /// Removes `folder` and everything below it; a missing folder is fine.
    ///
    /// - Throws: `AirlockError` `.internalError` naming what could not be removed.
    public static func remove(_ folder: URL) throws(AirlockError) {
        let path = folder.standardizedFileURL.path
        let parent = open(folder.deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard parent >= 0 else {
            if errno == ENOENT { return }
            throw AirlockError(.internalError, "cannot open the folder holding '\(path)'", cause: POSIXFailure())
        }
        defer { close(parent) }
        try removeEntry(folder.lastPathComponent, in: parent, path: path)
    }

    /// Removes `folder`, logging nothing and throwing nothing: for clean-up
    /// paths that go on either way. Returns whether it is gone.
    @discardableResult
    public static func removeIfPossible(_ folder: URL) -> Bool {
        (try? remove(folder)) != nil
    }

    private static func removeEntry(_ name: String, in parent: Int32, path: String) throws(AirlockError) {
        var info = stat()
        guard fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
            if errno == ENOENT { return }
            throw AirlockError(.internalError, "cannot read '\(path)'", cause: POSIXFailure())
        }
        if info.st_mode & S_IFMT == S_IFDIR {
            let folder = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard folder >= 0 else {
                throw AirlockError(.internalError, "cannot open '\(path)'", cause: POSIXFailure())
            }
            defer { close(folder) }
            for entry in try ResultCopy.names(in: folder, path: path) {
                try removeEntry(entry, in: folder, path: path + "/" + entry)
            }
            guard unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT else {
                throw AirlockError(.internalError, "cannot remove '\(path)'", cause: POSIXFailure())
            }
        } else {
            guard unlinkat(parent, name, 0) == 0 || errno == ENOENT else {
                throw AirlockError(.internalError, "cannot remove '\(path)'", cause: POSIXFailure())
            }
        }
    }
}
