// MARK: - The CPUs this process is given
//
// On a cluster a task gets a share of a machine: Slurm says how many CPUs in SLURM_CPUS_PER_TASK
// (and binds the task to them), a container runtime (Kubernetes, Docker) caps CPU time with the
// cgroup quota `cpu.max` without changing what the process sees as online CPUs, and `taskset` or
// cpusets narrow the affinity mask. Running one thread per online CPU under such a cap makes the
// threads wait on each other and on the quota. The allocation is the smallest of the three (and
// of the online CPUs); `BLAS.load()` sets BLAS's threads to it unless the user chose them
// (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, or `--threads` afterwards), and `Parallel` uses at most
// that many workers.

import Foundation

public struct CPUAllocation: Codable, Equatable, Sendable {
    /// CPUs to use.
    public var cpus: Int
    /// What set it: "SLURM_CPUS_PER_TASK", "cgroup cpu.max", "affinity" or "online CPUs".
    public var source: String

    public init(cpus: Int, source: String) {
        self.cpus = cpus
        self.source = source
    }

    /// The allocation of this process (computed once).
    public static let current = detect()

    /// The smallest of `SLURM_CPUS_PER_TASK`, the cgroup CPU quota, the affinity mask and the online
    /// CPUs. `root` is where the cgroup and proc files are looked for (tests pass a fake tree).
    public static func detect(environment: [String: String] = ProcessInfo.processInfo.environment,
                              root: String = "", online: Int = ProcessInfo.processInfo.processorCount) -> CPUAllocation {
        var best = CPUAllocation(cpus: max(1, online), source: "online CPUs")
        func consider(_ n: Int?, _ source: String) {
            if let n, n >= 1, n < best.cpus { best = CPUAllocation(cpus: n, source: source) }
        }
        consider(affinityCount(root: root), "affinity")
        consider(cgroupQuota(root: root), "cgroup cpu.max")
        consider(environment["SLURM_CPUS_PER_TASK"].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }, "SLURM_CPUS_PER_TASK")
        return best
    }

    /// CPUs allowed by the affinity mask (`Cpus_allowed_list` of /proc/self/status), nil when unknown.
    static func affinityCount(root: String) -> Int? {
        guard let status = try? String(contentsOfFile: root + "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { return nil }
        return countList(String(line.dropFirst("Cpus_allowed_list:".count)))
    }

    /// "0-3,8,10-11" → 7.
    static func countList(_ text: String) -> Int? {
        var total = 0
        for piece in text.trimmingCharacters(in: .whitespaces).split(separator: ",") {
            let ends = piece.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            if ends.count == 1, ends[0] != nil { total += 1 }
            else if ends.count == 2, let a = ends[0], let b = ends[1], b >= a { total += b - a + 1 }
            else { return nil }
        }
        return total > 0 ? total : nil
    }

    /// CPUs the cgroup quota allows (⌈quota/period⌉), nil without a quota. cgroup v2: `cpu.max`
    /// ("max 100000" or "200000 100000") of the process's cgroup and of the namespace root;
    /// cgroup v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
    static func cgroupQuota(root: String) -> Int? {
        var candidates = [root + "/sys/fs/cgroup/cpu.max"]
        if let groups = try? String(contentsOfFile: root + "/proc/self/cgroup", encoding: .utf8) {
            for line in groups.split(separator: "\n") where line.hasPrefix("0::") {
                let path = String(line.dropFirst(3))
                if path != "/" { candidates.insert(root + "/sys/fs/cgroup" + path + "/cpu.max", at: 0) }
            }
        }
        var best: Int?
        func take(_ quota: Double, _ period: Double) {
            guard quota > 0, period > 0 else { return }
            let n = max(1, Int((quota / period).rounded(.up)))
            best = min(best ?? n, n)
        }
        for path in candidates {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
            if fields.count >= 2, fields[0] != "max", let q = Double(fields[0]), let p = Double(fields[1]) { take(q, p) }
        }
        if let q = try? String(contentsOfFile: root + "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding: .utf8),
           let p = try? String(contentsOfFile: root + "/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding: .utf8),
           let quota = Double(q.trimmingCharacters(in: .whitespacesAndNewlines)),
           let period = Double(p.trimmingCharacters(in: .whitespacesAndNewlines)) {
            take(quota, period)
        }
        return best
    }
}
