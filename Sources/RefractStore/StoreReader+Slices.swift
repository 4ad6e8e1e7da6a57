import Foundation
import RefractCheckpoint
import RefractTensor

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Strided reads: chosen slices of a per-image tensor, for every row
//
// A decomposition run's `attn` tensor is [N, L, H, D'] over all shards; a ViT-B run of 50,000 images
// is about 15 GB in float32. Questions about a few heads (retrieval, one head's contributions) need
// only the (l, h) slices of each row: 2·D' values out of L·H·D'. These reads touch only those bytes:
// every shard's header is checked as for any other read, then each chosen slice of each row is read
// with one `pread` at its offset (the page cache serves it when the file is cached; the kernel reads
// just those pages when it is not) and widened to float32. Reads run on `ioWorkers` threads (more
// than the cores, so that a run that is not in the page cache has many reads in flight). A slice is
// named by a prefix of the per-image index: `[l, h]` in `attn` [L, H, D'] is the D' values of head h
// of layer l.

extension StoreReader {
    /// The slices `indices` of tensor `name` for rows `rows` (all rows when nil), as float32
    /// `[rows, k] + trailing shape` (`k = indices.count`; slice `j` of row `r` is `tensor[r][indices[j]]`).
    ///
    /// Every index has the same length `p` (1 ≤ p ≤ rank of the per-image shape); the trailing shape is
    /// `spec.shape[p...]`. Only the bytes of the chosen slices are read.
    public func slices(of name: String, indices: [[Int]], rows: Range<Int>? = nil) throws -> Tensor {
        let plan = try slicePlan(name, indices: indices, rows: rows)
        let k = indices.count, width = plan.width
        let out = try gather(plan, perRow: k * width) { dst, row, slice, values in
            (dst + (row * k + slice) * width).update(from: values, count: width)
        }
        return Tensor(shape: [plan.rows.count, k] + plan.trailing, data: out)            // [n, k, trailing...]
    }

    /// The sum of the slices `indices` of tensor `name` for each row of `rows` (all rows when nil), as
    /// float32 `[rows] + trailing shape`. Slices are added in the order given, in float32, each widened
    /// exactly from the stored type first (so a slice listed twice counts twice).
    public func summedSlices(of name: String, indices: [[Int]], rows: Range<Int>? = nil) throws -> Tensor {
        let plan = try slicePlan(name, indices: indices, rows: rows)
        let width = plan.width
        let out = try gather(plan, perRow: width) { dst, row, slice, values in
            let target = dst + row * width
            if slice == 0 {
                target.update(from: values, count: width)
            } else {
                for j in 0..<width { target[j] += values[j] }
            }
        }
        return Tensor(shape: [plan.rows.count] + plan.trailing, data: out)                 // [n, trailing...]
    }

    // MARK: Plan

    /// What a slice read needs: the rows, each slice's element offset within a row, sizes.
    struct SlicePlan {
        var name: String
        var dtype: SafetensorsDType
        var rows: Range<Int>
        /// Element offset of each slice within one row.
        var offsets: [Int]
        /// Elements per slice.
        var width: Int
        /// Elements per row.
        var rowWidth: Int
        var trailing: [Int]
    }

    /// Validates the request against the tensor's spec and computes the slice offsets.
    func slicePlan(_ name: String, indices: [[Int]], rows: Range<Int>?) throws -> SlicePlan {
        let spec = try spec(name)
        let rows = rows ?? 0..<rowCount
        guard rows.lowerBound >= 0, rows.upperBound <= rowCount else {
            throw StoreError(.invalidArgument, path: run.path, "rows \(rows) are outside the run's \(rowCount) rows")
        }
        guard let p = indices.first?.count else {
            throw StoreError(.invalidArgument, path: run.path, "no slices of '\(name)' requested")
        }
        guard p >= 1, p <= spec.shape.count else {
            throw StoreError(.invalidArgument, path: run.path,
                             "slice index \(indices[0]) has \(p) components; '\(name)' has per-image shape \(spec.shape), "
                                + "so an index has 1 to \(spec.shape.count)")
        }
        let trailing = Array(spec.shape[p...])
        let width = trailing.reduce(1, *)
        var offsets = [Int]()
        for index in indices {
            guard index.count == p else {
                throw StoreError(.invalidArgument, path: run.path,
                                 "slice indices of different lengths: \(indices[0]) and \(index)")
            }
            var flat = 0
            for (axis, i) in index.enumerated() {
                guard i >= 0, i < spec.shape[axis] else {
                    throw StoreError(.invalidArgument, path: run.path,
                                     "slice \(index) is outside '\(name)' of per-image shape \(spec.shape) "
                                        + "(axis \(axis) has \(spec.shape[axis]) entries)")
                }
                flat = flat * spec.shape[axis] + i
            }
            offsets.append(flat * width)
        }
        return SlicePlan(name: name, dtype: spec.dtype.safetensors, rows: rows, offsets: offsets, width: width,
                         rowWidth: spec.elementCount, trailing: trailing)
    }

