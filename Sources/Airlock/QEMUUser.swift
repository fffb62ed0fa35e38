import Foundation

/// The account libvirt runs QEMU as (Debian: `libvirt-qemu`, group `kvm`).
/// Base disks belong to root and this group, readable by the group only:
/// QEMU reads them, other local users cannot, and no QEMU can change them.
enum QEMUUser {
    struct Account {
        var uid: uid_t
        var gid: gid_t
    }

    /// The account, when this host has one of the usual names.
    static let account: Account? = {
        for name in ["libvirt-qemu", "qemu"] {
            if let entry = getpwnam(name) {
                return Account(uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
            }
        }
        return nil
    }()

    /// Makes a base disk readable by QEMU's group only (readable by all
    /// when this host has no known QEMU account).
    static func protectBase(_ file: URL) {
        if let account {
            _ = chown(file.path, 0, account.gid)
            _ = chmod(file.path, 0o440)
        } else {
            _ = chmod(file.path, 0o444)
        }
    }

    /// Whether QEMU's account may read a file with this owner and mode.
    static func canRead(_ info: stat) -> Bool {
        if info.st_mode & S_IROTH != 0 { return true }
        guard let account else { return false }
        return (info.st_uid == account.uid && info.st_mode & S_IRUSR != 0)
            || (info.st_gid == account.gid && info.st_mode & S_IRGRP != 0)
    }

    /// Whether QEMU's account may pass through a folder with this owner and mode.
    static func canSearch(_ info: stat) -> Bool {
        if info.st_mode & S_IXOTH != 0 { return true }
        guard let account else { return false }
        return (info.st_uid == account.uid && info.st_mode & S_IXUSR != 0)
            || (info.st_gid == account.gid && info.st_mode & S_IXGRP != 0)
    }
}
