"""Sweeps of fine-tuning trials on Ray: a grid (benchmarks x methods x grid axes x seeds), each
trial one `rldt-vision finetune` process with its declared CPUs (and GPUs), its own run
directory, on a local Ray instance by default or an existing Ray cluster (--address).

    scripts/sweep configs/sweeps/lift_lowdim.json                  # local Ray, all cores
    scripts/sweep configs/sweeps/lift_lowdim.json --address auto   # the cluster this node joined
    scripts/sweep GRID --report-only                               # table and plot of what exists

The grid file (configs/sweeps/*.json; every key is listed in docs/sweeps.md):
  benchmarks[]: name (evidence goes to <evidence>/<name>/), task, pretrained (run or checkpoint
                dir), prepare[] ({creates, command}: rldt-vision commands run once on the
                driver when `creates` is missing: collect, pretrain), methods
                {label: {config, set}}, plot (PNG path), title, table_in (a Markdown file whose
                `<!-- sweep table NAME -->` … `<!-- end sweep table NAME -->` lines get the table)
  seeds[], grid {abbrev: {key, values[]}} (label suffix "-<abbrev><value>"), set {key: value}
  (every trial), resources {cpus, gpus}, runs (run directories), evidence (summaries root),
  record (write the rerun recording; default false).
Top-level keys are defaults for every benchmark; a benchmark's own keys override them.

Trials are submitted seed by seed (every method's seed 0 before any seed 1), so the evidence of
a sweep stopped part-way stays balanced across methods. A trial is done when its summary <evidence>/<benchmark>/<label>_s<seed>.json exists (committed:
evidence accumulates across machines and sessions); done trials are skipped. A stopped trial
whose run directory is still there resumes (`--resume`). A trial that fails is reported with
the tail of its log and the sweep carries on; run the sweep again to retry it. Each trial's
summary holds its resolved config, every in-run evaluation (iteration, training env steps,
successes/episodes, 95% Wilson interval; `reused_from` when the start evaluation was the
checkpoint's stored one, copied: docs/finetuning.md), the commit, the machine and the SHA-256 of the
pretrained EMA weights (trials that started from different pretrained policies, e.g. ones
pretrained on another machine, are flagged by the report).

On a cluster every node needs this repository at the same path, set up (scripts/setup) and
built; the pretrained checkpoint travels with the trial through Ray's object store when a
node lacks it, and the summary travels back to the driver, so no shared filesystem is needed.
"""
import argparse
import copy
import glob
import hashlib
import json
import os
import platform
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY_KEYS = ("iteration", "env_steps", "episodes", "successes", "success_rate", "success_rate_low",
                "success_rate_high", "first_seed", "horizon")


def fail(message):
    sys.exit(f"[sweep] error: {message}")


# ---- The grid ----------------------------------------------------------------------------------

def load_grid(path):
    try:
        grid = json.load(open(path))
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")
    defaults = {k: v for k, v in grid.items() if k != "benchmarks"}
    benchmarks = grid.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        fail(f"{path}: field `benchmarks` must be a non-empty list")
    out = []
    for i, bench in enumerate(benchmarks):
        merged = {"seeds": [0], "grid": {}, "set": {}, "resources": {"cpus": 1, "gpus": 0}, "prepare": [],
                  "runs": "runs/sweeps", "evidence": "docs/evidence", "record": False}
        merged.update(copy.deepcopy(defaults))
        merged.update(copy.deepcopy(bench))
        for key in ("name", "task", "pretrained", "methods"):
            if key not in merged:
                fail(f"{path}: benchmarks[{i}] lacks field `{key}`")
        for label, method in merged["methods"].items():
            if "config" not in method:
                fail(f"{path}: benchmarks[{i}].methods.{label} lacks field `config`")
        out.append(merged)
    return out


