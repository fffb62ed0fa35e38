import Foundation

/// A built guest image: its manifest plus the folder holding its files.
public struct Image: Sendable, Codable, Equatable {
    /// How the guest learns its per-job keys.
    public enum KeyInjection: String, Sendable, Codable {
        /// A file handed over through QEMU's fw_cfg (Airlock's own images).
        case fwcfg
    }

    public var name: String
    /// "kernel": direct kernel boot with `kernel`, `initrd` and `cmdline`.
    public var boot: String
    public var kernel: String
    public var initrd: String
    public var disk: String?
    public var cmdline: String
    public var sshUser: String
    public var keyInjection: KeyInjection
    public var minimumMemoryMiB: Int
    public var contentHash: String
    public var recipeHash: String?
    public var built: String?

    /// The folder the manifest was read from. Not part of the manifest.
    public var folder: URL = URL(fileURLWithPath: "/")

    enum CodingKeys: String, CodingKey {
        case name, boot, kernel, initrd, disk, cmdline, sshUser, keyInjection, minimumMemoryMiB, contentHash
        case recipeHash, built
    }

    public var kernelURL: URL { folder.appendingPathComponent(kernel) }
    public var initrdURL: URL { folder.appendingPathComponent(initrd) }
}

/// The images under one folder: `<root>/<name>/manifest.json` each.
public struct ImageCatalog: Sendable {
    public let root: URL

    public init(root: URL) {
        self.root = root
    }

    /// Names of the images that have a manifest, sorted.
    public func names() -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return entries.filter {
            FileManager.default.fileExists(
                atPath: root.appendingPathComponent($0).appendingPathComponent("manifest.json").path)
        }.sorted()
    }

    /// Loads an image and checks that its files are there.
    ///
    /// - Throws: `AirlockError` `.notFound` for an unknown name (listing the
    ///   known ones), `.imageInvalid` for a broken manifest or missing files.
    public func image(named name: String) throws(AirlockError) -> Image {
        guard Self.isValidName(name) else {
            throw AirlockError(
                .invalidArgument, "'\(name)' is not a valid image name",
                hint: "image names use letters, digits, '.', '_' and '-' only")
        }
        let folder = root.appendingPathComponent(name)
        let manifestURL = folder.appendingPathComponent("manifest.json")
        guard let data = FileManager.default.contents(atPath: manifestURL.path) else {
            let known = names()
            let list = known.isEmpty ? "none are built" : "known images: \(known.joined(separator: ", "))"
            throw AirlockError(
                .notFound, "unknown image '\(name)' in '\(root.path)' (\(list))",
                hint: known.isEmpty
                    ? "build one with 'images/tiny/build.sh \(root.appendingPathComponent("tiny").path)'" : nil)
        }
        var image: Image
        do {
            image = try JSONDecoder().decode(Image.self, from: data)
        } catch {
            throw AirlockError(
                .imageInvalid, "the manifest of image '\(name)' cannot be read", hint: "rebuild the image",
                cause: ManifestError(description: "\(manifestURL.path): \(error)"))
        }
        image.folder = folder
        guard image.boot == "kernel" else {
            throw AirlockError(
                .unsupported, "image '\(name)' boots with '\(image.boot)', which this Airlock cannot run")
        }
        for file in [image.kernel, image.initrd] {
            guard !file.contains("/"), file != "..",
                FileManager.default.isReadableFile(atPath: folder.appendingPathComponent(file).path)
            else {
                throw AirlockError(
                    .imageInvalid, "image '\(name)' is missing its file '\(file)' in '\(folder.path)'",
                    hint: "rebuild the image")
            }
        }
        return image
    }

    /// Image names are single path components made of safe characters.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && name != "." && name != ".."
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
    }
}

struct ManifestError: Error, CustomStringConvertible, Sendable {
    let description: String
}