    // MARK: Gather

    /// Threads reading slices at once: enough to keep a disk busy when the run is not cached.
    static var ioWorkers: Int { max(16, ProcessInfo.processInfo.activeProcessorCount) }

    /// Largest gap (bytes) between two slices of a row that are still read with one `pread`: copying
    /// a few kilobytes more costs less than another system call (and, from disk, is the same read).
    static let mergeGapBytes = 16 << 10

    /// A byte range of one row read with one `pread` (in elements from the row's start), and where it
    /// goes in the staging buffer (bytes).
    struct ReadRun: Sendable {
        var start: Int
        var count: Int
        var staging: Int
    }

    /// The runs that cover a row's slices (slices sorted by offset, neighbours closer than
    /// `mergeGapBytes` merged), each slice's byte offset in the staging buffer, and the buffer's size.
    static func readRuns(_ plan: SlicePlan, elementBytes: Int) -> (runs: [ReadRun], slices: [Int], bytes: Int) {
        let order = plan.offsets.indices.sorted { plan.offsets[$0] < plan.offsets[$1] }
        var runs = [ReadRun]()
        var sliceAt = [Int](repeating: 0, count: plan.offsets.count)
        var staging = 0
        for j in order {
            let o = plan.offsets[j]
            if var last = runs.last, (o - (last.start + last.count)) * elementBytes <= mergeGapBytes {
                last.count = max(last.count, o + plan.width - last.start)
                runs[runs.count - 1] = last
                staging = last.staging + last.count * elementBytes
            } else {
                runs.append(ReadRun(start: o, count: plan.width, staging: staging))
                staging += plan.width * elementBytes
            }
            let run = runs[runs.count - 1]
            sliceAt[j] = run.staging + (o - run.start) * elementBytes
        }
        return (runs, sliceAt, staging)
    }

    /// One shard of a gather: an open descriptor and where the tensor's data starts in the file.
    private struct ShardSource: Sendable {
        var fd: Int32
        var path: String
        var dataOffset: Int
        /// Rows of the shard (all of them) and the requested rows within the shard's range.
        var shardRange: Range<Int>
        var lo: Int
        var hi: Int
    }

    /// Reads every requested row's slices, in slice order, and calls `body(dst, row, slice, values)`
    /// with the slice widened to float32 (`values`, `width` elements; `row` 0-based within the result).
    /// `body` writes only its row's `perRow` elements of `dst`. Returns the result (`rows · perRow`).
    private func gather(_ plan: SlicePlan, perRow: Int,
                        _ body: @escaping @Sendable (UnsafeMutablePointer<Float>, Int, Int, UnsafePointer<Float>) -> Void)
        throws -> [Float] {
        let n = plan.rows.count, width = plan.width
        let elementBytes = plan.dtype.byteSize, sliceBytes = width * elementBytes
        var out = [Float](repeating: 0, count: n * perRow)

        // Open the shards the rows need; headers checked against the manifest, contents against
        // the recorded SHA-256 (every shard needed, hashed in parallel, before any value is read).
        let needed = shardRows.indices.filter { i in
            max(plan.rows.lowerBound, shardRows[i].lowerBound) < min(plan.rows.upperBound, shardRows[i].upperBound)
        }
        for i in needed { _ = try checkShardHeader(manifest: manifest, run: run, index: i) }
        try verifyShards(needed)
        var sources = [ShardSource]()
        defer { for s in sources { close(s.fd) } }
        for (i, shardRange) in shardRows.enumerated() {
            let lo = max(plan.rows.lowerBound, shardRange.lowerBound), hi = min(plan.rows.upperBound, shardRange.upperBound)
            guard lo < hi else { continue }
            let file = try checkShardHeader(manifest: manifest, run: run, index: i).file
            let path = file.path
            guard let info = file.tensors[plan.name], info.dataOffsets.count == shardRange.count * plan.rowWidth * elementBytes else {
                throw StoreError(.invalidShard, path: path, "tensor '\(plan.name)' changed on disk while reading")
            }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw StoreError(.io, path: path, "cannot open: \(String(cString: strerror(errno)))") }
            sources.append(ShardSource(fd: fd, path: path, dataOffset: 0, shardRange: shardRange, lo: lo, hi: hi))
            // The data section starts after the 8-byte header length and the header; the file must be
            // the one just checked (same size).
            var st = stat()
            var length: UInt64 = 0
            let got = withUnsafeMutableBytes(of: &length) { pread(fd, $0.baseAddress, 8, 0) }
            guard fstat(fd, &st) == 0, Int(st.st_size) == file.fileSize, got == 8 else {
                throw StoreError(.invalidShard, path: path, "changed on disk while reading")
            }
            sources[sources.count - 1].dataOffset = 8 + Int(UInt64(littleEndian: length)) + info.dataOffsets.lowerBound
        }
        guard !sources.isEmpty else { return out }

