// Layered configuration: code defaults (TrainingConfig()), then a YAML file, then dotted
// `key=value` overrides from the command line, each layer checked against the defaults' keys and
// value kinds. Every config has exactly two levels, `section.key`. The resolved config is rendered
// back as YAML in the official key order, with floats written so that YAML 1.1 readers (PyYAML,
// OmegaConf) read them as floats too ("1.0e-05", never "1e-05").

import Foundation
import Yams

/// What went wrong while building a configuration; each case names the source and dotted key.
public enum ConfigError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(String)
    case unreadable(String, reason: String)
    case syntax(source: String, message: String)
    case notAMapping(source: String, path: String)
    case unknownKey(path: String, suggestion: String?, source: String)
    case typeMismatch(path: String, expected: String, found: String, source: String)
    case badOverride(String)
    case invalid([String])

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "config file \(path) does not exist; pass an existing YAML file to --config"
        case .unreadable(let path, let reason):
            return "cannot read config file \(path): \(reason)"
        case .syntax(let source, let message):
            return "\(source) is not valid YAML: \(message)"
        case .notAMapping(let source, let path):
            let what = path.isEmpty ? "the top level" : "'\(path)'"
            return "\(source): \(what) must be a mapping of keys to values"
        case .unknownKey(let path, let suggestion, let source):
            var text = "\(source): unknown config key '\(path)'"
            if let suggestion { text += "; did you mean '\(suggestion)'?" }
            return text + " (`dinov2-fsdp config` prints every key)"
        case .typeMismatch(let path, let expected, let found, let source):
            return "\(source): '\(path)' expects \(expected), got \(found)"
        case .badOverride(let text):
            return "override '\(text)' is not of the form section.key=value (for example optim.base_lr=0.002)"
        case .invalid(let problems):
            return "invalid configuration:\n" + problems.map { "  - " + $0 }.joined(separator: "\n")
        }
    }
}

