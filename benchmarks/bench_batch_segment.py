"""Cases per minute of ``airway segment --input-dir`` on a folder of phantoms, with and without the overlap.

Makes N phantoms (core.phantom.make_phantom, default 10 of 48^3 at 2.5 x 2.5 x 3.0 mm: the demo model's
training grid, resources/models/demo_wingsnet.json) and runs the command as typed, each configuration in its
own process, timed from start to exit (model load and worker start included, as a user waits for them):

- the shipped demo model and region growing, each with the overlap (``--loaders 1 --exporters 1``, the
  default) and without (``--loaders 0 --exporters 0``);
- two parts side by side (``--num-parts 2 --part-id 0/1``, two processes at once) against one process.

Prints wall seconds, cases per minute, the peak resident memory of the process tree (the command and its
worker, sampled every 50 ms) and the ratios. One warm-up run first fills the engine's export cache.

    .venv/bin/python benchmarks/bench_batch_segment.py [--cases 10] [--size 48] [--repeat 1] [--model CKPT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tree_rss(pids: list[int]) -> int:
    import psutil

    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
    return total


def run(commands: list[list[str]]) -> tuple[float, int, list[int], list[dict[str, Any]]]:
    """Start ``commands`` at once; (wall seconds until all exited, peak RSS of their trees, exit codes,
    the cases' JSON results)."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "main.py", *c], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in commands
    ]
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss([p.pid for p in procs]))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    codes, cases = [], []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            sys.stderr.write(err.decode(errors="replace")[-2000:])
        codes.append(p.returncode)
        cases += [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    return wall, peak[0], codes, cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--size", type=int, default=48, help="phantom side in voxels (spacing 2.5 x 2.5 x 3.0 mm)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (the median is printed)")
    ap.add_argument("--model", default=str(ROOT / "resources" / "models" / "demo_wingsnet.pt"))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from core.io import write_volume
    from core.phantom import make_phantom

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        images = tmp / "images"
        for i in range(args.cases):
            write_volume(make_phantom(args.size, spacing=(2.5, 2.5, 3.0), seed=i).ct, images / f"ph{i:03d}_0000.nii.gz")
        model = ["--model", args.model, "--device", args.device]
        rg = ["--method", "region-growing"]
        overlap = ["--loaders", "1", "--exporters", "1"]
        seq = ["--loaders", "0", "--exporters", "0"]

        def segment(out: str, *extra: str) -> list[str]:
            return ["segment", "--input-dir", str(images), "--output-dir", str(tmp / out), "-q", "--json", *extra]

        run([segment("warmup", *model)])  # the engine's export cache, the OS file cache
        configs: dict[str, list[list[str]]] = {
            "model, overlap (1 loader, 1 exporter)": [segment("m1", *model, *overlap)],
            "model, sequential (0 / 0)": [segment("m0", *model, *seq)],
            "region growing, overlap": [segment("r1", *rg, *overlap)],
            "region growing, sequential": [segment("r0", *rg, *seq)],
            "model, 2 parts side by side": [
                segment("p2", *model, "--num-parts", "2", "--part-id", str(i)) for i in range(2)
            ],
        }
        results: dict[str, tuple[float, int]] = {}
        stages: dict[str, dict[str, float]] = {}
        for name, commands in configs.items():
            walls, peaks = [], []
            for _ in range(args.repeat):
                outs = {c[c.index("--output-dir") + 1] for c in commands}
                for o in outs:
                    shutil.rmtree(o, ignore_errors=True)
                wall, peak, codes, done = run(commands)
                if any(codes) or len(done) != args.cases:
                    print(f"{name}: exit {codes}, {len(done)} cases", file=sys.stderr)
                    return 1
                stages[name] = {k: statistics.mean(c["timings"][k] for c in done) for k in done[0]["timings"]}
                walls.append(wall)
                peaks.append(peak)
            results[name] = (statistics.median(walls), max(peaks))

        import platform

        import psutil

        print(
            f"{args.cases} phantoms of {args.size}^3 at 2.5 x 2.5 x 3.0 mm; {Path(args.model).name}; "
            f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} logical CPUs, "
            f"load average {os.getloadavg()[0]:.1f}; median of {args.repeat}"
        )
        print(
            f"{'configuration':42s} {'seconds':>8s} {'cases/min':>10s} {'peak RSS MB':>12s}   "
            "per case: read / segment / write s"
        )
        for name, (wall, peak) in results.items():
            st = " / ".join(f"{stages[name].get(k, 0.0):.2f}" for k in ("read", "segment", "write"))
            print(f"{name:42s} {wall:8.1f} {args.cases / wall * 60:10.1f} {peak / 1e6:12.0f}   {st}")
        m1, m0 = results["model, overlap (1 loader, 1 exporter)"][0], results["model, sequential (0 / 0)"][0]
        r1, r0 = results["region growing, overlap"][0], results["region growing, sequential"][0]
        p2 = results["model, 2 parts side by side"][0]
        print(f"overlap speed-up: model {m0 / m1:.2f}x, region growing {r0 / r1:.2f}x")
        print(f"2 parts side by side vs 1 process (model, overlap): {m1 / p2:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