        // Work items: chunks of rows of one shard.
        let rowsPerItem = 64
        var items = [(source: Int, rows: Range<Int>)]()
        for (k, s) in sources.enumerated() {
            var r = s.lo
            while r < s.hi { items.append((k, r..<min(s.hi, r + rowsPerItem))); r += rowsPerItem }
        }
        let (runs, stagingOffsets, stagingBytes) = Self.readRuns(plan, elementBytes: elementBytes)
        let queue = WorkQueue(count: items.count)
        let workers = min(Self.ioWorkers, items.count)
        let dtype = plan.dtype, rowWidth = plan.rowWidth, firstRow = plan.rows.lowerBound
        let sourceList = sources, itemList = items
        out.withUnsafeMutableBufferPointer { buffer in
            let dst = SendablePointer(buffer.baseAddress!)
            runThreads(workers) {
                let staging = UnsafeMutableRawPointer.allocate(byteCount: max(stagingBytes, 4), alignment: 16)
                let values = UnsafeMutablePointer<Float>.allocate(capacity: width)
                defer { staging.deallocate(); values.deallocate() }
                while let i = queue.next() {
                    let item = itemList[i], s = sourceList[item.source]
                    for r in item.rows {
                        // One pread per run of nearby slices, then the slices in the order asked.
                        let rowStart = s.dataOffset + ((r - s.shardRange.lowerBound) * rowWidth) * elementBytes
                        for run in runs {
                            let at = rowStart + run.start * elementBytes, bytes = run.count * elementBytes
                            var done = 0
                            while done < bytes {
                                let got = pread(s.fd, staging + run.staging + done, bytes - done, off_t(at + done))
                                if got > 0 { done += got; continue }
                                if got < 0 && errno == EINTR { continue }
                                queue.fail(StoreError(got < 0 ? .io : .invalidShard, path: s.path, got < 0
                                    ? "cannot read \(bytes) bytes at offset \(at): \(String(cString: strerror(errno)))"
                                    : "ends before offset \(at + bytes); it changed on disk while reading"))
                                return
                            }
                        }
                        for (j, at) in stagingOffsets.enumerated() {
                            let raw = UnsafeRawBufferPointer(start: staging + at, count: sliceBytes)
                            convertElements(raw, dtype: dtype, start: 0, count: width, into: values)
                            body(dst.pointer, r - firstRow, j, values)
                        }
                    }
                }
            }
        }
        if let error = queue.error { throw error }
        return out
    }
}

/// Hands out work item indices to threads; the first failure stops the rest.
private final class WorkQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var nextIndex = 0
    private let count: Int
    private(set) var error: StoreError?
    init(count: Int) { self.count = count }

    func next() -> Int? {
        lock.lock(); defer { lock.unlock() }
        guard error == nil, nextIndex < count else { return nil }
        nextIndex += 1
        return nextIndex - 1
    }

    func fail(_ e: StoreError) {
        lock.lock(); defer { lock.unlock() }
        if error == nil { error = e }
    }
}

/// Runs `body` on `count` new threads and waits for all of them. Unlike `concurrentPerform`, the
/// threads are not limited to the cores, so blocking reads overlap.
private func runThreads(_ count: Int, _ body: @escaping @Sendable () -> Void) {
    if count <= 1 { body(); return }
    let group = DispatchGroup()
    for _ in 0..<count {
        group.enter()
        let thread = Thread {
            body()
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
}
