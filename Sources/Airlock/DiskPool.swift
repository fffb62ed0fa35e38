import Foundation
import Libvirt

/// The libvirt storage pool of an image catalog: a folder pool at
/// `<catalog>/.pool` holding the read-only base disks and every job's qcow2
/// overlay. The pool is transient and made on first use; its name comes from
/// the folder's path, so two catalogs never share one.
struct DiskPool {
    let catalog: ImageCatalog

    var folder: URL { catalog.poolFolder }

    /// `airlock-` and twelve hex digits of the folder path's SHA-256.
    var name: String {
        let digest = Digest.sha256(Data(folder.resolvingSymlinksInPath().path.utf8))
        return "airlock-" + digest.dropFirst("sha256:".count).prefix(12)
    }

    /// The overlay volume name of a job.
    static func overlayName(jobID: String) -> String {
        "airlock-\(jobID).qcow2"
    }

    /// The pool on `connection`, made (with its folder) when missing. Safe
    /// when several jobs make it at once: the loser of the race finds the
    /// winner's pool.
    ///
    /// - Throws: `AirlockError` `.hostUnavailable` with libvirt's reason.
    func open(_ connection: Connection) throws(AirlockError) -> StoragePool {
        do {
            if let pool = try connection.storagePool(named: name), pool.isActive {
                return pool
            }
        } catch {
            throw AirlockError(.hostUnavailable, "cannot look up storage pool '\(name)'", cause: error)
        }
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw AirlockError(.internalError, "cannot create the pool folder '\(folder.path)'", cause: error)
        }
        // QEMU, as its own user, opens base disks by path through here.
        _ = chmod(folder.path, 0o711)
        let xml = """
            <pool type='dir'><name>\(name)</name>\
            <target><path>\(xmlEscaped(folder.resolvingSymlinksInPath().path))</path></target></pool>
            """
        do {
            return try connection.createStoragePool(xml: xml)
        } catch {
            if let pool = try? connection.storagePool(named: name), pool.isActive {
                return pool
            }
            throw AirlockError(
                .hostUnavailable, "cannot create storage pool '\(name)' for '\(folder.path)'", cause: error)
        }
    }

    /// Makes a job's copy-on-write overlay on a base disk.
    ///
    /// - Parameters:
    ///   - pool: The pool, as `open` returned it.
    ///   - jobID: The job the overlay is for; it names the volume.
    ///   - base: The read-only base disk.
    ///   - capacity: The size the guest sees, at least the base's.
    /// - Returns: The overlay's path.
    /// - Throws: `AirlockError` `.hostUnavailable` with libvirt's reason.
    func createOverlay(
        in pool: StoragePool, jobID: String, base: URL, capacity: Int64
    ) throws(AirlockError) -> String {
        try Self.createOverlay(in: pool, jobID: jobID, basePath: base.path, capacity: capacity)
    }

    /// Makes a job's overlay on a base disk given by its path on the pool's
    /// host (which may be another machine).
    static func createOverlay(
        in pool: StoragePool, jobID: String, basePath: String, capacity: Int64
    ) throws(AirlockError) -> String {
        let name = overlayName(jobID: jobID)
        let xml = """
            <volume><name>\(name)</name><capacity unit='bytes'>\(capacity)</capacity>\
            <target><format type='qcow2'/><permissions><mode>0600</mode></permissions></target>\
            <backingStore><path>\(xmlEscaped(basePath))</path><format type='qcow2'/></backingStore></volume>
            """
        do {
            return try pool.createVolume(xml: xml).path()
        } catch {
            throw AirlockError(
                .hostUnavailable, "cannot create the disk overlay '\(name)' on '\(basePath)'", cause: error)
        }
    }

    /// Checks that QEMU, running as its own user, can open a base disk by
    /// its path: libvirt hands it the overlay but leaves the shared base
    /// alone, so QEMU's user must be able to pass every folder above it and
    /// read the file.
    ///
    /// - Throws: `AirlockError` `.hostUnavailable` naming the path that stops it.
    static func checkReachable(_ base: URL) throws(AirlockError) {
        var info = stat()
        guard stat(base.path, &info) == 0, QEMUUser.canRead(info) else {
            throw AirlockError(
                .hostUnavailable, "QEMU's user cannot read the base disk '\(base.path)'",
                hint: "rebuild or re-import the image, which sets its owner and mode")
        }
        var folder = base.deletingLastPathComponent()
        while folder.path != "/" && !folder.path.isEmpty {
            guard stat(folder.path, &info) == 0, QEMUUser.canSearch(info) else {
                let mode = String(info.st_mode & 0o7777, radix: 8)
                throw AirlockError(
                    .hostUnavailable,
                    "QEMU cannot reach the base disk '\(base.path)': the folder '\(folder.path)' (mode \(mode)) "
                        + "does not let other users through",
                    hint: "chmod o+x '\(folder.path)', or keep the state folder where QEMU's user can reach it")
            }
            folder = folder.deletingLastPathComponent()
        }
    }

    /// Deletes an overlay by path, through libvirt when its pool is active,
    /// else by unlinking the file. Only files named like overlays in a pool
    /// folder are touched. Returns whether it is gone.
    @discardableResult
    static func removeOverlay(path: String, connection: Connection?) -> Bool {
        let file = URL(fileURLWithPath: path)
        guard file.deletingLastPathComponent().lastPathComponent == ".pool",
            file.lastPathComponent.hasPrefix("airlock-"), file.pathExtension == "qcow2"
        else { return false }
        if let connection, let volume = try? connection.storageVolume(path: path), (try? volume.delete()) != nil {
            return true
        }
        return unlink(path) == 0 || errno == ENOENT
    }

    /// The jobs whose overlays in the pool use each base disk: the job ids
    /// by the base's path as libvirt writes it in XML (`xmlEscaped`).
    func overlayUsers(in pool: StoragePool) -> [String: [String]] {
        try? pool.refresh()
        var users: [String: [String]] = [:]
        for name in (try? pool.volumeNames()) ?? [] where name.hasPrefix("airlock-") && name.hasSuffix(".qcow2") {
            guard let xml = try? pool.volume(named: name)?.xml(),
                let store = xml.range(of: "<backingStore>"),
                let start = xml.range(of: "<path>", range: store.upperBound..<xml.endIndex),
                let end = xml.range(of: "</path>", range: start.upperBound..<xml.endIndex)
            else { continue }
            let job = String(name.dropFirst("airlock-".count).dropLast(".qcow2".count))
            users[String(xml[start.upperBound..<end.lowerBound]), default: []].append(job)
        }
        return users
    }

    /// The overlays in the pool whose backing file is `base`, by job id.
    func jobs(using base: URL, in pool: StoragePool) -> [String] {
        overlayUsers(in: pool)[xmlEscaped(base.path)] ?? []
    }
}

/// Escapes text for an XML element or a quoted attribute.
func xmlEscaped(_ text: String) -> String {
    var out = ""
    for character in text {
        switch character {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "'": out += "&apos;"
        case "\"": out += "&quot;"
        default: out.append(character)
        }
    }
    return out
}
