"""Is a base-policy build reproducible? Collects the same expert demonstrations twice and trains the same
recipe twice per thread count, each in a fresh ``apo`` process, and compares the results byte for byte.

A fresh process matters: torch seeds its global generator at random at start-up, so anything drawn before
``torch.manual_seed`` differs between processes (the base policy's initial weights did, until
``train_base_policy`` seeded them; docs/base_policy.md).

    python benchmarks/reproducibility.py             # ~6 min on 2 cores
    python benchmarks/reproducibility.py --steps 20  # quicker
    python benchmarks/reproducibility.py --digest runs/pin5/demos  # one collection's digest, to compare machines

Writes ``benchmarks/results/reproducibility.json`` and prints what matched. The demonstrations' digest and the
model md5s, with the machine's CPU model, tell whether another machine gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

import h5py
import numpy as np

from _common import RESULTS_DIR, machine_info

TASKS = ("pick-place-v3", "shelf-place-v3")


def apo(*args: str, threads: int | None = None) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(["apo", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:  # the progress bars stay hidden, the error does not
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"`apo {' '.join(args)}` failed (exit {done.returncode}):\n{tail}")


def dataset_digests(folder: Path) -> dict[str, str]:
    """SHA-1 of every HDF5 dataset's bytes, keyed by file and dataset name (attributes are not hashed)."""
    out: dict[str, str] = {}
    for path in sorted((folder / "episodes").glob("*.hdf5")):
        with h5py.File(path) as f:
            def visit(name, obj, stem=path.stem):
                if isinstance(obj, h5py.Dataset):
                    out[f"{stem}/{name}"] = hashlib.sha1(np.ascontiguousarray(obj[()]).tobytes()).hexdigest()
            f.visititems(visit)
    return out


def collection_digest(folder: Path) -> str:
    """One SHA-1 over every dataset digest of a collection: equal on two machines iff the bytes are."""
    digests = dataset_digests(folder)
    return hashlib.sha1("".join(f"{k}={digests[k]};" for k in sorted(digests)).encode()).hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demos-per-task", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="BC steps of each training run")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "reproducibility.json")
    parser.add_argument("--digest", type=Path, metavar="FOLDER",
                        help="only print the digest of an existing collection (e.g. a loop's demonstrations) and exit")
    args = parser.parse_args()
    if args.digest is not None:
        if not (args.digest / "episodes").is_dir():
            raise SystemExit(f"{args.digest} has no episodes/ folder: pass a folder written by apo collect-demos or apo collect")
        print(f"{args.digest}: digest {collection_digest(args.digest)}")
        return

    results: dict[str, object] = {"machine": machine_info(), "tasks": list(TASKS),
                                  "demos_per_task": args.demos_per_task, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("a", "b"):
            print(f"collecting demonstrations {name} ...", flush=True)
            apo("collect-demos", "--out", str(root / f"demos_{name}"), "--demos.tasks", *TASKS,
                "--demos.episodes-per-task", str(args.demos_per_task), "--env.goal-pin")
        a, b = dataset_digests(root / "demos_a"), dataset_digests(root / "demos_b")
        results["demos"] = {"datasets": len(a), "identical": sum(a[k] == b.get(k) for k in a),
                            "stats_identical": (root / "demos_a/stats.json").read_bytes()
                            == (root / "demos_b/stats.json").read_bytes(),
                            "digest": collection_digest(root / "demos_a")}  # to compare across machines

        runs: dict[str, dict[str, object]] = {}
        for threads in (1, 2):
            for rep in ("a", "b"):
                name = f"threads{threads}_{rep}"
                print(f"training {name} ...", flush=True)
                out = root / name
                apo("train", "--data", str(root / "demos_a"), "--out", str(out), "--recipe.tokenizer", "fast",
                    "--recipe.train.steps", str(args.steps), "--recipe.train.threads", str(threads), threads=threads)
                runs[name] = {"files": file_digests(out / "policy"), "losses": losses(out)}
        results["training"] = {
            f"threads{t}": {"identical_policy_files": runs[f"threads{t}_a"]["files"] == runs[f"threads{t}_b"]["files"],
                            "model_md5": runs[f"threads{t}_a"]["files"]["model.safetensors"],
                            "final_loss": runs[f"threads{t}_a"]["losses"][-1]}
            for t in (1, 2)}
        l1, l2 = np.asarray(runs["threads1_a"]["losses"]), np.asarray(runs["threads2_a"]["losses"])
        results["training"]["threads1_vs_2"] = {
            "identical_policy_files": runs["threads1_a"]["files"] == runs["threads2_a"]["files"],
            "max_abs_loss_difference": float(np.abs(l1 - l2).max())}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    d, t = results["demos"], results["training"]
    print(f"demonstrations: {d['identical']} of {d['datasets']} HDF5 datasets identical, "
          f"stats identical: {d['stats_identical']} (digest {d['digest'][:8]})")
    for k in ("threads1", "threads2"):
        print(f"training, {k}: two processes give identical policy files: {t[k]['identical_policy_files']} "
              f"(model md5 {t[k]['model_md5'][:8]}, final loss {t[k]['final_loss']:.6f})")
    print(f"training, 1 vs 2 threads: identical files {t['threads1_vs_2']['identical_policy_files']}, "
          f"largest logged-loss difference {t['threads1_vs_2']['max_abs_loss_difference']:.2e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
