import CLibvirt
import Foundation

/// A libvirt storage pool: a folder (or other store) of volumes that libvirt
/// manages. Holds its connection open while it lives.
public final class StoragePool: @unchecked Sendable {
    // @unchecked: the handle never changes after init, and libvirt's storage
    // calls are thread-safe.
    let handle: OpaquePointer
    /// The connection this pool belongs to.
    public let connection: Connection

    init(_ handle: OpaquePointer, connection: Connection) {
        self.handle = handle
        self.connection = connection
    }

    deinit {
        virStoragePoolFree(handle)
    }

    /// The pool's name.
    public var name: String {
        virStoragePoolGetName(handle).map { String(cString: $0) } ?? ""
    }

    /// Whether the pool is started.
    public var isActive: Bool {
        virStoragePoolIsActive(handle) == 1
    }

    /// The folder of a directory pool, from its XML description.
    public func targetPath() throws(LibvirtError) -> String? {
        let raw = try check(virStoragePoolGetXMLDesc(handle, 0))
        defer { free(raw) }
        let xml = String(cString: raw)
        guard let target = xml.range(of: "<target>"),
            let start = xml.range(of: "<path>", range: target.upperBound..<xml.endIndex),
            let end = xml.range(of: "</path>", range: start.upperBound..<xml.endIndex)
        else { return nil }
        return String(xml[start.upperBound..<end.lowerBound])
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&apos;", with: "'").replacingOccurrences(of: "&quot;", with: "\"")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    /// Rescans the pool's target so that files placed there become volumes.
    public func refresh() throws(LibvirtError) {
        try check(virStoragePoolRefresh(handle, 0))
    }

    /// Stops the pool. A transient pool disappears; its files stay.
    public func destroy() throws(LibvirtError) {
        try check(virStoragePoolDestroy(handle))
    }

    /// Looks a volume up by name.
    ///
    /// - Returns: The volume, or nil when the pool has none of that name.
    public func volume(named name: String) throws(LibvirtError) -> StorageVolume? {
        guard let raw = virStorageVolLookupByName(handle, name) else {
            let error = LibvirtError.last("volume(named:)")
            if error.code == Int32(VIR_ERR_NO_STORAGE_VOL.rawValue) {
                return nil
            }
            throw error
        }
        return StorageVolume(raw, connection: connection)
    }

    /// Creates a volume from its XML description (for example a qcow2
    /// overlay with a `<backingStore>`).
    ///
    /// - Throws: `LibvirtError` with libvirt's reason, such as a name taken.
    public func createVolume(xml: String) throws(LibvirtError) -> StorageVolume {
        let raw = try check(virStorageVolCreateXML(handle, xml, 0))
        return StorageVolume(raw, connection: connection)
    }

    /// The names of the pool's volumes, as of its last refresh.
    public func volumeNames() throws(LibvirtError) -> [String] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let count = try check(virStoragePoolListAllVolumes(handle, &list, 0))
        defer { free(list) }
        var names: [String] = []
        for index in 0..<Int(count) {
            guard let raw = list?[index] else { continue }
            if let name = virStorageVolGetName(raw) {
                names.append(String(cString: name))
            }
            virStorageVolFree(raw)
        }
        return names.sorted()
    }
}

/// One volume of a storage pool, such as a disk image file.
public final class StorageVolume: @unchecked Sendable {
    // @unchecked: as for `StoragePool`.
    let handle: OpaquePointer
    public let connection: Connection

    init(_ handle: OpaquePointer, connection: Connection) {
        self.handle = handle
        self.connection = connection
    }

    deinit {
        virStorageVolFree(handle)
    }

    /// The volume's name within its pool.
    public var name: String {
        virStorageVolGetName(handle).map { String(cString: $0) } ?? ""
    }

    /// The volume's path on the host, as a guest's disk source names it.
    public func path() throws(LibvirtError) -> String {
        let raw = try check(virStorageVolGetPath(handle))
        defer { free(raw) }
        return String(cString: raw)
    }

    /// The size the guest sees and the bytes the host has given it.
    public func info() throws(LibvirtError) -> VolumeInfo {
        var info = virStorageVolInfo()
        try check(virStorageVolGetInfo(handle, &info))
        return VolumeInfo(capacity: Int64(info.capacity), allocation: Int64(info.allocation))
    }

    /// The volume's XML description (its format, capacity and backing store).
    public func xml() throws(LibvirtError) -> String {
        let raw = try check(virStorageVolGetXMLDesc(handle, 0))
        defer { free(raw) }
        return String(cString: raw)
    }

