import Foundation

/// A JSON value as a job file holds it, decoded by Foundation's JSONDecoder
/// but kept strict: `true` is never the number 1, `1.5` is never an
/// integer, and a number too large to represent is an error, not infinity.
enum JSONValue: Decodable, Equatable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            do {
                self = .object(try container.decode([String: JSONValue].self))
            } catch DecodingError.typeMismatch {
                // Every other kind failed to decode, so this is a number
                // that Swift cannot hold, such as 1e309.
                throw JSONValueError.numberOutOfRange(path: decoder.codingPath.map(\.stringValue))
            }
        }
    }

    /// Parses a whole document.
    ///
    /// - Throws: `JSONValueError` with the parser's own message.
    static func parse(_ data: Data) throws(JSONValueError) -> JSONValue {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch let error as JSONValueError {
            throw error
        } catch {
            // JSONDecoder does not say where the syntax breaks; JSONSerialization does.
            var detail = "not valid JSON"
            do {
                _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
            } catch {
                if let description = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String {
                    detail = description
                }
            }
            throw JSONValueError.syntax(detail)
        }
    }

    /// The kind of value, for messages: "a string", "a list", ...
    var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "true or false"
        case .integer, .number: return "a number"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "an object"
        }
    }
}

/// Why a document could not be read as JSON.
enum JSONValueError: Error, CustomStringConvertible, Sendable {
    case syntax(String)
    case numberOutOfRange(path: [String])

    var description: String {
        switch self {
        case .syntax(let detail):
            return detail
        case .numberOutOfRange(let path):
            let key = path.last.map { "'\($0)'" } ?? "a value"
            return "\(key) holds a number too large to represent"
        }
    }
}
