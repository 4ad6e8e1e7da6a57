import Foundation
import XCTest

/// The cluster recipes of examples/cluster (docs/Cluster.md), run as dry runs on this machine: the
/// tasks of the Slurm job array and the pods of the Kubernetes Indexed Job become processes started
/// side by side, with the variables the scheduler would set; then the recipes' merge step runs, and
/// the merged run must export to the same files, byte for byte, as one plain `refract decompose`
/// over the same images with the same options.
extension CLITests {
    private static var clusterExamples: URL { root.appendingPathComponent("examples/cluster") }

    /// The environment of a recipe's process: the test's own (offline, the scratch caches), with
    /// every variable a scheduler or a user's shell could have set that the recipes read removed,
    /// then `extra`; the Hugging Face and refract caches always in the scratch folder.
    private func clusterEnvironment(_ extra: [String: String]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        let read: Set<String> = ["PARTS_TOTAL", "JOB_COMPLETION_INDEX", "MODEL", "DATA", "PARTS", "RUN", "EXTRA", "COPY",
                                 "REFRACT", "N", "REFRACT_FAULT_AFTER_SHARDS"]
        for key in env.keys where key.hasPrefix("SLURM_") || read.contains(key) { env[key] = nil }
        env.merge(extra) { $1 }
        // Last, over a recipe's own values too: never the network, never a cache outside the scratch folder.
        env["HF_HUB_OFFLINE"] = "1"
        env["HF_HUB_CACHE"] = scratch.appendingPathComponent("hf-cache").path
        env["REFRACT_CACHE_DIR"] = scratch.appendingPathComponent("refract-cache").path
        return env
    }

    /// Starts `executable args` (looked up on PATH) in the scratch folder without waiting for it.
    private func clusterStart(_ executable: String, _ args: [String], environment: [String: String],
                              label: String) throws -> Started {
        try start(URL(fileURLWithPath: "/usr/bin/env"), [executable] + args, environment: environment, label: label, directory: scratch)
    }

    /// A process to start: `executable args` with `environment`.
    private struct ClusterCommand {
        var executable: String
        var args: [String]
        var environment: [String: String]
        var label: String
    }

    /// Starts every process first, then waits for each: they run side by side, as a scheduler's
    /// tasks do.
    private func clusterRunAll(_ commands: [ClusterCommand]) throws -> [(label: String, run: Run)] {
        let started = try commands.map { try clusterStart($0.executable, $0.args, environment: $0.environment, label: $0.label) }
        return try started.map { ($0.label, try finish($0, timeout: 300)) }
    }

    /// Exports `run` and the plain run of `data` with `options` (made here, with `environment` for
    /// the same threads as the parts), and asserts that every exported file but manifest.json is the
    /// same, byte for byte.
    private func assertSameAsOneRun(_ run: String, data: String, options: [String], environment: [String: String] = [:],
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        let single = path(scratch, "single-\(UUID().uuidString)")
        var r = try refract(["decompose", "--model", tinyModel, "--output", single] + options + [data], environment: environment)
        XCTAssertEqual(r.status, 0, "the single run: \(r.stderr)", file: file, line: line)
        let a = path(scratch, "export-merged-\(UUID().uuidString)"), b = path(scratch, "export-single-\(UUID().uuidString)")
        r = try refract(["export", "--run", run, "--output", a])
        XCTAssertEqual(r.status, 0, "export of the merged run: \(r.stderr)", file: file, line: line)
        r = try refract(["export", "--run", single, "--output", b])
        XCTAssertEqual(r.status, 0, "export of the single run: \(r.stderr)", file: file, line: line)
        let names = try FileManager.default.contentsOfDirectory(atPath: a).filter { $0 != "manifest.json" }.sorted()
        let expected = try FileManager.default.contentsOfDirectory(atPath: b).filter { $0 != "manifest.json" }.sorted()
        XCTAssertEqual(names, expected, "the exports hold other files", file: file, line: line)
        XCTAssertTrue(names.contains("attn.npy") && names.contains("image_index.npy") && names.contains("images.txt"),
                      "\(names)", file: file, line: line)
        for name in names where expected.contains(name) {
            let x = try Data(contentsOf: URL(fileURLWithPath: a).appendingPathComponent(name))
            let y = try Data(contentsOf: URL(fileURLWithPath: b).appendingPathComponent(name))
            XCTAssertTrue(x == y, "\(name) of the merged run differs from the single run's", file: file, line: line)
        }
    }

