// MARK: - Parallel loops

import Foundation

/// A pointer that may cross into `concurrentPerform`; callers guarantee disjoint writes.
public struct SendablePointer<T>: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<T>
    public init(_ p: UnsafeMutablePointer<T>) { pointer = p }
    public init(_ p: UnsafePointer<T>) { pointer = UnsafeMutablePointer(mutating: p) }
}

public enum Parallel {
    /// Runs `body(i)` for i in 0..<count on the process's CPUs (at most `CPUAllocation.current`
    /// workers at a time); returns when all are done.
    public static func forEach(_ count: Int, _ body: @Sendable (Int) -> Void) {
        if count == 1 { body(0); return }
        let workers = CPUAllocation.current.cpus
        if count <= workers || workers >= ProcessInfo.processInfo.processorCount {
            DispatchQueue.concurrentPerform(iterations: count, execute: body)
            return
        }
        // Fewer CPUs than the machine has (a Slurm task, a container's CPU limit): no more workers
        // than the allocation, each taking the next index.
        let next = IndexCounter()
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while let i = next.take(below: count) { body(i) }
        }
    }
}

/// The next index of a shared loop.
private final class IndexCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func take(below count: Int) -> Int? {
        lock.lock(); defer { lock.unlock() }
        guard value < count else { return nil }
        value += 1
        return value - 1
    }
}
