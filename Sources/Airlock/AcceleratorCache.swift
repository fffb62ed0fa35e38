import Foundation

/// Remembers, per libvirt URI, which accelerator really starts guests there,
/// so that only the first `--accel auto` job on a host pays for finding out.
struct AcceleratorCache {
    let folder: URL

    private struct Entry: Codable {
        var uri: String
        var accelerator: Accelerator
        var decided: Date
    }

    private static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    func lookup(uri: String) -> Accelerator? {
        guard let data = FileManager.default.contents(atPath: file(for: uri).path),
            let entry = try? Self.decoder.decode(Entry.self, from: data), entry.uri == uri
        else { return nil }
        return entry.accelerator
    }

    func remember(_ accelerator: Accelerator, uri: String) {
        let entry = Entry(uri: uri, accelerator: accelerator, decided: Date())
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        guard let data = try? encoder.encode(entry) else { return }
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let target = file(for: uri)
        let temporary = target.appendingPathExtension("\(getpid()).tmp")
        if FileManager.default.createFile(atPath: temporary.path, contents: data) {
            _ = rename(temporary.path, target.path)
        }
    }

    private func file(for uri: String) -> URL {
        let safe = uri.map { $0.isLetter || $0.isNumber ? $0 : "_" }
        return folder.appendingPathComponent(String(safe) + ".json")
    }
}
