import Archive
import Foundation

/// A workload folder frozen at submit time: a tar file under
/// `STATE_DIR/workloads`, so that a job that waits in the queue for hours
/// runs exactly what was submitted, whatever happens to the folder meanwhile.
///
/// Every job of one submission that names the same folder shares one
/// snapshot. A snapshot is removed once no unfinished job refers to it.
public struct WorkloadSnapshot: Sendable, Codable, Equatable {
    /// The tar file.
    public var file: String
    /// Entries in the archive; the guest must unpack exactly as many.
    public var entries: Int
    public var bytes: Int64

    /// The folder that holds the snapshots.
    static func folder(in stateFolder: URL) -> URL {
        stateFolder.appendingPathComponent("workloads")
    }

    /// Archives `workload` into a new snapshot file.
    ///
    /// - Throws: `AirlockError` `.invalidArgument` for entries that cannot
    ///   be copied, `.internalError` when the snapshot cannot be written.
    public static func make(of workload: URL, in stateFolder: URL) throws(AirlockError) -> WorkloadSnapshot {
        try JobSpec.checkWorkloadEntries(in: workload)
        let folder = folder(in: stateFolder)
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw AirlockError(.internalError, "cannot create '\(folder.path)'", cause: POSIXFailure())
        }
        _ = chmod(folder.path, 0o700)
        let name = UUID().uuidString.lowercased()
        let partial = folder.appendingPathComponent(".\(name).tar.part")
        let final = folder.appendingPathComponent("\(name).tar")
        let fd = open(partial.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw AirlockError(.internalError, "cannot create '\(partial.path)'", cause: POSIXFailure())
        }
        var bytes: Int64 = 0
        do {
            defer { close(fd) }
            let writer = try TarWriter { chunk in
                guard writeAll(fd, chunk) else { throw POSIXFailure() }
                bytes += Int64(chunk.count)
            }
            let entries = try writer.appendContents(of: workload)
            try writer.finish()
            guard fsync(fd) == 0 else { throw POSIXFailure() }
            guard rename(partial.path, final.path) == 0 else { throw POSIXFailure() }
            return WorkloadSnapshot(file: final.path, entries: entries, bytes: bytes)
        } catch {
            unlink(partial.path)
            throw AirlockError(
                .internalError, "cannot snapshot workload folder '\(workload.path)'",
                cause: error)
        }
    }

    /// Feeds the archive to `sink` in chunks.
    func stream(to sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            throw AirlockError(.notFound, "the workload snapshot '\(file)' is gone", cause: POSIXFailure())
        }
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(fd, buffer.baseAddress, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                throw AirlockError(.internalError, "cannot read the workload snapshot '\(file)'", cause: POSIXFailure())
            }
            if count == 0 { return }
            try sink(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
    }
}
