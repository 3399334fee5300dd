"""CPU inference: seconds per 128^3 WingsNet window for each backend, agreement with fp32, whole-case time.

Baseline = the authors' procedure: plain fp32 eager PyTorch, one window at a
time. Every backend runs the same real CT windows (from
../shared/data/chest_ct_dicom, lung-cropped as at inference) in the same run,
so ratios are comparable even on a busy machine.

Agreement: Dice of each backend's mask (p > 0.5) with the fp32 PyTorch mask on
the same windows. With a trained model (resources/models/demo_wingsnet.pt) this
is the acceptance test (>= 0.995). Without one the weights are random, the
masks at 0.5 mean little, and the script says so; it then also prints the Dice
at the fp32 probabilities' median (half the voxels foreground) and the largest
probability difference.

Peak memory: the process's resident set sampled every 20 ms, minus what it was
before each backend was built (model conversion included).

Usage: .venv/bin/python benchmarks/bench_inference_cpu.py [--windows 2] [--threads 2]
       [--backends torch,onnxruntime,openvino-fp32,openvino-bf16] [--extra] [--no-case]
       (--extra adds torch channels-last, torch bf16 autocast and torch.compile)
NOTE: on the development machine the 2 cores are shared with other engineers;
the script prints the load average next to the figures.

Recorded 2026-11-26 (AMD EPYC with AVX512-BF16, 2 threads, load average 3.6-4.1
from other engineers' work), demo model (WingsNet width 0.25, trained on phantoms),
2 real 128^3 windows:

| backend | s / window | speed-up vs eager fp32 | Dice @0.5 | max |dp| | peak RSS GB |
|---|---|---|---|---|---|
| torch-cpu-fp32 (authors' procedure) | 8.05 | 1.00x | 1.0000 | 0 | 1.16 |
| onnxruntime-fp32 | 1.54 | 5.22x | 0.9997 | 0.009 | 0.73 |
| openvino-fp32 | 1.45 | 5.55x | 0.9935 | 0.37 | 0.55 |
| openvino-bf16 | 1.08 | 7.44x | 0.9913 | 0.32 | 0.27 |

Whole real chest CT (141 x 512 x 512, lung crop 141 x 252 x 325, 30 windows),
final masks (threshold + largest component) vs eager fp32 (--case-agreement, load ~4):
eager fp32 328.8 s; onnxruntime-fp32 43.0 s (7.6x, Dice 0.9995); openvino-fp32
45.7 s (7.2x, Dice 0.9977); openvino-bf16 33.0 s (10x, Dice 0.9944 < 0.995).
So "auto" = ONNX Runtime fp32: whole case 45.3 s end to end (goal < 180 s).
Full-width WingsNet (random weights, load 9-13): eager fp32 46-82 s/window,
onnxruntime 30.6, openvino-fp32 19.7-24.7, openvino-bf16 9.1-10.7 s/window.
Engine host memory on 512 x 512 x 400 without crop: 1.05 GB above the CT (--memory-only).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
CASE = SHARED / "chest_ct_dicom"
DEMO = ROOT / "resources" / "models" / "demo_wingsnet.pt"


class PeakRSS:
    """Peak resident memory (bytes) above the level at start, sampled in a thread."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def delta_gb(self) -> float:
        return (self.peak - self.base) / 1e9


def load_model():
    import torch

    from core.models.checkpoint import model_from_checkpoint
    from core.models.registry import build_model
    from core.preprocess import Preprocessing

    if DEMO.exists():
        model, header = model_from_checkpoint(DEMO)
        return model, Preprocessing.from_dict(header.get("preprocessing")), f"trained ({DEMO.name})", DEMO
    torch.manual_seed(0)
    model = build_model("wingsnet").eval()
    return model, Preprocessing(), "RANDOM weights (no resources/models/demo_wingsnet.pt yet)", None


