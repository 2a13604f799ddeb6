"""Success rate against env steps for the runs of scripts/learning_evidence.

    python scripts/plot_learning.py runs/evidence docs/learning_lift_lowdim.png

Reads <dir>/pretrained.json and <dir>/<field>_s<seed>/eval_step_N.json (rldt-vision eval
--out) with the env steps of each checkpoint (checkpoints/step_N/finetune_state.json); plots
each run, the per-field mean, and the pretrained policy's rate with its 95% interval; prints
the table it plotted.
"""
import glob
import json
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

root, out = sys.argv[1], sys.argv[2]
pretrained = json.load(open(os.path.join(root, "pretrained.json")))
runs = defaultdict(dict)  # field -> seed -> [(env_steps, rate, n)]
for run in sorted(glob.glob(os.path.join(root, "*_s*"))):
    field, seed = os.path.basename(run).rsplit("_s", 1)
    points = [(0, pretrained["success_rate"], pretrained["episodes"])]
    for path in glob.glob(os.path.join(run, "eval_step_*.json")):
        step = os.path.basename(path)[len("eval_") : -len(".json")]
        state = json.load(open(os.path.join(run, "checkpoints", step, "finetune_state.json")))
        report = json.load(open(path))
        points.append((state["env_steps"], report["success_rate"], report["episodes"]))
    runs[field][seed] = sorted(points)

colours = {"svgd": "tab:blue", "delta": "tab:orange", "svgd-c0.05": "tab:green", "svgd-a1": "tab:purple"}
fig, ax = plt.subplots(figsize=(7, 4.2))
lo, hi = pretrained["success_rate_ci95"]
ax.axhspan(lo, hi, color="grey", alpha=0.15, label=f"no fine-tuning (95% CI, n={pretrained['episodes']})")
ax.axhline(pretrained["success_rate"], color="grey", lw=1)
print(f"pretrained: {pretrained['success_rate']:.3f} [{lo:.3f}, {hi:.3f}] (n={pretrained['episodes']})")
for field, seeds in sorted(runs.items()):
    c = colours.get(field, None)
    for seed, points in sorted(seeds.items()):
        xs, ys, _ = zip(*points)
        ax.plot(xs, ys, color=c, alpha=0.35, lw=1, marker="o", ms=3)
        print(f"{field} seed {seed}: " + ", ".join(f"{x}: {y:.2f}" for x, y, _ in points))
    common = sorted(set.intersection(*(set(x for x, _, _ in p) for p in seeds.values())))
    means = [sum(dict((x, y) for x, y, _ in p)[s] for p in seeds.values()) / len(seeds) for s in common]
    label = "RLDT (svgd)" if field == "svgd" else "delta field (ablation)" if field == "delta" else field
    ax.plot(common, means, color=c, lw=2.5, label=f"{label}, mean of {len(seeds)} seeds")
ax.set_xlabel("env steps")
ax.set_ylabel(f"success rate ({pretrained['episodes']} episodes, horizon 100)")
ax.set_title("Lift, low-dim state: fine-tuning a weak flow policy (2 demos)")
ax.set_ylim(0, 1)
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(out, dpi=120)
print(f"wrote {out}")