    /// The shard files of a run.
    private func clusterShards(_ run: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: run).filter { $0.hasPrefix("shard-") && $0.hasSuffix(".safetensors") }.sorted()
    }

    /// The lines of a shell script that a shell runs (comment lines left out), joined.
    private func code(_ script: String) -> String {
        script.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("#") }.joined(separator: "\n")
    }

    /// Hard links of a file (1: not linked anywhere else).
    private func clusterLinkCount(_ file: String) -> Int {
        var st = stat()
        return stat(file, &st) == 0 ? Int(st.st_nlink) : 0
    }

    // MARK: Slurm

    private var slurmDecompose: String { Self.clusterExamples.appendingPathComponent("slurm/decompose.sbatch").path }
    private var slurmMerge: String { Self.clusterExamples.appendingPathComponent("slurm/merge.sbatch").path }

    /// Task `k` of a job array submitted with `--array=0-(n-1)`, as Slurm starts it (one CPU).
    private func slurmTask(_ k: Int, of n: Int, variables: [String: String]) -> ClusterCommand {
        ClusterCommand(executable: "bash", args: [slurmDecompose], environment: clusterEnvironment(variables.merging([
            "SLURM_JOB_ID": "\(4243 + k)", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "\(k)",
            "SLURM_ARRAY_TASK_COUNT": "\(n)", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "\(n - 1)",
            "SLURM_CPUS_PER_TASK": "1",
        ]) { $1 }), label: "Slurm task \(k) of \(n)")
    }

    /// Runs the array's tasks `tasks` (all of 0..<n by default) side by side; each must succeed.
    private func runSlurmTasks(n: Int, tasks: [Int]? = nil, variables: [String: String],
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let results = try clusterRunAll((tasks ?? Array(0..<n)).map { slurmTask($0, of: n, variables: variables) })
        for (label, r) in results { XCTAssertEqual(r.status, 0, "\(label): \(r.stdout)\n\(r.stderr)", file: file, line: line) }
    }

    private func runSlurmMerge(variables: [String: String]) throws -> Run {
        try finish(clusterStart("bash", [slurmMerge], environment: clusterEnvironment(variables.merging([
            "SLURM_JOB_ID": "5000", "SLURM_CPUS_PER_TASK": "1",
        ]) { $1 }), label: "the Slurm merge job"))
    }

    /// What the scripts say they do: the array's task id and count, --part, --continue; submit.sh
    /// passes N to the array and makes the merge wait for it.
    func testClusterRecipeSlurmScriptsReadTheArrayAndChainTheMerge() throws {
        let decompose = try String(contentsOfFile: slurmDecompose, encoding: .utf8)
        for fragment in ["#SBATCH --array=0-", "#SBATCH --cpus-per-task=", "#SBATCH --mem=", "#SBATCH --time=", "#SBATCH --requeue"] {
            XCTAssertTrue(decompose.contains("\n" + fragment), "decompose.sbatch lacks \(fragment)")
        }
        for fragment in ["set -euo pipefail", "SLURM_ARRAY_TASK_COUNT", " decompose ", "--part \"$SLURM_ARRAY_TASK_ID/", "--continue",
                         "--output \"$PARTS/part-$SLURM_ARRAY_TASK_ID\""] {
            XCTAssertTrue(code(decompose).contains(fragment), "decompose.sbatch runs no \(fragment)")
        }
        let merge = try String(contentsOfFile: slurmMerge, encoding: .utf8)
        for fragment in ["set -euo pipefail", " merge --output \"$RUN\"", "\"$PARTS\"/part-*"] {
            XCTAssertTrue(code(merge).contains(fragment), "merge.sbatch runs no \(fragment)")
        }
        let submitPath = Self.clusterExamples.appendingPathComponent("slurm/submit.sh").path
        let submit = try String(contentsOfFile: submitPath, encoding: .utf8)
        for fragment in ["sbatch --parsable --array=0-$((N-1))", "--dependency=afterok:", "PARTS_TOTAL=\"$N\""] {
            XCTAssertTrue(code(submit).contains(fragment), "submit.sh runs no \(fragment)")
        }
        // No path of a particular machine in the recipes.
        for (name, text) in [("decompose.sbatch", decompose), ("merge.sbatch", merge), ("submit.sh", submit)] {
            for fragment in ["/work/", "/home/", "/Users/", "/tmp/"] {
                XCTAssertFalse(text.contains(fragment), "\(name) names a path of this machine (\(fragment))")
            }
        }

        // submit.sh with an sbatch that only records its calls: the array gets --array=0-(N-1) and
        // PARTS_TOTAL=N, the merge afterok on the array's id (the cluster name of "id;cluster" cut).
        let bin = scratch.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        let log = path(scratch, "sbatch.log")
        let fake = bin.appendingPathComponent("sbatch")
        try """
        #!/bin/sh
        printf 'PARTS_TOTAL=%s MODEL=%s ARGS=%s\\n' "${PARTS_TOTAL:-}" "${MODEL:-}" "$*" >> "$SBATCH_LOG"
        echo "$((1000 + $(wc -l < "$SBATCH_LOG")));testcluster"

        """.write(to: fake, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake.path)
        let env = clusterEnvironment([
            "PATH": bin.path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"),
            "SBATCH_LOG": log, "N": "3", "MODEL": "some/model", "DATA": "/data/a /data/b", "PARTS": "/shared/parts",
            "RUN": "/shared/run",
        ])
        let r = try finish(clusterStart("bash", [submitPath, "--partition=cpu"], environment: env, label: "submit.sh"))
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        let calls = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(calls.count, 2, calls.joined(separator: "\n"))
        guard calls.count == 2 else { return }
        XCTAssertTrue(calls[0].hasPrefix("PARTS_TOTAL=3 MODEL=some/model "), calls[0])
        for fragment in ["--parsable", "--array=0-2", "--partition=cpu", "slurm/decompose.sbatch"] {
            XCTAssertTrue(calls[0].contains(fragment), "the array's sbatch: \(calls[0])")
        }
        for fragment in ["--parsable", "--dependency=afterok:1001 ", "slurm/merge.sbatch"] {
            XCTAssertTrue(calls[1].contains(fragment), "the merge's sbatch: \(calls[1])")
        }
        XCTAssertFalse(calls[1].contains("--array"), calls[1])
        // A bad N is refused before anything is submitted.
        try "".write(toFile: log, atomically: true, encoding: .utf8)
        let bad = try finish(clusterStart("bash", [submitPath], environment: env.merging(["N": "0"]) { $1 }, label: "submit.sh N=0"))
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertEqual(try String(contentsOfFile: log, encoding: .utf8), "")
    }

    /// The Slurm recipe end to end: 3 array tasks side by side, then the merge job; the merged run
    /// is the single run's, byte for byte, its shards hard-linked from the parts; merging again
    /// does nothing and succeeds.
    func testClusterRecipeSlurmArrayMergesToTheSingleRun() throws {
        let data = try classFolders()
        let parts = path(scratch, "parts"), run = path(scratch, "merged")
        let n = 3
        let options = ["--shard-size", "1", "--tokens", "last:1"]   // 5 shards for 3 parts
        let variables = ["REFRACT": Self.binary.path, "MODEL": tinyModel, "DATA": data.path, "PARTS": parts, "RUN": run,
                         "EXTRA": options.joined(separator: " "), "PARTS_TOTAL": "\(n)"]
        var withoutTotal = variables
        withoutTotal["PARTS_TOTAL"] = nil   // the tasks take N from SLURM_ARRAY_TASK_COUNT
        try runSlurmTasks(n: n, variables: withoutTotal)
        let made = try FileManager.default.contentsOfDirectory(atPath: parts).filter { $0.hasPrefix("part-") }.sorted()
        XCTAssertEqual(made, ["part-0", "part-1", "part-2"])
        // part K holds shards floor(K·5/3) ..< floor((K+1)·5/3): 0..<1, 1..<3, 3..<5
        XCTAssertEqual(try clusterShards(path(scratch, "parts/part-0")).count, 1)
        XCTAssertEqual(try clusterShards(path(scratch, "parts/part-1")).count, 2)
        XCTAssertEqual(try clusterShards(path(scratch, "parts/part-2")).count, 2)

        var r = try runSlurmMerge(variables: variables)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        let shards = try clusterShards(run)
        XCTAssertEqual(shards.count, 5)
        for shard in shards {
            XCTAssertGreaterThanOrEqual(clusterLinkCount(path(URL(fileURLWithPath: run), shard)), 2,
                                        "\(shard) is hard-linked from its part (same file system)")
        }
        try assertSameAsOneRun(run, data: data.path, options: options, environment: ["SLURM_CPUS_PER_TASK": "1"])

        // The same merge again: nothing to do, success.
        r = try runSlurmMerge(variables: variables)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stderr.contains("already"), "the second merge says it has nothing to do: " + r.stderr)

        // merge.sbatch with PARTS_TOTAL counts the part directories before merging.
        r = try runSlurmMerge(variables: variables.merging(["PARTS_TOTAL": "4", "RUN": path(scratch, "merged-4")]) { $1 })
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("expected PARTS_TOTAL=4"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path(scratch, "merged-4")))
    }

    /// N larger than the number of shards S: some parts are empty, and the merge is still the run.
    func testClusterRecipeSlurmArrayWithMorePartsThanShards() throws {
        let data = try classFolders()
        let parts = path(scratch, "parts"), run = path(scratch, "merged")
        let n = 4
        let options = ["--shard-size", "2"]   // 3 shards for 4 parts: part 0 holds shards 0..<0
        let variables = ["REFRACT": Self.binary.path, "MODEL": tinyModel, "DATA": data.path, "PARTS": parts, "RUN": run,
                         "EXTRA": options.joined(separator: " ")]
        try runSlurmTasks(n: n, variables: variables)
        XCTAssertEqual(try clusterShards(path(scratch, "parts/part-0")).count, 0)
        let r = try runSlurmMerge(variables: variables.merging(["PARTS_TOTAL": "\(n)"]) { $1 })
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertEqual(try clusterShards(run).count, 3)
        try assertSameAsOneRun(run, data: data.path, options: options, environment: ["SLURM_CPUS_PER_TASK": "1"])
    }

    /// A task killed midway and started again (a requeue or a resubmission) continues its part; a
    /// task of a complete part exits 0 at once, changing nothing; the parts still merge to the run.
    func testClusterRecipeRestartedSlurmTaskContinuesThenExitsAtOnce() throws {
        let data = try classFolders()
        let parts = path(scratch, "parts"), run = path(scratch, "merged")
        let n = 2
        let options = ["--shard-size", "1", "--batch-size", "1"]   // part 1 holds shards 2..<5
        let variables = ["REFRACT": Self.binary.path, "MODEL": tinyModel, "DATA": data.path, "PARTS": parts, "RUN": run,
                         "EXTRA": options.joined(separator: " ")]
        // REFRACT_FAULT_AFTER_SHARDS: refract kills itself (SIGKILL) after one shard, as a node failure would.
        let killed = try clusterRunAll([slurmTask(1, of: n, variables: variables.merging(["REFRACT_FAULT_AFTER_SHARDS": "1"]) { $1 })])[0].run
        XCTAssertNotEqual(killed.status, 0, "the task was killed: \(killed.stdout)\n\(killed.stderr)")
        XCTAssertEqual(try clusterShards(path(scratch, "parts/part-1")).count, 1, "the killed task wrote one shard")
        let manifest = URL(fileURLWithPath: path(scratch, "parts/part-1/manifest.json"))

        try runSlurmTasks(n: n, tasks: [1], variables: variables)      // the requeued task: resumes
        XCTAssertEqual(try clusterShards(path(scratch, "parts/part-1")).count, 3)
        let complete = try Data(contentsOf: manifest)
        let shard = path(scratch, "parts/part-1/shard-00004.safetensors")
        let modified = try FileManager.default.attributesOfItem(atPath: shard)[.modificationDate] as? Date

        try runSlurmTasks(n: n, tasks: [1], variables: variables)      // once more: complete, exits 0
        XCTAssertEqual(try Data(contentsOf: manifest), complete, "a complete part is left as it is")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: shard)[.modificationDate] as? Date, modified)

        try runSlurmTasks(n: n, tasks: [0], variables: variables)
        let r = try runSlurmMerge(variables: variables)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        try assertSameAsOneRun(run, data: data.path, options: options, environment: ["SLURM_CPUS_PER_TASK": "1"])
    }

    // MARK: Kubernetes

    /// The documents of a YAML file (split at `---` lines).
    private func yamlDocuments(_ text: String) -> [String] {
        var docs: [[Substring]] = [[]]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingCharacters(in: .whitespaces) == "---" { docs.append([]) } else { docs[docs.count - 1].append(line) }
        }
        return docs.map { $0.joined(separator: "\n") }.filter { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
    }

    /// A scalar without quotes or a trailing comment.
    private func yamlScalar(_ raw: Substring) -> String {
        var v = raw.trimmingCharacters(in: .whitespaces)
        if v.hasPrefix("\""), let end = v.dropFirst().firstIndex(of: "\"") { return String(v[v.index(after: v.startIndex)..<end]) }
        if let hash = v.range(of: " #") { v = String(v[..<hash.lowerBound]) }
        return v.trimmingCharacters(in: .whitespaces)
    }

    /// The value of the first `key: value` line of a document.
    private func yamlValue(_ doc: String, _ key: String) -> String? {
        for line in doc.split(separator: "\n") {
            let t = line.drop { $0 == " " }
            if t.hasPrefix(key + ":") { return yamlScalar(t.dropFirst(key.count + 1)) }
        }
        return nil
    }

    /// The `- name: X` / `value: Y` pairs of a document's env lists.
    private func yamlEnv(_ doc: String) -> [String: String] {
        let lines = doc.split(separator: "\n").map { $0.drop { $0 == " " } }
        var env: [String: String] = [:]
        for (i, line) in lines.enumerated() where line.hasPrefix("- name:") && i + 1 < lines.count && lines[i + 1].hasPrefix("value:") {
            env[yamlScalar(line.dropFirst("- name:".count))] = yamlScalar(lines[i + 1].dropFirst("value:".count))
        }
        return env
    }

    /// The container's shell command: the literal block scalar `- |` under `args:`.
    private func yamlShellCommand(_ doc: String) -> String? {
        let lines = doc.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        func indent(_ s: String) -> Int { s.prefix { $0 == " " }.count }
        guard let args = lines.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces) == "args:" }), args + 1 < lines.count,
              ["- |", "- |-"].contains(lines[args + 1].trimmingCharacters(in: .whitespaces)) else { return nil }
        let base = indent(lines[args + 1])
        var block: [String] = []
        for line in lines[(args + 2)...] {
            if line.trimmingCharacters(in: .whitespaces).isEmpty { block.append(""); continue }
            if indent(line) <= base { break }
            block.append(line)
        }
        guard let first = block.first(where: { !$0.isEmpty }) else { return nil }
        let strip = indent(first)
        return block.map { String($0.dropFirst(min(strip, indent($0)))) }.joined(separator: "\n")
    }

    /// The Kubernetes recipe end to end: the Indexed Job's container command run once per index
    /// (JOB_COMPLETION_INDEX), side by side, with the YAML's env and the paths overridden; then the
    /// merge Job's command; the merged run is the single run's, byte for byte.
    func testClusterRecipeKubernetesIndexedJobMergesToTheSingleRun() throws {
        let kube = Self.clusterExamples.appendingPathComponent("kubernetes")
        let text = try String(contentsOf: kube.appendingPathComponent("decompose-job.yaml"), encoding: .utf8)
        let docs = yamlDocuments(text)
        let claim = try XCTUnwrap(docs.first { $0.contains("kind: PersistentVolumeClaim") }, "no PersistentVolumeClaim")
        XCTAssertTrue(claim.contains("ReadWriteMany"), claim)
        let job = try XCTUnwrap(docs.first { $0.contains("kind: Job") && $0.contains("completionMode:") }, "no Indexed Job")
        XCTAssertEqual(yamlValue(job, "completionMode"), "Indexed")
        let completions = try XCTUnwrap(yamlValue(job, "completions").flatMap(Int.init), "no completions")
        XCTAssertNotNil(yamlValue(job, "parallelism").flatMap(Int.init), "no parallelism")
        XCTAssertTrue(yamlValue(job, "backoffLimitPerIndex") != nil || yamlValue(job, "backoffLimit") != nil, "no backoff limit")
        for fragment in ["requests:", "limits:", "cpu:", "memory:", "ghcr.io/YOUR-ORG/refract:latest"] {
            XCTAssertTrue(job.contains(fragment), "the Job lacks \(fragment)")
        }
        let env = yamlEnv(job)
        XCTAssertEqual(env["PARTS_TOTAL"], "\(completions)", "PARTS_TOTAL must equal completions")
        for name in ["MODEL", "DATA", "PARTS"] { XCTAssertNotNil(env[name], "the Job's env lacks \(name)") }
        let command = try XCTUnwrap(yamlShellCommand(job), "no `args: - |` block in the Job")
        for fragment in [" decompose ", "--part \"$JOB_COMPLETION_INDEX/$PARTS_TOTAL\"", "--continue", "--output \"$PARTS/part-$JOB_COMPLETION_INDEX\"",
                         "\"$MODEL\"", "$DATA"] {
            XCTAssertTrue(code(command).contains(fragment), "the Job's command runs no \(fragment):\n\(command)")
        }
        let mergeText = try String(contentsOf: kube.appendingPathComponent("merge-job.yaml"), encoding: .utf8)
        let mergeJob = try XCTUnwrap(yamlDocuments(mergeText).first { $0.contains("kind: Job") }, "no merge Job")
        let mergeCommand = try XCTUnwrap(yamlShellCommand(mergeJob), "no `args: - |` block in the merge Job")
        XCTAssertTrue(code(mergeCommand).contains(" merge --output \"$RUN\" \"$PARTS\"/part-*"), mergeCommand)
        let mergeEnv = yamlEnv(mergeJob)
        XCTAssertEqual(mergeEnv["PARTS"], env["PARTS"], "the merge Job reads the parts the Indexed Job writes")
        XCTAssertNotNil(mergeEnv["RUN"])

        // Here: at most 4 parts, every path on the volume moved into the scratch folder.
        let data = try classFolders()
        let parts = path(scratch, "parts"), run = path(scratch, "merged")
        let n = min(completions, 4)
        let options = ["--shard-size", "1", "--dtype", "float16"]
        let overrides = ["REFRACT": Self.binary.path, "MODEL": tinyModel, "DATA": data.path, "PARTS": parts, "RUN": run,
                         "EXTRA": options.joined(separator: " "), "PARTS_TOTAL": "\(n)"]
        let volume = yamlValue(job, "mountPath") ?? "/shared"
        let base = clusterEnvironment(env.merging(overrides) { $1 })
        for (name, value) in env where base[name] == value && value.hasPrefix(volume) {
            XCTFail("\(name)=\(value) would be used as it is: the test must override it")
        }
        let results = try clusterRunAll((0..<n).map {
            ClusterCommand(executable: "sh", args: ["-c", command], environment: base.merging(["JOB_COMPLETION_INDEX": "\($0)"]) { $1 },
                           label: "pod \($0) of \(n)")
        })
        for (label, r) in results { XCTAssertEqual(r.status, 0, "\(label): \(r.stdout)\n\(r.stderr)") }
        let merge = try finish(clusterStart("sh", ["-c", mergeCommand],
                                                 environment: clusterEnvironment(mergeEnv.merging(overrides) { $1 }), label: "merge Job"))
        XCTAssertEqual(merge.status, 0, merge.stdout + merge.stderr)
        try assertSameAsOneRun(run, data: data.path, options: options)

        // A retried pod of a complete part exits 0 at once.
        let again = try finish(clusterStart("sh", ["-c", command], environment: base.merging(["JOB_COMPLETION_INDEX": "0"]) { $1 },
                                                 label: "pod 0 retried"))
        XCTAssertEqual(again.status, 0, again.stdout + again.stderr)
    }
}