def quick_train(model, prep, steps: int, patch: int = 32, seed: int = 0):
    """A few Adam steps of Dice + BCE on phantom patches, so the outputs are confident like a trained
    model's (random weights give probabilities bunched near one value, where any rounding flips voxels).
    Not the paper's training: a stand-in for the agreement check until the demo model exists."""
    import torch

    from core.losses import dice_loss
    from core.phantom import make_phantom
    from core.preprocess import window_hu

    ph = make_phantom((96, 96, 96), seed=seed)
    x_all = window_hu(ph.ct.array, prep.window, prep.scale)
    g_all = ph.label.mask.astype(np.float32)
    rng = np.random.default_rng(seed)
    airway = np.argwhere(g_all > 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        c = airway[rng.integers(len(airway))] if rng.random() < 0.7 else rng.integers(0, 96, 3)
        s = [int(np.clip(v - patch // 2, 0, 96 - patch)) for v in c]
        sl = tuple(slice(a, a + patch) for a in s)
        x = torch.from_numpy(x_all[sl][None, None].copy())
        g = torch.from_numpy(g_all[sl][None, None].copy())
        logits = model(x)
        loss = sum(
            dice_loss(torch.sigmoid(z), g) + torch.nn.functional.binary_cross_entropy_with_logits(z, g) for z in logits
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 25 == 0:
            print(
                f"    quick-train step {step + 1}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    model.eval()
    return model, make_phantom((128, 128, 128), seed=seed + 1)


def real_windows(prep, n: int, window: int) -> np.ndarray:
    """``n`` windows from the lung-cropped real CT, centred on the crop (trachea and main bronchi)."""
    from core.io import read_ct
    from core.preprocess import prepare_input
    from core.segmentation import window_slices

    arr, _ = prepare_input(read_ct(CASE), prep)
    slices = window_slices(arr.shape, (window,) * 3, (window // 2,) * 3)
    centre = np.array(arr.shape) / 2
    order = sorted(slices, key=lambda s: np.linalg.norm([(x.start + x.stop) / 2 for x in s] - centre))
    return np.stack([arr[s][None] for s in order[:n]]).astype(np.float32)


class CompiledTorch:
    """torch.compile with freezing under bf16 autocast (inductor, CPU)."""

    def __init__(self, model):
        import torch
        import torch._inductor.config as cfg

        cfg.freezing = True
        self.name = "torch-compile-bf16"
        self.device = "cpu"
        self.model = model.eval()
        self.compiled = torch.compile(self.model)

    def __call__(self, batch):
        import torch

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.sigmoid(self.compiled(torch.from_numpy(batch))[-1].float()).numpy()


def build(name: str, model, window: int, key: str, cache: Path, threads: int):
    from core.segmentation.backends import BackendRequest, TorchBackend, make_backend

    if name == "torch":
        return TorchBackend(model, "cpu")
    if name == "torch-cl":
        return TorchBackend(model, "cpu", channels_last=True)
    if name == "torch-bf16":
        return TorchBackend(model, "cpu", cpu_bf16=True)
    if name == "torch-compile":
        return CompiledTorch(model)
    messages: list[str] = []
    backend = make_backend(model, BackendRequest(name, "cpu", (window,) * 3, key, cache, threads), messages.append)
    for m in messages:
        print(f"    ({m})")
    return backend


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)


def engine_memory(shape=(400, 512, 512)) -> None:
    """Host memory of the engine itself (crop, accumulator, outputs, post-processing) on a 512 x 512 x 400
    CT with no crop (the worst case), measured with tracemalloc; the network is a voxel-wise stand-in so
    the figure excludes activations (printed per backend above)."""
    import tracemalloc

    import torch

    from core.preprocess import Preprocessing
    from core.segmentation import Predictor
    from core.volume import IntensityVolume

    class VoxelWise(torch.nn.Module):
        divisor = 8

        def forward(self, x):
            return ((x - 100.0) / 20.0,)

    rng = np.random.default_rng(0)
    ct = IntensityVolume(rng.integers(-1024, 600, size=shape, dtype=np.int16))
    predictor = Predictor.from_model(VoxelWise(), Preprocessing(crop="none"), device="cpu", backend="torch")
    tracemalloc.start()
    t = time.perf_counter()
    pred = predictor.predict(ct)
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"\nEngine host memory, {shape[2]} x {shape[1]} x {shape[0]} CT ({ct.array.nbytes / 1e9:.2f} GB int16), no crop, "
        f"{pred.windows} windows: peak {peak / 1e9:.2f} GB above the CT (tracemalloc; network activations excluded), "
        f"{seconds:.1f} s with a voxel-wise stand-in network"
    )


def case_agreement(ckpt: Path, backends: list[str], threads: int, cache: Path) -> None:
    """Whole-case masks (threshold + largest component, as the CLI writes them) of each backend
    against eager fp32 PyTorch: the acceptance check (Dice >= 0.995 with a trained model)."""
    from core.io import read_ct
    from core.segmentation import Predictor

    ct = read_ct(CASE)
    masks, rows = {}, []
    for name in ["torch"] + [b for b in backends if b != "torch"]:
        predictor = Predictor(ckpt, device="cpu", backend=name, cache=cache, threads=threads)
        pred = predictor.predict(ct)
        masks[name] = pred.mask.array
        p = pred.probabilities.array
        rows.append(
            (pred.backend, pred.seconds, pred.windows, dice(masks[name], masks["torch"]), int(masks[name].sum()), p)
        )
        print(
            f"  {pred.backend}: {pred.seconds:.1f} s, {int(masks[name].sum())} voxels, "
            f"Dice vs fp32 {rows[-1][3]:.4f}, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    ref_p = rows[0][5]
    print(
        "\n| backend | whole case s | speed-up | mask voxels | Dice vs eager fp32 mask | max |dp| (of 255) |\n|---|---|---|---|---|---|"
    )
    for name, sec, _n, d, vox, p in rows:
        print(
            f"| {name} | {sec:.1f} | {rows[0][1] / sec:.2f}x | {vox} | {d:.4f} | {int(np.abs(p.astype(int) - ref_p).max())} |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=2, help="timed windows per backend")
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", default="torch,onnxruntime,openvino-fp32,openvino-bf16")
    ap.add_argument("--extra", action="store_true", help="also torch channels-last, torch bf16 autocast, torch.compile")
    ap.add_argument("--no-case", action="store_true", help="skip the whole-case run")
    ap.add_argument("--memory-only", action="store_true", help="only the engine's host memory on 512 x 512 x 400")
    ap.add_argument(
        "--case-agreement",
        action="store_true",
        help="only: whole-case masks of each backend vs eager fp32 (needs the demo model)",
    )
    ap.add_argument("--case-backend", default="auto")
    ap.add_argument(
        "--quick-train",
        type=int,
        default=0,
        metavar="STEPS",
        help="without the demo model: train the random WingsNet STEPS steps on phantom patches first, "
        "and add a phantom window to the agreement check",
    )
    args = ap.parse_args()
    if not CASE.is_dir():
        print(f"needs the real CT at {CASE} (../shared/data); not found", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    if args.memory_only:
        engine_memory()
        return 0
    if args.case_agreement:
        if not DEMO.exists():
            print("--case-agreement needs resources/models/demo_wingsnet.pt", file=sys.stderr)
            return 2
        print(
            f"Whole-case agreement on {CASE.name}, model {DEMO.name}; load average {os.getloadavg()[0]:.1f} "
            "(shared cores)"
        )
        case_agreement(
            DEMO, args.backends.split(","), args.threads, Path(tempfile.mkdtemp(prefix="airway-bench-cache-"))
        )
        return 0
    from core.segmentation.backends import state_hash

    print(
        f"CPU: {os.cpu_count()} logical cores, torch threads {args.threads}; load average at start "
        f"{os.getloadavg()[0]:.2f} (the cores are shared with other engineers: figures are pessimistic)"
    )
    model, prep, weights, ckpt = load_model()
    print(f"model: WingsNet, {weights}; window {args.window}^3")
    windows = real_windows(prep, args.windows, args.window)
    if ckpt is None and args.quick_train:
        model, phantom = quick_train(model, prep, args.quick_train)
        weights = f"random init + {args.quick_train} quick Dice+BCE steps on phantom 32^3 patches (NOT the demo model)"
        from core.preprocess import window_hu

        pw = window_hu(phantom.ct.array, prep.window, prep.scale)[None, None].astype(np.float32)
        if args.window == 128:
            windows = np.concatenate([pw, windows])
        print(f"model: {weights}; agreement windows: {'1 phantom + ' if args.window == 128 else ''}{args.windows} real")
    key = state_hash(model)
    names = args.backends.split(",") + (["torch-cl", "torch-bf16", "torch-compile"] if args.extra else [])
    cache = Path(tempfile.mkdtemp(prefix="airway-bench-cache-"))
    rows = []
    ref = None
    for name in names:
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            try:
                backend = build(name, model, args.window, key, cache, args.threads)
            except Exception as exc:  # report, keep measuring the others
                print(f"  {name}: not available ({type(exc).__name__}: {exc})")
                continue
            build_s = time.perf_counter() - t0
            if name != "torch":  # warm-up (first inference compiles kernels); eager fp32 needs none
                backend(windows[:1])
            times, probs = [], []
            for i in range(len(windows)):
                t = time.perf_counter()
                probs.append(backend(windows[i : i + 1])[0, 0])
                times.append(time.perf_counter() - t)
        p = np.stack(probs)
        if ref is None:
            ref = p
        row = {
            "backend": getattr(backend, "name", name),
            "build_s": build_s,
            "s_per_window": float(np.median(times)),
            "peak_gb": mem.delta_gb,
            "dice05": dice(p > 0.5, ref > 0.5),
            "dice_median": dice(p > np.median(ref), ref > np.median(ref)),
            "max_dp": float(np.abs(p - ref).max()),
            "load": os.getloadavg()[0],
        }
        rows.append(row)
        print(
            f"  {row['backend']:<20} {row['s_per_window']:7.2f} s/window  (build {build_s:5.1f} s, "
            f"peak +{row['peak_gb']:.2f} GB, load {row['load']:.1f})",
            flush=True,
        )
        del backend

    base = rows[0]["s_per_window"]
    print(
        f"\nPer-window time on {args.windows} real {args.window}^3 window(s), {args.threads} threads; "
        f"Dice vs fp32 PyTorch ({weights}):"
    )
    print(
        "| backend | s / window | speed-up vs eager fp32 | Dice @0.5 | Dice @fp32 median | max |dp| | build s | peak RSS GB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['s_per_window']:.2f} | {base / r['s_per_window']:.2f}x | {r['dice05']:.4f} | "
            f"{r['dice_median']:.4f} | {r['max_dp']:.4f} | {r['build_s']:.1f} | {r['peak_gb']:.2f} |"
        )
    if ckpt is None:
        print(
            "(no demo model: the Dice is against a stand-in model, not the acceptance test; rerun once "
            "resources/models/demo_wingsnet.pt exists)"
        )

    if args.no_case:
        return 0

    print(f"\nWhole case {CASE.name} (backend {args.case_backend}):", flush=True)
    if ckpt is None:
        with tempfile.TemporaryDirectory() as tmp:
            from core.models.checkpoint import save_checkpoint

            ckpt_path = Path(tmp) / "random.pt"
            save_checkpoint(ckpt_path, model, {"preprocessing": prep.to_dict()})
            return whole_case(ckpt_path, args, cache, base)
    return whole_case(ckpt, args, cache, base)


def whole_case(ckpt: Path, args, cache: Path, base: float) -> int:
    from core.io import read_ct
    from core.segmentation import Predictor

    t0 = time.perf_counter()
    with PeakRSS() as mem:
        ct = read_ct(CASE)
        t_read = time.perf_counter() - t0
        predictor = Predictor(
            ckpt,
            device="cpu",
            backend=args.case_backend,
            say=lambda m: print(f"    ({m})"),
            cache=cache,
            threads=args.threads,
        )
        t1 = time.perf_counter()
        last = [0.0]

        def progress(done: float, total: float, message: str = "") -> None:
            if time.perf_counter() - last[0] > 15 or done == total:
                last[0] = time.perf_counter()
                print(f"    {message}", flush=True)

        pred = predictor.predict(ct, progress=progress)
        t2 = time.perf_counter()
    print(f"  shape {ct.shape}, crop {pred.crop.shape}, {pred.windows} windows, backend {pred.backend}")
    print(
        f"  read {t_read:.1f} s, model load/convert {t1 - t0 - t_read:.1f} s, predict {t2 - t1:.1f} s "
        f"({(t2 - t1) / pred.windows:.2f} s/window incl. preprocessing), total {t2 - t0:.1f} s "
        f"(goal < 180 s); eager fp32 estimate {pred.windows * base:.0f} s"
    )
    print(
        f"  peak RSS +{mem.delta_gb:.2f} GB; mask {int(pred.mask.array.sum())} voxels; load average {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
