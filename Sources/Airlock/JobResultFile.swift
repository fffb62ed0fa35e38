import Foundation

/// `result.json` in a result folder: written whole or not at all (through a
/// temporary file and a rename), read back by `collect` and `status`.
public enum JobResultFile {
    public static let name = "result.json"

    /// The JSON text of a result, pretty-printed with sorted keys.
    public static func encode(_ result: JobResult) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return ((try? encoder.encode(result)) ?? Data("{}".utf8)) + Data("\n".utf8)
    }

    /// Writes `result.json` into `folder`, creating the folder if needed.
    static func write(_ result: JobResult, to folder: URL) {
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let target = folder.appendingPathComponent(name)
        let temporary = folder.appendingPathComponent(".\(name).tmp")
        if FileManager.default.createFile(atPath: temporary.path, contents: encode(result)) {
            _ = rename(temporary.path, target.path)
        }
    }

    /// Reads the `result.json` of `folder`, or nil when there is none or it cannot be read.
    public static func read(from folder: URL) -> JobResult? {
        guard let data = FileManager.default.contents(atPath: folder.appendingPathComponent(name).path) else {
            return nil
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try? decoder.decode(JobResult.self, from: data)
    }
}
