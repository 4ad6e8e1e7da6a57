// MARK: - Parallel loops

import Foundation

/// A pointer that may cross into `concurrentPerform`; callers guarantee disjoint writes.
public struct SendablePointer<T>: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<T>
    public init(_ p: UnsafeMutablePointer<T>) { pointer = p }
    public init(_ p: UnsafePointer<T>) { pointer = UnsafeMutablePointer(mutating: p) }
}

public enum Parallel {
    /// Runs `body(i)` for i in 0..<count on all cores; returns when all are done.
    public static func forEach(_ count: Int, _ body: @Sendable (Int) -> Void) {
        if count == 1 { body(0); return }
        DispatchQueue.concurrentPerform(iterations: count, execute: body)
    }
}
