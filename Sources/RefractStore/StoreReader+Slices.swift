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
// each shard is memory-mapped (through `SafetensorsFile`, with the same header checks as every other
// read), told that access is random (so the kernel does not read ahead the rest of every row), and
// the chosen slices of each row are copied (float32) or widened (float16) into the result, rows in
// parallel. A slice is named by a prefix of the per-image index: `[l, h]` in `attn` [L, H, D'] is
// the D' values of head h of layer l.

extension StoreReader {
    /// The slices `indices` of tensor `name` for rows `rows` (all rows when nil), as float32
    /// `[rows, k] + trailing shape` (`k = indices.count`; slice `j` of row `r` is `tensor[r][indices[j]]`).
    ///
    /// Every index has the same length `p` (1 ≤ p ≤ rank of the per-image shape); the trailing shape is
    /// `spec.shape[p...]`. Only the bytes of the chosen slices are read.
    public func slices(of name: String, indices: [[Int]], rows: Range<Int>? = nil) throws -> Tensor {
        let plan = try slicePlan(name, indices: indices, rows: rows)
        let k = indices.count, dtype = plan.dtype
        let out = try gather(plan, perRow: k * plan.width) { dst, row, slice, width, raw, element in
            convertElements(raw, dtype: dtype, start: element, count: width, into: dst + (row * k + slice) * width)
        }
        return Tensor(shape: [plan.rows.count, k] + plan.trailing, data: out)            // [n, k, trailing...]
    }

    /// The sum of the slices `indices` of tensor `name` for each row of `rows` (all rows when nil), as
    /// float32 `[rows] + trailing shape`. Slices are added in the order given, in float32, each widened
    /// exactly from the stored type first (so a slice listed twice counts twice).
    public func summedSlices(of name: String, indices: [[Int]], rows: Range<Int>? = nil) throws -> Tensor {
        let plan = try slicePlan(name, indices: indices, rows: rows)
        let dtype = plan.dtype
        let out = try gather(plan, perRow: plan.width) { dst, row, slice, width, raw, element in
            let target = dst + row * width
            if slice == 0 {
                convertElements(raw, dtype: dtype, start: element, count: width, into: target)
                return
            }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: width) { tmp in
                let t = tmp.baseAddress!
                convertElements(raw, dtype: dtype, start: element, count: width, into: t)
                for j in 0..<width { target[j] += t[j] }
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

    /// Runs `body(dst, row, slice, width, raw, element)` for every requested row (0-based within the
    /// result) and slice, in slice order, where `raw` is the mapped tensor of the row's shard and
    /// `element` the slice's first element in it. Rows are split over the cores; `body` writes only
    /// its row's `perRow` elements of `dst`. Returns the result buffer (`rows · perRow` elements).
    private func gather(_ plan: SlicePlan, perRow: Int,
                        _ body: @escaping @Sendable (UnsafeMutablePointer<Float>, Int, Int, Int, UnsafeRawBufferPointer, Int) -> Void)
        throws -> [Float] {
        let n = plan.rows.count, k = plan.offsets.count, width = plan.width
        var out = [Float](repeating: 0, count: n * perRow)
        let elementBytes = plan.dtype.byteSize
        for (i, shardRange) in shardRows.enumerated() {
            let lo = max(plan.rows.lowerBound, shardRange.lowerBound), hi = min(plan.rows.upperBound, shardRange.upperBound)
            guard lo < hi else { continue }
            let file = try checkShardHeader(manifest: manifest, run: run, index: i).file
            let path = file.path
            try file.withRawBytes(plan.name) { raw in
                guard raw.count == shardRange.count * plan.rowWidth * elementBytes else {
                    throw StoreError(.invalidShard, path: path, "tensor '\(plan.name)' changed on disk while reading")
                }
                adviseRandomAccess(raw, fraction: Double(k * width) / Double(max(plan.rowWidth, 1)))
                let source = UnsafeRawBufferPointerBox(raw)
                out.withUnsafeMutableBufferPointer { buffer in
                    let dst = SendablePointer(buffer.baseAddress!)
                    let count = hi - lo
                    // Chunks of rows: enough for every core, not so small that dispatch dominates.
                    let chunks = min(count, max(1, ProcessInfo.processInfo.activeProcessorCount * 4))
                    let per = (count + chunks - 1) / chunks
                    Parallel.forEach(chunks) { c in
                        let first = c * per, last = min(count, first + per)
                        guard first < last else { return }
                        for r in first..<last {
                            let shardRow = lo - shardRange.lowerBound + r
                            let resultRow = lo - plan.rows.lowerBound + r
                            for (s, offset) in plan.offsets.enumerated() {
                                body(dst.pointer, resultRow, s, width, source.buffer, shardRow * plan.rowWidth + offset)
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Tells the kernel that a sparse read of a mapped tensor is coming, so that a page fault does not
    /// read ahead the (unwanted) rest of the row; skipped when most of each row is wanted anyway.
    private func adviseRandomAccess(_ raw: UnsafeRawBufferPointer, fraction: Double) {
        guard fraction < 0.5, let base = raw.baseAddress, raw.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: base) / page * page
        let end = Int(bitPattern: base) + raw.count
        guard let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(p, end - start, Int32(MADV_RANDOM))
    }
}

/// A read-only mapped buffer that may cross into `concurrentPerform` (nothing writes to it).
private struct UnsafeRawBufferPointerBox: @unchecked Sendable {
    let buffer: UnsafeRawBufferPointer
    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }
}
