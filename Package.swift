// swift-tools-version: 6.0
// Airlock runs untrusted agent workloads in throwaway libvirt guests.

import PackageDescription

let package = Package(
    name: "airlock",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "airlock", targets: ["airlock"])
    ],
    targets: [
        // C libraries from Debian, found through pkg-config.
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"])]),
        .systemLibrary(name: "CLibssh2", pkgConfig: "libssh2", providers: [.apt(["libssh2-1-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),

        // Swift wrappers: each owns its C handles and turns C errors into typed Swift errors.
        .target(name: "Libvirt", dependencies: ["CLibvirt"]),
        .target(name: "SSH", dependencies: ["CLibssh2", "CCrypto"]),
        .target(name: "Archive", dependencies: ["CArchive"]),
        .target(name: "SQLite", dependencies: ["CSQLite"]),

        .target(name: "AirlockLog"),
        .target(name: "Airlock", dependencies: ["Libvirt", "SSH", "Archive", "SQLite", "AirlockLog", "CCrypto"]),
        .target(name: "AirlockCLI", dependencies: ["Airlock", "AirlockLog"]),
        .executableTarget(name: "airlock", dependencies: ["AirlockCLI"]),

        // Helpers shared by the test targets: a real sshd on 127.0.0.1.
        .target(name: "AirlockTestSupport", dependencies: ["SSH"]),

        .testTarget(name: "LibvirtTests", dependencies: ["Libvirt"]),
        .testTarget(name: "SSHTests", dependencies: ["SSH", "AirlockTestSupport"]),
        .testTarget(name: "ArchiveTests", dependencies: ["Archive"]),
        .testTarget(name: "SQLiteTests", dependencies: ["SQLite"]),
        .testTarget(name: "AirlockTests", dependencies: ["Airlock", "AirlockLog", "AirlockTestSupport"]),
        .testTarget(name: "AirlockCLITests", dependencies: ["AirlockCLI"]),
        .testTarget(name: "IntegrationTests", dependencies: ["Airlock", "Libvirt", "SSH", "AirlockTestSupport"]),
    ]
)