    /// Writes the volume's content from the start, streaming it from
    /// `source` through libvirt's connection (to a remote host too).
    ///
    /// - Parameters:
    ///   - length: The number of bytes to send.
    ///   - source: Fills the buffer it is given and returns how many bytes
    ///     it put there; 0 before `length` bytes is an error.
    /// - Throws: `LibvirtError` when libvirt or the stream fails; the
    ///   volume's content is then incomplete.
    public func upload(
        length: Int64, from source: (UnsafeMutableRawBufferPointer) throws -> Int
    ) throws {
        let stream = try check(virStreamNew(try connection.pointer(), 0))
        defer { virStreamFree(stream) }
        try check(virStorageVolUpload(handle, stream, 0, UInt64(length), 0))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var sent: Int64 = 0
        do {
            while sent < length {
                let room = Int(min(Int64(buffer.count), length - sent))
                let count = try source(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<room]))
                guard count > 0 else {
                    throw LibvirtError(
                        code: -1, domain: 0, message: "the source ended after \(sent) of \(length) bytes",
                        operation: "upload")
                }
                var offset = 0
                while offset < count {
                    let written = virStreamSend(
                        stream, buffer.baseAddress?.advanced(by: offset).assumingMemoryBound(to: CChar.self),
                        count - offset)
                    guard written > 0 else { throw LibvirtError.last("upload") }
                    offset += Int(written)
                }
                sent += Int64(count)
            }
            try check(virStreamFinish(stream))
        } catch {
            virStreamAbort(stream)
            throw error
        }
    }

    /// Deletes the volume and its file. A volume already gone counts as done.
    public func delete() throws(LibvirtError) {
        if virStorageVolDelete(handle, 0) < 0 {
            let error = LibvirtError.last("delete")
            if error.code != Int32(VIR_ERR_NO_STORAGE_VOL.rawValue) {
                throw error
            }
        }
    }
}

/// The sizes libvirt reports for a volume, in bytes.
public struct VolumeInfo: Sendable, Equatable {
    /// The size the guest sees.
    public var capacity: Int64
    /// The host bytes given to it so far.
    public var allocation: Int64
}

extension Connection {
    /// Looks a storage pool up by name.
    ///
    /// - Returns: The pool, or nil when none has that name.
    public func storagePool(named name: String) throws(LibvirtError) -> StoragePool? {
        guard let raw = virStoragePoolLookupByName(try pointer(), name) else {
            let error = LibvirtError.last("storagePool(named:)")
            if error.code == Int32(VIR_ERR_NO_STORAGE_POOL.rawValue) {
                return nil
            }
            throw error
        }
        return StoragePool(raw, connection: self)
    }

    /// Looks a volume up by its path on the host, in whichever pool holds it.
    ///
    /// - Returns: The volume, or nil when no active pool has that path.
    public func storageVolume(path: String) throws(LibvirtError) -> StorageVolume? {
        guard let raw = virStorageVolLookupByPath(try pointer(), path) else {
            let error = LibvirtError.last("storageVolume(path:)")
            if error.code == Int32(VIR_ERR_NO_STORAGE_VOL.rawValue) {
                return nil
            }
            throw error
        }
        return StorageVolume(raw, connection: self)
    }

    /// Every storage pool libvirt knows, active or not.
    public func allStoragePools() throws(LibvirtError) -> [StoragePool] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let count = try check(virConnectListAllStoragePools(try pointer(), &list, 0))
        defer { free(list) }
        var pools: [StoragePool] = []
        for index in 0..<Int(count) {
            if let raw = list?[index] {
                pools.append(StoragePool(raw, connection: self))
            }
        }
        return pools
    }

    /// Creates and starts a transient storage pool from its XML description.
    /// It lasts until destroyed or until libvirtd's host restarts.
    ///
    /// - Parameters:
    ///   - xml: The pool's description.
    ///   - build: Make the pool's folder on the host first, with the owner
    ///     and mode the XML gives (a remote host's folder cannot be made any
    ///     other way).
    /// - Returns: The started pool.
    /// - Throws: `LibvirtError` with libvirt's reason.
    public func createStoragePool(xml: String, build: Bool = false) throws(LibvirtError) -> StoragePool {
        let flags = build ? UInt32(VIR_STORAGE_POOL_CREATE_WITH_BUILD.rawValue) : 0
        let raw = try check(virStoragePoolCreateXML(try pointer(), xml, flags))
        return StoragePool(raw, connection: self)
    }
}
