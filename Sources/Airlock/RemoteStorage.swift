import Foundation
import Libvirt

/// What Airlock keeps on a remote host, all in one libvirt folder pool that
/// Airlock makes there through libvirt itself: each image's files (kernel,
/// initrd, base disk), uploaded once and named by the image's content, and
/// each job's key file, seed and disk overlay, removed when the job ends.
///
/// Everything travels through libvirt's own connection (volume upload
/// streams); nothing but libvirt needs to be installed on the host.
struct RemoteStorage {
    /// The pool's folder on the host.
    static let folder = "/var/lib/airlock/pool"
    /// The pool's name on the host.
    static let poolName = "airlock-remote"

    let connection: Connection
    /// The local state folder, for the locks that keep two processes of
    /// this machine from uploading one file at once.
    let stateFolder: URL

    /// The pool, made (with its folder) when missing.
    ///
    /// - Throws: `AirlockError` `.hostUnavailable` with libvirt's reason.
    func open() throws(AirlockError) -> StoragePool {
        do {
            if let pool = try connection.storagePool(named: Self.poolName), pool.isActive {
                return pool
            }
        } catch {
            throw AirlockError(
                .hostUnavailable, "cannot look up storage pool '\(Self.poolName)' on '\(connection.uri)'", cause: error)
        }
        let xml = """
            <pool type='dir'><name>\(Self.poolName)</name><target><path>\(Self.folder)</path>\
            <permissions><mode>0711</mode></permissions></target></pool>
            """
        do {
            return try connection.createStoragePool(xml: xml, build: true)
        } catch {
            if let pool = try? connection.storagePool(named: Self.poolName), pool.isActive {
                return pool
            }
            throw AirlockError(
                .hostUnavailable,
                "cannot create storage pool '\(Self.poolName)' at '\(Self.folder)' on "
                    + "'\(connection.uri)'", cause: error)
        }
    }

    /// The volume name of one file of an image: the image's content hash
    /// names it, so a rebuilt image gets new names and an unchanged one is
    /// found again.
    static func imageVolumeName(image: Image, file: URL) -> String {
        let hash = image.contentHash.split(separator: ":").last.map { String($0.prefix(16)) } ?? "unhashed"
        return "image-\(hash)-\(file.lastPathComponent)"
    }

    /// What `ensure` did.
    struct Placed {
        /// The file's path on the host.
        var path: String
        /// Bytes sent; 0 when the host already held the file.
        var uploaded: Int64
    }

    /// Makes sure the host holds `file` as volume `name`, uploading it only
    /// when it is missing or an earlier upload did not finish. A finished
    /// upload is marked by a second, empty volume `name.done`.
    ///
    /// - Throws: `AirlockError` `.hostUnavailable` when libvirt or the upload fails.
    func ensure(_ file: URL, as name: String, in pool: StoragePool) throws(AirlockError) -> Placed {
        let lock = try UploadLock(stateFolder: stateFolder, host: connection.uri, volume: name)
        defer { lock.release() }
        do {
            try? pool.refresh()
            if let volume = try pool.volume(named: name), try pool.volume(named: name + ".done") != nil {
                return Placed(path: try volume.path(), uploaded: 0)
            }
            // A volume without its mark is an upload that died part way.
            try pool.volume(named: name)?.delete()
            let size = try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int64 ?? 0
            let volume = try pool.createVolume(xml: Self.volumeXML(name: name, size: size, mode: "0644"))
            let handle = try FileHandle(forReadingFrom: file)
            defer { try? handle.close() }
            try volume.upload(length: size) { buffer in
                let data = try handle.read(upToCount: buffer.count) ?? Data()
                data.copyBytes(to: buffer)
                return data.count
            }
            _ = try pool.createVolume(xml: Self.volumeXML(name: name + ".done", size: 0, mode: "0644"))
            return Placed(path: try volume.path(), uploaded: size)
        } catch let error as AirlockError {
            throw error
        } catch {
            throw AirlockError(
                .hostUnavailable, "cannot upload '\(file.lastPathComponent)' to host '\(connection.uri)'",
                cause: error as? LibvirtError)
        }
    }

    /// Writes a job's small file (its key file) as a volume only root can read.
    ///
    /// - Returns: The file's path on the host.
    /// - Throws: `AirlockError` `.hostUnavailable` when libvirt fails.
    func put(_ bytes: Data, as name: String, in pool: StoragePool) throws(AirlockError) -> String {
        do {
            let volume = try pool.createVolume(
                xml: Self.volumeXML(name: name, size: Int64(bytes.count), mode: "0600"))
            var offset = 0
            try volume.upload(length: Int64(bytes.count)) { buffer in
                let count = min(buffer.count, bytes.count - offset)
                bytes.copyBytes(
                    to: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), from: offset..<(offset + count))
                offset += count
                return count
            }
            return try volume.path()
        } catch {
            throw AirlockError(
                .hostUnavailable, "cannot write '\(name)' on host '\(connection.uri)'", cause: error as? LibvirtError)
        }
    }

    /// The name of each of a job's volumes starts with this.
    static func jobPrefix(_ jobID: String) -> String {
        "airlock-\(jobID)"
    }

    /// Deletes every volume of a job.
    ///
    /// - Returns: Whether all are gone.
    @discardableResult
    func removeJobVolumes(_ jobID: String) -> Bool {
        guard let pool = try? connection.storagePool(named: Self.poolName) else { return false }
        try? pool.refresh()
        var removed = true
        for name in (try? pool.volumeNames()) ?? [] where name.hasPrefix(Self.jobPrefix(jobID)) {
            removed = ((try? pool.volume(named: name)?.delete()) != nil) && removed
        }
        return removed
    }

    static func volumeXML(name: String, size: Int64, mode: String) -> String {
        """
        <volume><name>\(xmlEscaped(name))</name><capacity unit='bytes'>\(size)</capacity>\
        <target><format type='raw'/><permissions><mode>\(mode)</mode></permissions></target></volume>
        """
    }
}

/// A lock file per host and volume under the state folder, held while a
/// volume is checked and uploaded: a second job of this machine waits for
/// the first's upload and then finds the file there.
struct UploadLock {
    private let fd: Int32

    init(stateFolder: URL, host: String, volume: String) throws(AirlockError) {
        let folder = stateFolder.appendingPathComponent("locks")
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let key = Digest.sha256(Data((host + "\n" + volume).utf8)).dropFirst("sha256:".count).prefix(24)
        let path = folder.appendingPathComponent("upload-\(key)").path
        fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw AirlockError(.internalError, "cannot open the lock file '\(path)'", cause: POSIXFailure())
        }
        while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
    }

    func release() {
        flock(fd, LOCK_UN)
        Glibc.close(fd)
    }
}
