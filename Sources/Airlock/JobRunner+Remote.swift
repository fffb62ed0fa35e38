import Foundation
import Libvirt

// MARK: - Guests on remote hosts

extension JobRunner {
    /// The guest's files on a remote host: the image's files (uploaded the
    /// first time the host needs them), the job's overlay, and its key file
    /// or seed, all in Airlock's pool there.
    func prepareRemoteMedia(image: Image, connection: Connection, jobFolder: URL, keys: GuestKeys) throws -> Media {
        let storage = RemoteStorage(connection: connection, stateFolder: spec.stateFolder)
        let pool = try storage.open()
        // Named in the job folder first, so that `airlock gc` finds the
        // job's volumes on the host should this process die.
        try Data((connection.uri + "\n").utf8).write(to: jobFolder.appendingPathComponent(JobOwner.remoteFile))
        shared.withLock { $0.remoteVolumes = true }
        // Files of an earlier attempt of this job that lost the host while it ran there.
        storage.removeJobVolumes(jobID)

        let uploadStart = ContinuousClock.now
        var media = Media()
        func place(_ file: URL) throws(AirlockError) -> String {
            let placed = try storage.ensure(
                file, as: RemoteStorage.imageVolumeName(image: image, file: file), in: pool)
            media.uploaded += placed.uploaded
            return placed.path
        }
        media.kernel = try image.kernelURL.map { (file) throws(AirlockError) in try place(file) }
        media.initrd = try image.initrdURL.map { (file) throws(AirlockError) in try place(file) }
        if let base = image.diskURL?.resolvingSymlinksInPath() {
            let basePath = try place(base)
            let size = try image.diskBytes ?? QEMUImage.info(base).virtualSize
            let overlay = try DiskPool.createOverlay(
                in: pool, jobID: jobID, basePath: basePath, capacity: max(size, spec.diskBytes ?? 0))
            media.disks.append(DomainSpec.Disk(path: overlay, format: "qcow2", backingPath: basePath))
        }
        if media.uploaded > 0 {
            logger.info(
                "image sent to the host",
                metadata: [
                    "host.uri": connection.uri, "image": image.name, "bytes": "\(media.uploaded)",
                    "seconds": "\(seconds(since: uploadStart))",
                ])
        }

        let prefix = RemoteStorage.jobPrefix(jobID)
        switch image.keyInjection {
        case .fwcfg:
            let file = jobFolder.appendingPathComponent("keys")
            try keys.write(to: file)
            media.keysFile = try storage.put(try Data(contentsOf: file), as: prefix + "-keys", in: pool)
        case .cloudInit:
            let seed = jobFolder.appendingPathComponent("seed.iso")
            try CloudInitSeed(jobID: jobID, keys: keys, lifetimeSeconds: lifetimeSeconds).write(to: seed)
            let path = try storage.put(try Data(contentsOf: seed), as: prefix + "-seed.iso", in: pool)
            media.disks.append(DomainSpec.Disk(path: path, format: "raw", readOnly: true))
        }
        return media
    }

    /// Removes the job's volumes from its remote host, through the guest's
    /// connection while it lives, else a fresh one.
    func removeRemoteVolumes(connection: Connection?) {
        let connection = connection.flatMap { $0.isAlive ? $0 : nil } ?? (try? Connection.airlock(uri: spec.connectURI))
        guard let connection else {
            logger.warning(
                "the job's files on its host could not be removed; 'airlock gc' removes them",
                metadata: ["host.uri": spec.connectURI])
            return
        }
        if RemoteStorage(connection: connection, stateFolder: spec.stateFolder).removeJobVolumes(jobID) {
            shared.withLock { $0.remoteVolumes = false }
        }
    }
}
