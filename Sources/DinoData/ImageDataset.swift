// Where training images come from: an ImageFolder tree (root/<class>/<image>, classes sorted by
// name, label = class index) or a list file (one path per line, optionally followed by an integer
// label). Files are listed once, sorted, so every rank sees the same indexing.

import Foundation

/// One image of a dataset.
public struct ImageSample: Sendable, Equatable {
    public var path: String
    /// Class index, or -1 when the dataset has no labels.
    public var label: Int
}

/// Problems with a data source, each naming the path and what to do.
public enum DatasetError: Error, CustomStringConvertible, Equatable {
    case missing(String)
    case empty(String)
    case badLine(file: String, line: Int, text: String)

    public var description: String {
        switch self {
        case .missing(let path):
            return
                "image source \(path) does not exist; pass an image folder (class subfolders of .jpg / .png files) "
                + "or a list file"
        case .empty(let path): return "data source \(path) holds no .jpg, .jpeg or .png images"
        case .badLine(let file, let line, let text):
            return "\(file):\(line): '\(text)' is not 'PATH' or 'PATH LABEL' (LABEL an integer)"
        }
    }
}

/// A list of images with optional labels.
public struct ImageDataset: Sendable {
    public let root: String
    public let samples: [ImageSample]
    /// Class names in label order (ImageFolder), empty for list files.
    public let classes: [String]

    public static let extensions: Set<String> = ["jpg", "jpeg", "png"]

    /// Opens an ImageFolder directory or a list file.
    public init(path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DatasetError.missing(path)
        }
        root = path
        if isDirectory.boolValue {
            let manager = FileManager.default
            let entries = (try? manager.contentsOfDirectory(atPath: path)) ?? []
            let classNames = entries.filter { name in
                var directory: ObjCBool = false
                return !name.hasPrefix(".") && manager.fileExists(atPath: path + "/" + name, isDirectory: &directory)
                    && directory.boolValue
            }.sorted()
            var samples: [ImageSample] = []
            for (label, name) in classNames.enumerated() {
                let folder = path + "/" + name
                let files = ((try? manager.contentsOfDirectory(atPath: folder)) ?? []).filter {
                    Self.extensions.contains(($0 as NSString).pathExtension.lowercased())
                }.sorted()
                samples += files.map { ImageSample(path: folder + "/" + $0, label: label) }
            }
            classes = classNames
            self.samples = samples
        } else {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            var samples: [ImageSample] = []
            let base = (path as NSString).deletingLastPathComponent
            for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.isEmpty || line.hasPrefix("#") { continue }
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count <= 2 else { throw DatasetError.badLine(file: path, line: number + 1, text: line) }
                var label = -1
                if fields.count == 2 {
                    guard let value = Int(fields[1]) else {
                        throw DatasetError.badLine(file: path, line: number + 1, text: line)
                    }
                    label = value
                }
                let file = String(fields[0])
                samples.append(ImageSample(path: file.hasPrefix("/") ? file : base + "/" + file, label: label))
            }
            classes = []
            self.samples = samples
        }
        guard !samples.isEmpty else { throw DatasetError.empty(path) }
    }

    public var count: Int { samples.count }

    private init(root: String, samples: [ImageSample], classes: [String]) {
        self.root = root
        self.samples = samples
        self.classes = classes
    }

    /// The image files `paths`, in the given order, without labels.
    public init(files paths: [String]) throws {
        guard let first = paths.first else { throw DatasetError.empty("(no image files given)") }
        for path in paths where !FileManager.default.fileExists(atPath: path) { throw DatasetError.missing(path) }
        self.init(root: first, samples: paths.map { ImageSample(path: $0, label: -1) }, classes: [])
    }

    /// The first `count` images (all of them when there are fewer), with the same classes.
    public func prefix(_ count: Int) -> ImageDataset {
        ImageDataset(root: root, samples: Array(samples.prefix(Swift.max(1, count))), classes: classes)
    }
}