/// Builds, checks and renders `TrainingConfig`s.
public enum ConfigLoader {
    /// Defaults, then `file` (if any), then each `section.key=value` of `overrides`, validated.
    public static func load(file: String?, overrides: [String] = []) throws -> TrainingConfig {
        var values = try defaultValues()
        if let file {
            guard FileManager.default.fileExists(atPath: file) else { throw ConfigError.fileNotFound(file) }
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw ConfigError.unreadable(file, reason: error.localizedDescription)
            }
            try apply(yaml: text, source: file, to: &values)
        }
        for override in overrides {
            try apply(override: override, to: &values)
        }
        return try decodeValidated(values)
    }

    /// Parses a YAML document layered on the defaults (for tests and embedded configs).
    public static func load(yaml text: String, source: String = "config") throws -> TrainingConfig {
        var values = try defaultValues()
        try apply(yaml: text, source: source, to: &values)
        return try decodeValidated(values)
    }

    /// Renders `config` as YAML, sections and keys in the official order.
    public static func yaml(_ config: TrainingConfig) -> String {
        // Encoding our own plain struct cannot fail; an empty document would show up in every test.
        guard let values = try? flatten(config) else { return "" }
        var lines = ["# dinov2-fsdp configuration (defaults < config file < command-line overrides)"]
        var section = ""
        var open: [Substring] = []  // the nested mappings of dotted keys (compute_precision) written so far
        for entry in values.entries {
            if entry.section != section {
                section = entry.section
                open = []
                lines.append("\(section):")
            }
            let parts = entry.key.split(separator: ".")
            let shared = zip(open, parts.dropLast()).prefix { $0 == $1 }.count
            open = Array(open.prefix(shared))
            for level in shared..<(parts.count - 1) {
                lines.append(String(repeating: "  ", count: level + 1) + "\(parts[level]):")
                open.append(parts[level])
            }
            lines.append(String(repeating: "  ", count: parts.count) + "\(parts.last ?? ""): \(entry.value.yaml)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes the YAML of `config` to `path` through a temporary file and a rename, so that a
    /// crash never leaves a half-written config behind.
    public static func write(_ config: TrainingConfig, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        try yaml(config).write(toFile: temporary, atomically: false, encoding: .utf8)
        if rename(temporary, path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw ConfigError.unreadable(path, reason: "cannot write: \(reason)")
        }
    }

    /// Every dotted key the configuration accepts, in order.
    public static var allKeys: [String] {
        (try? defaultValues().entries.map { $0.path }) ?? []
    }

    // MARK: - Layers

    static func apply(yaml text: String, source: String, to values: inout FlatConfig) throws {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw ConfigError.syntax(source: source, message: oneLine(error))
        }
        guard let root else { return }  // an empty file changes nothing
        if case .scalar(let scalar) = root, scalar.string.isEmpty || root.tag.description.hasSuffix(":null") {
            return
        }
        guard let mapping = root.mapping else { throw ConfigError.notAMapping(source: source, path: "") }
        for (keyNode, child) in mapping {
            let section = keyNode.string ?? "\(keyNode)"
            try apply(section: section, node: child, source: source, to: &values)
        }
    }

    static func apply(override text: String, to values: inout FlatConfig) throws {
        guard let equals = text.firstIndex(of: "=") else { throw ConfigError.badOverride(text) }
        let path = String(text[..<equals]).trimmingCharacters(in: .whitespaces)
        let valueText = String(text[text.index(after: equals)...])
        let parts = path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 1, !parts.contains(where: { $0.isEmpty }) else { throw ConfigError.badOverride(text) }
        let source = "command-line override '\(text)'"
        let node: Node
        do {
            node = try Yams.compose(yaml: valueText) ?? Node("", Tag(.null))
        } catch {
            throw ConfigError.syntax(source: source, message: oneLine(error))
        }
        if parts.count >= 2, case .string = values.value(at: path) ?? .int(0), node.scalar == nil {
            // `key=a: b` parses as a mapping; for a string key the text itself is meant.
            try values.set(path: path, node: Node(valueText), source: source)
            return
        }
        if parts.count == 1 {
            try apply(section: parts[0], node: node, source: source, to: &values)
        } else {
            guard values.isSection(parts[0]) else {
                throw ConfigError.unknownKey(path: path, suggestion: values.suggestion(for: path), source: source)
            }
            try values.set(path: path, node: node, source: source)
        }
    }

    private static func apply(section: String, node: Node, source: String, to values: inout FlatConfig) throws {
        guard values.isSection(section) else {
            throw ConfigError.unknownKey(path: section, suggestion: values.suggestion(for: section), source: source)
        }
        if case .scalar = node, node.tag.description.hasSuffix(":null") { return }  // "section:" with nothing under it
        if section == "compute_precision", let dtype = node.string {
            // Our shorthand: `compute_precision: bf16` sets every module's param_dtype.
            for entry in values.entries where entry.section == section && entry.key.hasSuffix(".param_dtype") {
                try values.set(path: entry.path, node: Node(dtype), source: source)
            }
            return
        }
        guard node.mapping != nil else { throw ConfigError.notAMapping(source: source, path: section) }
        try apply(mapping: node, prefix: section, source: source, to: &values)
    }

    /// Sets every leaf of `node` under `prefix`. A nested mapping whose dotted path is not a key itself
    /// is descended (the official compute_precision block nests four levels; its keys are dotted here).
    private static func apply(mapping node: Node, prefix: String, source: String, to values: inout FlatConfig) throws {
        guard let mapping = node.mapping else { return }
        for (keyNode, child) in mapping {
            let path = prefix + "." + (keyNode.string ?? "\(keyNode)")
            if child.mapping != nil, values.value(at: path) == nil,
                values.entries.contains(where: { $0.path.hasPrefix(path + ".") })
            {
                try apply(mapping: child, prefix: path, source: source, to: &values)
            } else {
                try values.set(path: path, node: child, source: source)
            }
        }
    }

    // MARK: - Typed <-> flat

    private static func defaultValues() throws -> FlatConfig {
        guard let schema else { throw ConfigError.notAMapping(source: "defaults", path: "") }
        return flatten(TrainingConfig(), schema: schema)
    }

    /// Section and key names, their order and kinds, read once from the encoded defaults.
    /// (Only the structure is taken from the YAML encoder: it prints 15 significant digits.)
    private static let schema: FlatConfig? = {
        guard let encoded = try? YAMLEncoder().encode(TrainingConfig()),
            let root = try? Yams.compose(yaml: encoded), let sections = root.mapping
        else { return nil }
        var flat = FlatConfig()
        for (sectionNode, sectionBody) in sections {
            guard let section = sectionNode.string, let keys = sectionBody.mapping else { continue }
            for (keyNode, valueNode) in keys {
                guard let key = keyNode.string, let value = ConfigValue(canonical: valueNode) else { continue }
                flat.entries.append(.init(section: section, key: key, value: value))
            }
        }
        return flat
    }()

    static func flatten(_ config: TrainingConfig) throws -> FlatConfig {
        guard let schema else { throw ConfigError.notAMapping(source: "defaults", path: "") }
        return flatten(config, schema: schema)
    }

    /// The exact values of `config`, read by reflection in declaration order, which is the order
    /// the synthesized Encodable conformance (and so the schema) uses.
    private static func flatten(_ config: TrainingConfig, schema: FlatConfig) -> FlatConfig {
        var flat = schema
        var index = 0
        for section in Mirror(reflecting: config).children {
            for field in Mirror(reflecting: section.value).children {
                precondition(index < flat.entries.count, "config schema and struct disagree")
                flat.entries[index].value = ConfigValue(exactly: field.value, like: flat.entries[index].value)
                index += 1
            }
        }
        precondition(index == flat.entries.count, "config schema and struct disagree")
        return flat
    }

    /// Decodes `values` and lists every problem at once: names outside a `ConfigChoice`'s set (decoded
    /// as the default meanwhile) and values out of range.
    static func decodeValidated(_ values: FlatConfig) throws -> TrainingConfig {
        let defaults = try defaultValues()
        var decodable = values
        var problems: [String] = []
        for (path, names) in TrainingConfig.choiceKeys {
            guard case .string(let name) = values.value(at: path), !names.contains(name) else { continue }
            problems.append(choiceProblem(path: path, value: name, names: names))
            if let index = decodable.entries.firstIndex(where: { $0.path == path }),
                let fallback = defaults.value(at: path)
            {
                decodable.entries[index].value = fallback
            }
        }
        let config = try decode(decodable)
        problems += config.rangeProblems()
        if !problems.isEmpty { throw ConfigError.invalid(problems) }
        return config
    }

    /// Decodes through JSON text with shortest round-trip number formatting, so values are exact.
    static func decode(_ values: FlatConfig) throws -> TrainingConfig {
        var sections: [String] = []
        var current = ""
        var fields: [String] = []
        func close() {
            if !current.isEmpty { sections.append("\(jsonString(current)): {" + fields.joined(separator: ", ") + "}") }
        }
        for entry in values.entries {
            if entry.section != current {
                close()
                current = entry.section
                fields = []
            }
            fields.append("\(jsonString(entry.key)): \(entry.value.json)")
        }
        close()
        let text = "{" + sections.joined(separator: ", ") + "}"
        return try JSONDecoder().decode(TrainingConfig.self, from: Data(text.utf8))
    }

    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

// MARK: - Flat representation

/// The configuration as an ordered list of `section.key` entries of known kinds.
struct FlatConfig: Sendable {
    struct Entry: Sendable {
        var section: String
        var key: String
        var value: ConfigValue
        var path: String { section + "." + key }
    }

    var entries: [Entry] = []

    func isSection(_ name: String) -> Bool { entries.contains { $0.section == name } }

    func value(at path: String) -> ConfigValue? { entries.first { $0.path == path }?.value }

    mutating func set(path: String, node: Node, source: String) throws {
        guard let index = entries.firstIndex(where: { $0.path == path }) else {
            throw ConfigError.unknownKey(path: path, suggestion: suggestion(for: path), source: source)
        }
        entries[index].value = try entries[index].value.replaced(by: node, path: path, source: source)
    }

    /// The known key or section closest to a mistyped `path`, if one is close enough to be meant.
    func suggestion(for path: String) -> String? {
        let sections = Array(Set(entries.map { $0.section }))
        let candidates = entries.map { $0.path } + sections
        var bestCandidate: String? = nil
        var bestDistance = Int.max
        for candidate in candidates.sorted() {
            let distance = editDistance(path.lowercased(), candidate.lowercased())
            if distance < bestDistance { (bestCandidate, bestDistance) = (candidate, distance) }
        }
        let lastComponent = path.split(separator: ".").last.map(String.init) ?? path
        return bestDistance <= max(2, lastComponent.count / 3) ? bestCandidate : nil
    }
}

/// A parser message on one line: Yams ends it with the offending source line and a caret under the
/// column, which the message's "line L, column C" already locates.
func oneLine(_ error: Error) -> String {
    var lines = "\(error)".split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    if let caret = lines.lastIndex(where: { !$0.isEmpty && $0.allSatisfy { $0 == "^" } }) {
        lines.removeSubrange(Swift.max(0, caret - 1)...caret)
    }
    return lines.filter { !$0.isEmpty }.map { $0.hasSuffix(":") ? String($0.dropLast()) : $0 }.joined(separator: "; ")
}

/// Levenshtein distance between two strings.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8), b = Array(b.utf8)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
            current[j] = min(substitution, previous[j] + 1, current[j - 1] + 1)
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}

/// One configuration value; its case is the kind every layer must respect.
enum ConfigValue: Equatable, Sendable {
    case int(Int)
    case float(Double)
    case bool(Bool)
    case string(String)
    case floatList([Double])
    case intList([Int])

    /// Reads a value the YAML encoder wrote for the defaults.
    init?(canonical node: Node) {
        switch node {
        case .scalar:
            let tag = node.tag.description
            if tag.hasSuffix(":int"), let value = node.int {
                self = .int(value)
            } else if tag.hasSuffix(":float"), let value = node.float {
                self = .float(value)
            } else if tag.hasSuffix(":bool"), let value = node.bool {
                self = .bool(value)
            } else {
                self = .string(node.string ?? "")
            }
        case .sequence(let items):
            if items.allSatisfy({ $0.tag.description.hasSuffix(":int") }) {
                self = .intList(items.compactMap { $0.int })
            } else {
                self = .floatList(items.compactMap { $0.float })
            }
        default:
            return nil
        }
    }

    /// Wraps a field value of the config struct, keeping the kind of `like`.
    init(exactly value: Any, like kind: ConfigValue) {
        switch (kind, value) {
        case (.int, let v as Int): self = .int(v)
        case (.float, let v as Double): self = .float(v)
        case (.bool, let v as Bool): self = .bool(v)
        case (.string, let v as String): self = .string(v)
        case (.string, let v as any ConfigChoice): self = .string(v.rawValue)
        case (.floatList, let v as [Double]): self = .floatList(v)
        case (.intList, let v as [Int]): self = .intList(v)
        default: preconditionFailure("config field \(value) does not have the schema's kind \(kind)")
        }
    }

    /// The value as JSON (numbers in Swift's shortest round-trip form).
    var json: String {
        switch self {
        case .int(let v): return String(v)
        case .float(let v): return "\(v)"
        case .bool(let v): return v ? "true" : "false"
        case .string(let v): return ConfigLoader.jsonString(v)
        case .floatList(let v): return "[" + v.map { "\($0)" }.joined(separator: ", ") + "]"
        case .intList(let v): return "[" + v.map(String.init).joined(separator: ", ") + "]"
        }
    }

    var kindDescription: String {
        switch self {
        case .int: return "an integer"
        case .float: return "a finite number"
        case .bool: return "true or false"
        case .string: return "a string"
        case .floatList: return "a list of numbers like [0.1, 0.5]"
        case .intList: return "a list of integers"
        }
    }

    /// The value `node` gives a key of this kind, or a type error naming `path`.
    func replaced(by node: Node, path: String, source: String) throws -> ConfigValue {
        func mismatch() -> ConfigError {
            let found: String
            switch node {
            case .scalar(let scalar): found = "'\(scalar.string)'"
            case .sequence: found = "a list"
            case .mapping: found = "a mapping"
            case .alias: found = "an alias"
            }
            return ConfigError.typeMismatch(path: path, expected: kindDescription, found: found, source: source)
        }
        let tag = node.tag.description
        switch self {
        case .int:
            guard tag.hasSuffix(":int"), let value = node.int else { throw mismatch() }
            return .int(value)
        case .float:
            guard case .scalar(let scalar) = node, !tag.hasSuffix(":bool"),
                let value = Double(scalar.string.trimmingCharacters(in: .whitespaces)) ?? node.float,
                value.isFinite
            else { throw mismatch() }
            return .float(value)
        case .bool:
            guard tag.hasSuffix(":bool"), let value = node.bool else { throw mismatch() }
            return .bool(value)
        case .string:
            guard case .scalar(let scalar) = node else { throw mismatch() }
            return .string(tag.hasSuffix(":null") ? "" : scalar.string)
        case .floatList:
            guard case .sequence(let items) = node else { throw mismatch() }
            var numbers: [Double] = []
            for item in items {
                guard case .scalar(let scalar) = item, !item.tag.description.hasSuffix(":bool"),
                    let value = Double(scalar.string) ?? item.float, value.isFinite
                else { throw mismatch() }
                numbers.append(value)
            }
            return .floatList(numbers)
        case .intList:
            guard case .sequence(let items) = node else { throw mismatch() }
            var numbers: [Int] = []
            for item in items {
                guard item.tag.description.hasSuffix(":int"), let value = item.int else { throw mismatch() }
                numbers.append(value)
            }
            return .intList(numbers)
        }
    }

    /// The value as YAML that both YAML 1.1 and 1.2 readers parse back to the same kind.
    var yaml: String {
        switch self {
        case .int(let value): return String(value)
        case .float(let value): return Self.yamlFloat(value)
        case .bool(let value): return value ? "true" : "false"
        case .string(let value):
            if Self.isPlainSafe(value) { return value }
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "\"", with: "\\\"")
            return "\"\(escaped)\""
        case .floatList(let values): return "[" + values.map(Self.yamlFloat).joined(separator: ", ") + "]"
        case .intList(let values): return "[" + values.map(String.init).joined(separator: ", ") + "]"
        }
    }

    /// True when `text` reads back as the same string without quotes in YAML 1.1 and 1.2.
    static func isPlainSafe(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first,
            CharacterSet.letters.contains(first) || first == "_" || first == "/" || first == "."
        else { return false }
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "_-./:=,"))
        guard text.unicodeScalars.allSatisfy({ allowed.contains($0) }), !text.hasSuffix(":") else { return false }
        let keywords: Set<String> = ["true", "false", "yes", "no", "on", "off", "null", "y", "n", "nan", "inf"]
        return !keywords.contains(text.lowercased()) && Double(text) == nil
    }

    static func yamlFloat(_ value: Double) -> String {
        guard value.isFinite else { return value.isNaN ? ".nan" : (value > 0 ? ".inf" : "-.inf") }
        var text = "\(value)"
        if let e = text.firstIndex(of: "e"), !text[..<e].contains(".") {
            text.insert(contentsOf: ".0", at: e)
        }
        return text
    }
}