def set_path(config, dotted, value, where):
    """config[a][b][c] = value for "a.b.c"; the path must exist (a typo is an error)."""
    node = config
    keys = dotted.split(".")
    for key in keys[:-1]:
        if not isinstance(node, dict) or key not in node:
            fail(f"{where}: `{dotted}` is not a field of the config (no `{key}`)")
        node = node[key]
    if not isinstance(node, dict) or keys[-1] not in node:
        fail(f"{where}: `{dotted}` is not a field of the config")
    node[keys[-1]] = value


def trials_of(bench, seeds=None, methods=None):
    """Every trial of a benchmark: (label, seed, method, resolved config)."""
    axes = [[]]
    for abbrev, axis in bench["grid"].items():
        axes = [a + [(abbrev, axis["key"], v)] for a in axes for v in axis["values"]]
    trials = []
    for method_name, method in bench["methods"].items():
        if methods and method_name not in methods:
            continue
        path = os.path.join(ROOT, method["config"])
        try:
            base = json.load(open(path))
        except (OSError, ValueError) as e:
            fail(f"{method['config']}: {e}")
        for axis_values in axes:
            label = method_name + "".join(f"-{abbrev}{value}" for abbrev, _, value in axis_values)
            for seed in bench["seeds"]:
                if seeds is not None and seed not in seeds:
                    continue
                config = copy.deepcopy(base)
                where = f"benchmark {bench['name']}, method {method_name}"
                for key, value in {**bench["set"], **method.get("set", {})}.items():
                    set_path(config, key, value, where)
                for _, key, value in axis_values:
                    set_path(config, key, value, where)
                config["name"] = f"{bench['name']}_{label}_s{seed}"
                config["seed"] = seed
                config["pretrained"] = bench["pretrained"]
                trials.append((label, seed, method_name, config))
    # Seed-major: every method's and grid point's seed 0 before any seed 1, so a sweep stopped
    # part-way (a session's end, a lost node) leaves each method with the same seeds done.
    trials.sort(key=lambda trial: bench["seeds"].index(trial[1]))
    return trials


# ---- One trial, on whichever node Ray chose -----------------------------------------------------

def read_checkpoint(path):
    """The files of a pretrained checkpoint (a run dir resolves to checkpoints/latest)."""
    latest = os.path.join(path, "checkpoints", "latest")
    if os.path.exists(latest):
        path = os.path.join(path, "checkpoints", open(latest).read().strip())
    files = {}
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            files[name] = open(full, "rb").read()
    return files


def final_checkpoint(run_dir, iterations):
    return os.path.join(run_dir, "checkpoints", "step_%08d" % iterations)


