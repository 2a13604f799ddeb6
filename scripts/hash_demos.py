#!/usr/bin/env python3
"""Content hashes of a Robomimic-layout demo file, to tell whether two collections agree.

Used for the provenance of a pinned pretrained start
(`docs/evidence/square_state_pretrained/provenance.json`, field `data`): if a rebuild's
hashes match the recorded ones, collection reproduced and any difference in the weights came
from pretraining; if they differ, collection diverged.

Hashing (the `data.hashing` line of that file):
- demos `data/demo_0 .. data/demo_{N-1}` in index order (not HDF5's name order, where
  demo_10 sorts before demo_2);
- actions: sha256 over each demo's `actions` as the raw bytes of their stored type (f64 as
  `collect` writes them), demos concatenated;
- obs: sha256 over each demo's `obs/<key>` for every key in sorted order, raw bytes likewise.

Usage: .venv/bin/python scripts/hash_demos.py data/square_lowdim.hdf5 [--compare PROVENANCE]
Prints JSON; with --compare, exits 1 when a hash or the demo count differs from the file's
`data` section.
"""
import argparse
import hashlib
import json
import sys

import h5py
import numpy as np


def demo_names(data_group, path):
    """`demo_0 .. demo_{N-1}` in index order; a name that is not `demo_<int>` is an error."""
    indices = []
    for name in data_group.keys():
        prefix, _, index = name.partition("_")
        if prefix != "demo" or not index.isdigit():
            sys.exit(f"{path}: group data/{name} is not named demo_<index>")
        indices.append(int(index))
    indices.sort()
    if indices != list(range(len(indices))):
        sys.exit(f"{path}: data/ holds demos {indices[:5]}…, not demo_0..demo_{len(indices) - 1}")
    return [f"demo_{i}" for i in indices]


def hash_demos(path):
    """{demos, actions_sha256, obs_sha256} of the file at `path`."""
    actions_hash = hashlib.sha256()
    obs_hash = hashlib.sha256()
    with h5py.File(path, "r") as file:
        if "data" not in file:
            sys.exit(f"{path}: no group `data`")
        names = demo_names(file["data"], path)
        for name in names:
            demo = file["data"][name]
            for key in ("actions", "obs"):
                if key not in demo:
                    sys.exit(f"{path}: data/{name} has no `{key}`")
            actions_hash.update(np.ascontiguousarray(demo["actions"][()]).tobytes())
            for key in sorted(demo["obs"].keys()):
                obs_hash.update(np.ascontiguousarray(demo["obs"][key][()]).tobytes())
    return {
        "demos": len(names),
        "actions_sha256": actions_hash.hexdigest(),
        "obs_sha256": obs_hash.hexdigest(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="demo file (HDF5, Robomimic layout)")
    parser.add_argument("--compare", metavar="PROVENANCE", help="provenance.json whose `data` to compare with")
    args = parser.parse_args()
    hashes = hash_demos(args.file)
    print(json.dumps(hashes, indent=1))
    if args.compare:
        with open(args.compare) as f:
            recorded = json.load(f).get("data")
        if not isinstance(recorded, dict):
            sys.exit(f"{args.compare}: no `data` object to compare with")
        differing = [k for k in hashes if recorded.get(k) != hashes[k]]
        if differing:
            for key in differing:
                print(f"differs: {key}: {hashes[key]} here, {recorded.get(key)} in {args.compare}")
            sys.exit(1)
        print(f"same as {args.compare}: demos, actions and observations")


if __name__ == "__main__":
    main()
