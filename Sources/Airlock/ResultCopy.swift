import Foundation

/// Copies a result folder that Airlock wrote: folders and regular files
/// only (that is all a result folder holds), modes kept, links never
/// followed, and runs of zeros left as holes, so that a sparse result that
/// was cheap to keep is cheap to copy.
enum ResultCopy {
    /// Copies `source` to `target`, which must not exist.
    ///
    /// - Throws: `AirlockError` `.internalError` naming the entry that failed.
    static func copyFolder(_ source: URL, to target: URL) throws(AirlockError) {
        guard mkdir(target.path, 0o700) == 0 else {
            throw AirlockError(.internalError, "cannot create '\(target.path)'", cause: POSIXFailure())
        }
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: source.path)
        } catch {
            throw AirlockError(.internalError, "cannot list '\(source.path)'", cause: POSIXFailure(code: EIO))
        }
        for name in entries.sorted() where !name.hasPrefix(".result.json") {
            let from = source.appendingPathComponent(name)
            let to = target.appendingPathComponent(name)
            var info = stat()
            guard lstat(from.path, &info) == 0 else {
                throw AirlockError(.internalError, "cannot read '\(from.path)'", cause: POSIXFailure())
            }
            switch info.st_mode & S_IFMT {
            case S_IFDIR: try copyFolder(from, to: to)
            case S_IFREG: try copyFile(from, to: to, mode: info.st_mode & 0o777)
            default: continue
            }
        }
        var info = stat()
        if stat(source.path, &info) == 0 {
            _ = chmod(target.path, info.st_mode & 0o777)
        }
    }

    private static func copyFile(_ source: URL, to target: URL, mode: mode_t) throws(AirlockError) {
        let input = open(source.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard input >= 0 else {
            throw AirlockError(.internalError, "cannot open '\(source.path)'", cause: POSIXFailure())
        }
        defer { close(input) }
        let output = open(target.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard output >= 0 else {
            throw AirlockError(.internalError, "cannot create '\(target.path)'", cause: POSIXFailure())
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
                throw AirlockError(.internalError, "cannot read '\(source.path)'", cause: POSIXFailure())
            }
            if count == 0 { break }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            if chunk.allSatisfy({ $0 == 0 }) {
                guard lseek(output, off_t(count), SEEK_CUR) >= 0 else {
                    throw AirlockError(.internalError, "cannot write '\(target.path)'", cause: POSIXFailure())
                }
            } else if !writeAll(output, chunk) {
                throw AirlockError(.internalError, "cannot write '\(target.path)'", cause: POSIXFailure())
            }
            length += off_t(count)
        }
        // A file that ends in a hole gets its length from the truncate.
        guard ftruncate(output, length) == 0 else {
            throw AirlockError(.internalError, "cannot write '\(target.path)'", cause: POSIXFailure())
        }
    }
}