def run_trial(trial, pretrained_ref, board):
    """Runs (or resumes) one fine-tune and returns its summary, or {"failed": ...}."""
    import ray

    os.chdir(trial["root"])
    config = trial["config"]
    run_dir = trial["run_dir"]
    os.makedirs(run_dir, exist_ok=True)
    if not os.path.exists(config["pretrained"]):
        # This node lacks the pretrained checkpoint: materialise the shipped copy.
        local = os.path.join(run_dir, "pretrained_checkpoint")
        os.makedirs(local, exist_ok=True)
        for name, data in ray.get(pretrained_ref).items():
            with open(os.path.join(local, name), "wb") as f:
                f.write(data)
        config = dict(config, pretrained=local)
    config_path = os.path.join(run_dir, "trial_config.json")
    iterations = config["schedule"]["iterations"]
    log_path = os.path.join(run_dir, "trial.log")
    command = [trial["bin"], "finetune", "--task", trial["task"], "--run-dir", run_dir,
               "--threads", str(trial["threads"])]
    if not trial["record"]:
        command.append("--no-record")
    started = time.time()
    if not os.path.isdir(final_checkpoint(run_dir, iterations)):  # visible only once complete
        if os.path.exists(os.path.join(run_dir, "checkpoints", "latest")):
            command.append("--resume")
        else:
            with open(config_path, "w") as f:
                json.dump(config, f, indent=2)
            with open(os.path.join(run_dir, "commit"), "w") as f:
                f.write(trial["commit"] + "\n")
            command += ["--config", config_path]
        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(trial["id"], run_dir, iterations, board, stop), daemon=True)
        watcher.start()
        with open(log_path, "ab") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {platform.node()}: {' '.join(command)}\n".encode())
            log.flush()
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=trial["root"])
        stop.set()
        watcher.join()
        if code != 0:
            tail = open(log_path, "rb").read()[-2000:].decode("utf-8", "replace")
            return {"failed": True, "id": trial["id"], "returncode": code, "log": log_path, "log_tail": tail,
                    "node": platform.node()}
    evaluations = []
    for path in sorted(glob.glob(os.path.join(run_dir, "evaluations", "iteration_*.json"))):
        e = json.load(open(path))
        point = {k: e[k] for k in SUMMARY_KEYS}
        if e.get("reused_from"):  # the checkpoint's stored start evaluation, copied (same episodes)
            point["reused_from"] = os.path.relpath(e["reused_from"], trial["root"])
        evaluations.append(point)
    commit_file = os.path.join(run_dir, "commit")
    commit = open(commit_file).read().strip() if os.path.exists(commit_file) else trial["commit"]
    run_config = json.load(open(os.path.join(run_dir, "config.json")))
    run_config["pretrained"] = trial["config"]["pretrained"]  # the driver's name, not a node's copy
    return {
        "benchmark": trial["benchmark"], "label": trial["label"], "method": trial["method"],
        "algorithm": run_config.get("algorithm", "rldt"),
        "field": run_config.get("actor", {}).get("objective", {}).get("field"),
        "seed": trial["seed"], "config": run_config, "evaluations": evaluations, "commit": commit,
        "pretrained_sha256": trial["pretrained_sha256"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "node": platform.node(),
        "cpus": trial["cpus"], "gpus": trial["gpus"], "wall_s": round(time.time() - started, 1),
    }


def commit_warnings(commit, binary):
    """What would make the summaries' `commit` field untrue: tracked files changed since that
    commit, or a binary older than it (built from an earlier commit)."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    warnings = []
    if git("status", "--porcelain", "--untracked-files=no"):
        warnings.append(f"tracked files differ from commit {commit[:7]}, which the summaries record")
    # The newest commit up to `commit` that changed what the binary is built from.
    code_changed = int(git("log", "-1", "--format=%ct", commit, "--", "src", "encoders", "datasets", "Cargo.toml", "Cargo.lock") or 0)
    if os.path.exists(binary) and os.path.getmtime(binary) < code_changed:
        warnings.append(f"{binary} is older than the code of commit {commit[:7]}, which the summaries record: rebuild it (scripts/setup)")
    return warnings


def time_left(elapsed_s, iterations_run, iterations_left):
    """"~N min left" at the pace of the iterations this process ran (evaluation iterations
    included, so an early estimate is rough); "" before the first one finished."""
    if iterations_run <= 0:
        return ""
    return f", ~{round(elapsed_s / iterations_run * iterations_left / 60)} min left"


def watch(trial_id, run_dir, iterations, board, stop):
    """Reports the trial's latest iteration and evaluation, and the time left at its pace so
    far, to the driver's progress board."""
    started, first_step = time.time(), None
    while not stop.wait(5.0):
        last = sorted(glob.glob(os.path.join(run_dir, "evaluations", "iteration_*.json")))
        line = None
        try:
            with open(os.path.join(run_dir, "metrics.jsonl")) as f:
                for line in f:
                    pass
            step = json.loads(line)["step"] + 1 if line else 0
        except (OSError, ValueError, KeyError):
            step = 0
        evaluation = None
        if last:
            try:
                e = json.load(open(last[-1]))
                evaluation = f"{e['successes']}/{e['episodes']} at {e['env_steps']:,} steps"
            except (OSError, ValueError, KeyError):
                pass
        first_step = step if first_step is None else first_step
        eta = time_left(time.time() - started, step - first_step, iterations - step)
        board.update.remote(trial_id, f"iteration {step}/{iterations}" + (f", eval {evaluation}" if evaluation else "") + eta)


# ---- The driver ----------------------------------------------------------------------------------

def prepare(bench, binary):
    for step in bench["prepare"]:
        if os.path.exists(os.path.join(ROOT, step["creates"])):
            continue
        print(f"[sweep] {bench['name']}: preparing {step['creates']}: rldt-vision {' '.join(step['command'])}", flush=True)
        code = subprocess.call([binary] + step["command"], cwd=ROOT)
        if code != 0:
            fail(f"benchmark {bench['name']}: `rldt-vision {' '.join(step['command'])}` exited {code}")


def write_summary(path, summary):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, path)


