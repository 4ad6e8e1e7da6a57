// MARK: - Helpers shared by the test targets

import Foundation
import RefractStore
import RefractTensor
import XCTest

/// Runs `body` on its own thread and returns its result, or nil (a test failure) if it has not
/// returned within `seconds`: then it is blocked opening the FIFO at `path`, which is unblocked by
/// opening the pipe's write end, so a regression fails the test instead of hanging the suite.
public func returnsPromptly<T>(within seconds: Double, unblocking path: String, file: StaticString = #filePath, line: UInt = #line,
                        _ body: @escaping () -> T) -> T? {
    let box = PromptBox(body)
    Thread { box.value = box.body(); box.done.signal() }.start()
    if box.done.wait(timeout: .now() + seconds) == .success { return box.value }
    XCTFail("still blocked after \(seconds) s on \(path)", file: file, line: line)
    let fd = open(path, O_WRONLY | O_NONBLOCK)
    if fd >= 0 { close(fd) }
    _ = box.done.wait(timeout: .now() + 10)
    return nil
}

/// The result of a body run on another thread (written before `done` is signalled, read after).
public final class PromptBox<T>: @unchecked Sendable {
    public var value: T?
    public let body: () -> T
    public let done = DispatchSemaphore(value: 0)
    public init(_ body: @escaping () -> T) { self.body = body }
}

/// A copy of run `reader` at `to`, written with `StoreWriter` (so valid in every other way), with
/// `value` at flat index `index` of tensor `name` in row `row`: a run as an older version, another
/// tool or a damaged disk could leave it.
public func copyRun(_ reader: StoreReader, to: URL, name: String, row: Int, index: Int, value: Float) throws -> StoreReader {
    let writer = try StoreWriter.open(at: to, header: reader.manifest.header, constants: [:], createdBy: "test", resume: false)
    for (s, rows) in reader.shardRows.enumerated() {
        var tensors = [String: Tensor]()
        for spec in reader.tensorSpecs {
            var t = try reader.tensor(spec.name, rows: rows)
            if spec.name == name, rows.contains(row) { t.data[(row - rows.lowerBound) * spec.elementCount + index] = value }
            tensors[spec.name] = t
        }
        try writer.writeShard(s, imageIndices: Array(reader.rowImageIndices[rows]), rows: tensors, skipped: [])
    }
    try writer.finish()
    return try StoreReader(run: to)
}
