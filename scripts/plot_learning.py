"""Success rate against training env steps for the trials of a sweep (scripts/sweep.py).

    python scripts/plot_learning.py docs/evidence/lift_lowdim docs/learning_lift_lowdim.png [TITLE]

Reads the run summaries <dir>/<label>_s<seed>.json (each run's in-run evaluations: iteration,
training env steps, successes out of episodes, 95% Wilson interval); plots every run with the
interval of each point, the per-label mean over seeds, and the pretrained policy (iteration 0,
the same episodes and weights in every run) with its interval, and, as the paper plots a
method, its mean over seeds with the spread (min–max over seeds) shaded; prints the table it
plotted as Markdown, every cell with its interval. When the trials started from more than one
pretrained policy (`pretrained_sha256`), every start gets its own band and the table adds, per
method, the mean change from each trial's own start in percentage points.
"""
import glob
import json
import os
import sys
import textwrap
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

root, out = sys.argv[1], sys.argv[2]
title = sys.argv[3] if len(sys.argv) > 3 else "Lift, low-dim state: fine-tuning a weak flow policy (2 demos)"
runs = defaultdict(dict)  # label -> seed -> [evaluation]
start_of = {}  # pretrained_sha256 -> the iteration-0 evaluation of a trial that started there
for path in sorted(glob.glob(os.path.join(root, "*_s*.json"))):
    summary = json.load(open(path))
    evaluations = sorted(summary["evaluations"], key=lambda e: e["env_steps"])
    runs[summary["label"]][summary["seed"]] = evaluations
    if evaluations and evaluations[0]["env_steps"] == 0:
        start_of.setdefault(summary.get("pretrained_sha256"), evaluations[0])
if not runs:
    sys.exit(f"no run summaries in {root}")
known_starts = set(start_of) - {None}
mixed_starts = len(known_starts) > 1
if mixed_starts:
    print(f"warning: the trials started from {len(known_starts)} different pretrained policies (pretrained_sha256); "
          "read each trial against its own start")
starts = {(e["successes"], e["episodes"]) for seeds in runs.values() for evs in seeds.values() for e in evs[:1]}
if len(starts) != 1 and not mixed_starts:
    print(f"warning: iteration-0 evaluations differ between runs: {sorted(starts)}")
first = next(iter(next(iter(runs.values())).values()))[0]
n, horizon = first["episodes"], first["horizon"]

colours = {"svgd": "tab:blue", "rldt": "tab:blue", "delta": "tab:orange", "reinflow": "tab:green", "fpo": "tab:red", "dppo": "tab:brown",
           "qam": "tab:pink", "svgd-c0.05": "tab:olive", "svgd-a1": "tab:purple"}
names = {"svgd": "RLDT (svgd)", "rldt": "RLDT (svgd)", "delta": "delta field (ablation)", "reinflow": "ReinFlow",
         "fpo": "FPO++", "dppo": "DPPO (flow, fixed σ)", "qam": "QAM (RLDT's critic)"}
fig, ax = plt.subplots(figsize=(7, 4.2))
for i, (digest, start) in enumerate(sorted(start_of.items(), key=lambda kv: kv[1]["success_rate"])):
    which = f" {digest[:8]}…" if mixed_starts else ""
    ax.axhspan(start["success_rate_low"], start["success_rate_high"], color="grey", alpha=0.15,
               hatch="//" if i % 2 else None, label=f"no fine-tuning{which} (95% CI, n={start['episodes']})")
    ax.axhline(start["success_rate"], color="grey", lw=1, ls="--" if i % 2 else "-")
cell = lambda e: f"{100 * e['success_rate']:.0f}% ({100 * e['success_rate_low']:.0f}–{100 * e['success_rate_high']:.0f})"
steps = sorted({e["env_steps"] for seeds in runs.values() for evs in seeds.values() for e in evs})
print("| run | " + " | ".join(f"{s:,}" for s in steps) + " |")
print("|---|" + "---|" * len(steps))
means = {}
for label, seeds in sorted(runs.items()):
    c = colours.get(label)
    for seed, evs in sorted(seeds.items()):
        xs = [e["env_steps"] for e in evs]
        ys = [e["success_rate"] for e in evs]
        err = [[e["success_rate"] - e["success_rate_low"] for e in evs], [e["success_rate_high"] - e["success_rate"] for e in evs]]
        ax.errorbar(xs, ys, yerr=err, color=c, alpha=0.3, lw=1, marker="o", ms=3, capsize=2)
        by_step = {e["env_steps"]: e for e in evs}
        print(f"| {label}, seed {seed} | " + " | ".join(cell(by_step[s]) if s in by_step else "–" for s in steps) + " |")
    common = sorted(set.intersection(*({e["env_steps"] for e in evs} for evs in seeds.values())))
    mean = [sum(next(e["success_rate"] for e in evs if e["env_steps"] == s) for evs in seeds.values()) / len(seeds) for s in common]
    means[label] = dict(zip(common, mean))
    name = names.get(label, label)
    seed_count = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    line, = ax.plot(common, mean, color=c, lw=2.5, label=f"{name}, mean of {seed_count}" if len(seeds) > 1 else f"{name}, {seed_count}")
    if len(seeds) > 1:
        rates = [[next(e["success_rate"] for e in evs if e["env_steps"] == s) for evs in seeds.values()] for s in common]
        ax.fill_between(common, [min(r) for r in rates], [max(r) for r in rates], color=line.get_color(), alpha=0.12)
for label, mean in sorted(means.items()):
    print(f"| **mean {label}** ({len(runs[label])} seed{'s' if len(runs[label]) > 1 else ''}) | " + " | ".join(f"{100 * mean[s]:.1f}%" if s in mean else "–" for s in steps) + " |")
if mixed_starts:  # mean over seeds of (rate at s − the same trial's rate at 0), in points
    for label, seeds in sorted(runs.items()):
        def change(s):
            deltas = [by[s]["success_rate"] - by[0]["success_rate"]
                      for by in ({e["env_steps"]: e for e in evs} for evs in seeds.values()) if s in by and 0 in by]
            return f"{100 * sum(deltas) / len(deltas):+.1f} pts" if deltas else "–"
        print(f"| **mean change from own start, {label}** ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}) | "
              + " | ".join(change(s) for s in steps) + " |")
ax.set_xlabel("training env steps (evaluation steps not counted)")
ax.set_ylabel(f"success rate ({n} episodes, horizon {horizon})")
ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=11)
# The whole range when the curves use it; otherwise up to the highest interval plus a margin
# (at least 0.5), with the legend in the upper right, clear of curves that stay low.
highest = max(e["success_rate_high"] for seeds in runs.values() for evs in seeds.values() for e in evs)
top = 1.0 if highest > 0.6 else max(0.5, round(highest + 0.1, 1))
ax.set_ylim(0, top)
ax.legend(loc="upper right" if top < 1.0 else "lower right", fontsize=8)
fig.tight_layout()
fig.savefig(out, dpi=120)
print(f"wrote {out} (cells: success rate over {n} episodes, 95% Wilson interval in brackets)")