def report(bench):
    directory = os.path.join(ROOT, bench["evidence"], bench["name"])
    if not glob.glob(os.path.join(directory, "*_s*.json")):
        print(f"[sweep] {bench['name']}: no finished trials yet")
        return
    plot = os.path.join(ROOT, bench.get("plot", os.path.join(bench["evidence"], bench["name"], "learning.png")))
    title = bench.get("title", bench["name"])
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot_learning.py"), directory, plot, title],
                            stdout=subprocess.PIPE, text=True)
    print(result.stdout, end="", flush=True)
    if result.returncode == 0 and bench.get("table_in"):
        table = [line for line in result.stdout.splitlines() if line.startswith("|")]
        write_table_into(os.path.join(ROOT, bench["table_in"]), bench["name"], table)


def write_table_into(path, name, table):
    """Replaces the lines between `<!-- sweep table NAME -->` and `<!-- end sweep table NAME -->`
    in a Markdown file (the README) with the benchmark's table, so the committed page always
    shows every committed summary. A file without both markers is left as it is, with a warning."""
    begin, end = f"<!-- sweep table {name} -->", f"<!-- end sweep table {name} -->"
    try:
        lines = open(path).read().split("\n")
    except OSError as e:
        print(f"[sweep] warning: table_in {path}: {e}; table not written there", flush=True)
        return
    if begin not in lines or end not in lines or lines.index(begin) > lines.index(end):
        print(f"[sweep] warning: {path} lacks the lines `{begin}` and `{end}` (in that order); "
              "table not written there", flush=True)
        return
    lines[lines.index(begin) + 1:lines.index(end)] = table
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)
    print(f"[sweep] wrote the table into {path}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("grid", help="configs/sweeps/<name>.json")
    ap.add_argument("--address", help="an existing Ray cluster (`auto`, or host:port of its head); default: a local Ray")
    ap.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    ap.add_argument("--seeds", help="only these seeds (comma-separated)")
    ap.add_argument("--methods", help="only these methods (comma-separated)")
    ap.add_argument("--benchmarks", help="only these benchmarks (comma-separated)")
    ap.add_argument("--report-only", action="store_true", help="print the table and write the plot of finished trials")
    ap.add_argument("--dry-run", action="store_true", help="list the trials and whether each is done")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "rldt-vision"))
    a = ap.parse_args()

    benches = load_grid(a.grid)
    if a.benchmarks:
        wanted = set(a.benchmarks.split(","))
        benches = [b for b in benches if b["name"] in wanted]
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else None
    methods = set(a.methods.split(",")) if a.methods else None
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    for warning in commit_warnings(commit, a.bin):
        print(f"[sweep] warning: {warning}", flush=True)

    pending, skipped = [], 0
    for bench in benches:
        for label, seed, method, config in trials_of(bench, seeds, methods):
            summary_path = os.path.join(ROOT, bench["evidence"], bench["name"], f"{label}_s{seed}.json")
            trial_id = f"{bench['name']}/{label}_s{seed}"
            if os.path.exists(summary_path):
                skipped += 1
                if a.dry_run:
                    print(f"[sweep] done     {trial_id}")
                continue
            if a.dry_run:
                print(f"[sweep] to run   {trial_id}")
            pending.append((bench, label, seed, method, config, summary_path, trial_id))
    if a.report_only or a.dry_run:
        for bench in benches:
            if a.report_only:
                report(bench)
        return 0
    print(f"[sweep] {len(pending)} trials to run, {skipped} done already (their summaries exist)", flush=True)
    if not pending:
        for bench in benches:
            report(bench)
        return 0
    if not os.access(a.bin, os.X_OK):
        fail(f"{a.bin}: no rldt-vision binary (scripts/setup builds it)")
    for bench in {b["name"]: b for b, *_ in pending}.values():
        prepare(bench, a.bin)

    import ray

    if a.address:
        ray.init(address=a.address, log_to_driver=False)
    else:
        ray.init(num_cpus=a.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"[sweep] Ray: {ray.cluster_resources().get('CPU', 0):.0f} CPUs, {ray.cluster_resources().get('GPU', 0):.0f} GPUs", flush=True)

    @ray.remote(num_cpus=0)
    class Board:
        def __init__(self):
            self.lines = {}

        def update(self, trial_id, line):
            self.lines[trial_id] = line

        def snapshot(self):
            return dict(self.lines)

    board = Board.remote()
    remote_trial = ray.remote(run_trial)
    pretrained = {}
    futures = {}
    for bench, label, seed, method, config, summary_path, trial_id in pending:
        source = os.path.join(ROOT, bench["pretrained"])
        if source not in pretrained:
            if not os.path.isdir(source):
                fail(f"benchmark {bench['name']}: pretrained `{bench['pretrained']}` does not exist (its `prepare` steps make it)")
            files = read_checkpoint(source)
            digest = hashlib.sha256(files.get("ema.safetensors", b"")).hexdigest()
            pretrained[source] = (ray.put(files), digest)
        cpus, gpus = bench["resources"].get("cpus", 1), bench["resources"].get("gpus", 0)
        trial = {
            "id": trial_id, "benchmark": bench["name"], "label": label, "seed": seed, "method": method,
            "task": bench["task"], "config": config, "root": ROOT, "bin": a.bin, "commit": commit,
            "run_dir": os.path.join(ROOT, bench["runs"], bench["name"], f"{label}_s{seed}"),
            "threads": max(1, int(cpus)), "cpus": cpus, "gpus": gpus, "record": bench["record"],
            "pretrained_sha256": pretrained[source][1],
        }
        ref = remote_trial.options(num_cpus=cpus, num_gpus=gpus, max_retries=0).remote(trial, pretrained[source][0], board)
        futures[ref] = (trial_id, summary_path)

    total, finished, failed = len(futures), 0, []
    started, last_status = time.time(), 0.0
    while futures:
        ready, _ = ray.wait(list(futures), num_returns=1, timeout=10.0)
        for ref in ready:
            trial_id, summary_path = futures.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # the worker process died, the node left, ...
                result = {"failed": True, "id": trial_id, "returncode": None, "log_tail": repr(e), "log": None}
            finished += 1
            if result.get("failed"):
                failed.append(trial_id)
                print(f"[sweep] FAILED {trial_id} (exit {result['returncode']}, log {result.get('log')}):\n"
                      + "\n".join("    " + l for l in result["log_tail"].strip().splitlines()[-8:]), flush=True)
            else:
                write_summary(summary_path, result)
                cells = ", ".join(f"{e['env_steps']:,}: {e['successes']}/{e['episodes']}" for e in result["evaluations"])
                print(f"[sweep] done {trial_id} in {result['wall_s']:.0f} s on {result['node']}: {cells}", flush=True)
        if time.time() - last_status >= 30.0 or ready:
            last_status = time.time()
            lines = ray.get(board.snapshot.remote())
            running = [f"{t}: {lines[t]}" for t, _ in futures.values() if t in lines]
            print(f"[sweep] {finished}/{total} finished ({len(failed)} failed), {len(futures)} left, "
                  f"{time.time() - started:.0f} s" + "".join("\n    " + r for r in running), flush=True)
    for bench in benches:
        report(bench)
    if failed:
        print(f"[sweep] {len(failed)} trials failed: {', '.join(failed)}; run the sweep again to retry them")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
