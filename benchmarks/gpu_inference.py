"""GPU inference of the full-size WingsNet: ms per 128^3 window, seconds per 512 x 512 x 400 case, peak GPU memory,
and (``--selection``) the airway-guided window selection of issue 17 against the exact paper procedure.

One command: ``python benchmarks/gpu_inference.py --selection`` (add ``--json FILE`` to keep the figures).
Needs only torch, numpy, scipy and this checkout's ``core/``: the case is a synthetic chest made here
(no volume IO packages), and when ``cc3d`` is missing a scipy stand-in is used for the connected components
(said in the output; same results, slower post-processing).

Part 1, windows: fp32 (TF32 off), autocast (bf16 where supported, else fp16) and autocast + channels-last 3D,
each at the batch sizes of ``--batches`` (default 1, 2, 4, 8, 16) and the one the predictor would choose
by free memory; ms per window include the copies to and from the host, as in real use.

Part 2, whole case: a synthetic chest (body, two lungs, trachea; ``--shape``, default 400 x 512 x 512,
0.7 x 0.7 x 0.8 mm; or ``--ct-npy FILE`` with ``--spacing``) through core.segmentation.Predictor with the lung
crop, accumulator on the GPU. Configurations, in the same run:
- exact: the paper's procedure, fp32, step 64, plain mean, every window (the baseline);
- autocast, step 64, every window (the GPU default before issue 17);
- with ``--selection``: autocast with the lung region at steps 64, 96 and 128 (Gaussian weighting when the
  step is over half the window), and the half-resolution network pass as region.
Each: windows run / grid, batch, seconds (prepare + region + windows + post-processing), peak GPU memory,
Dice of the mask and largest probability difference against exact, ratio of times.

Weights: ``--model CKPT``, else resources/models/wingsnet_full.pt if present, else a full-size WingsNet with
random weights (seed 0; the speed is the same; agreement figures then only say how close the numerics
are, not how well airways are found, and the script says so). ``--width 0.25 --model
resources/models/demo_wingsnet.pt`` runs the demo model.

Goal: a whole chest CT in under 5 s on one current data-centre GPU.
Without a CUDA GPU it prints why and exits with status 2 (``--device cpu`` runs it as a smoke test of the
script only, e.g. ``--device cpu --model resources/models/demo_wingsnet.pt --no-windows --window 32
--shape 48 96 96``).

The whole run for issue 17 (about 5-8 minutes on an H200; the real CT as .npz made on a machine with
../shared/data, since the volume IO packages may be missing on the GPU machine):
    python -c "from core.io import read_ct; import numpy as np; ct = read_ct('../shared/data/chest_ct_dicom'); \
        np.savez_compressed('chest_ct.npz', ct=ct.array, spacing=np.array(ct.geometry.spacing))"
    python benchmarks/gpu_inference.py --selection --phantom --ct-npy chest_ct.npz \
        --model resources/models/wingsnet_full.pt --repeats 5 --case-repeats 1 --save-masks out --json out/gpu.json
and TD/BD of each configuration against the exact one (and the phantom's label) from the saved masks, on any
machine with core.metrics (no GPU needed): python benchmarks/gpu_inference.py --metrics-from out/masks_*.npz
Not yet measured: the issue-17 session was lent no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TRAINED_FULL = Path(__file__).resolve().parents[1] / "resources" / "models" / "wingsnet_full.pt"


def log(text: str = "") -> None:
    print(text, flush=True)


def ensure_cc3d() -> str:
    """``cc3d`` if installed, else a scipy stand-in module with the three functions core uses."""
    try:
        import cc3d  # noqa: F401

        return "cc3d"
    except ImportError:
        pass
    import types

    from scipy import ndimage

    def _structure(connectivity: int):
        return ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])

    def connected_components(mask, connectivity=26):
        labels, _ = ndimage.label(mask, structure=_structure(connectivity))
        return labels

    def statistics(labels):
        return {"voxel_counts": np.bincount(labels.ravel())}

    def largest_k(mask, k=1, connectivity=26):
        labels = connected_components(mask, connectivity)
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        keep = np.argsort(counts)[::-1][:k]
        keep = keep[counts[keep] > 0]
        return np.isin(labels, keep) * labels

    shim = types.ModuleType("cc3d")
    shim.connected_components = connected_components
    shim.statistics = statistics
    shim.largest_k = largest_k
    sys.modules["cc3d"] = shim
    return "scipy.ndimage stand-in (cc3d not installed)"


def synthetic_chest(shape=(400, 512, 512), seed: int = 0):
    """Air outside, a soft-tissue body, two lungs and a trachea: the lung crop behaves as on a real CT."""
    from core.volume import Geometry, IntensityVolume

    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cz, cy, cx = shape[0] / 2, shape[1] / 2, shape[2] / 2
    arr = np.full(shape, -1024, np.int16)
    body = ((y - cy) / (0.40 * shape[1])) ** 2 + ((x - cx) / (0.46 * shape[2])) ** 2 <= 1
    arr[:, body[0]] = 40
    for side in (-1, 1):
        lung = (
            ((z - cz) / (0.45 * shape[0])) ** 2
            + ((y - cy) / (0.30 * shape[1])) ** 2
            + ((x - cx - side * 0.2 * shape[2]) / (0.15 * shape[2])) ** 2
        ) <= 1
        arr[lung] = -860
    trachea = ((y - cy + 0.1 * shape[1]) ** 2 + (x - cx) ** 2 <= 12**2) & (z > cz)
    arr[np.broadcast_to(trachea, shape)] = -1000
    rng = np.random.default_rng(seed)
    arr += rng.integers(-20, 20, size=shape, dtype=np.int16)
    return IntensityVolume(arr, Geometry(spacing=(0.7, 0.7, 0.8)), "synthetic_chest")


def load_model(args):
    """(model, checkpoint path or None, description)."""
    import torch

    from core.models.checkpoint import model_from_checkpoint
    from core.models.registry import build_model

    path = Path(args.model) if args.model else (TRAINED_FULL if TRAINED_FULL.exists() else None)
    if path is not None:
        model, _ = model_from_checkpoint(path)
        return model, path, f"trained ({path})"
    torch.manual_seed(0)
    model = build_model("wingsnet", width=args.width).eval()
    n = sum(p.numel() for p in model.parameters())
    return model, None, f"random weights, width {args.width} ({n:,} parameters)"


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated(device) / 1e9 if device.startswith("cuda") else float("nan")


def _empty_cache(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def time_windows(model, device: str, batch: int, autocast: bool, channels_last: bool, repeats: int):
    """(ms per window, peak GPU memory GB) for ``repeats`` batches of 128^3 windows, after warm-up."""
    import torch

    from core.segmentation.backends import TorchBackend

    backend = TorchBackend(model, device, autocast=autocast, channels_last=channels_last)
    x = np.random.default_rng(0).uniform(0, 255, (batch, 1, 128, 128, 128)).astype(np.float32)
    for _ in range(2):
        backend(x)
    _sync(device)
    _reset_peak(device)
    t = time.perf_counter()
    for _ in range(repeats):
        backend(x)
    _sync(device)
    ms = (time.perf_counter() - t) * 1000 / (repeats * batch)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return ms, _peak_gb(device)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def tree_metrics(mask: np.ndarray, ref: np.ndarray, spacing_zyx) -> dict:
    try:
        from core.metrics import evaluate

        m = evaluate(mask, ref, spacing_zyx).summary()
        return {k: round(float(m[k]), 2) for k in ("td", "bd", "dsc")}
    except Exception as exc:  # noqa: BLE001 - metrics are a bonus here, never the reason the run fails
        return {"metrics_error": f"{type(exc).__name__}: {exc}"}


def case_configs(args) -> list[dict]:
    configs = [
        {
            "label": "exact: fp32, step 64, mean, all windows",
            "autocast": False,
            "step": 64,
            "gaussian": False,
            "region": None,
        },
        {
            "label": "autocast, step 64, mean, all windows",
            "autocast": True,
            "step": 64,
            "gaussian": False,
            "region": None,
        },
    ]
    if args.selection:
        configs += [
            {
                "label": "autocast, lung region, step 64, mean",
                "autocast": True,
                "step": 64,
                "gaussian": False,
                "region": "lung",
            },
            {
                "label": "autocast, lung region, step 96, gaussian",
                "autocast": True,
                "step": 96,
                "gaussian": True,
                "region": "lung",
            },
            {
                "label": "autocast, lung region, step 128, gaussian",
                "autocast": True,
                "step": 128,
                "gaussian": True,
                "region": "lung",
            },
            {
                "label": "autocast, all windows, step 128, gaussian",
                "autocast": True,
                "step": 128,
                "gaussian": True,
                "region": None,
            },
            {
                "label": "autocast, coarse-pass region, step 128, gaussian",
                "autocast": True,
                "step": 128,
                "gaussian": True,
                "region": "coarse",
            },
        ]
    return configs


def run_case(args, ckpt: Path, ct, device: str, trained: bool, results: dict, label=None) -> None:

    from core.segmentation import Predictor

    log(f"\nWhole case: {ct.name} {ct.shape} (z, y, x), spacing {ct.geometry.spacing} mm")
    spacing_zyx = tuple(reversed(ct.geometry.spacing))
    base = None
    rows = []
    masks = []
    for cfg in case_configs(args):
        try:
            predictor = Predictor(
                ckpt,
                device=device,
                window=args.window,
                step=cfg["step"] * args.window // 128,
                gaussian=cfg["gaussian"],
                region=cfg["region"],
                autocast=cfg["autocast"],
                batch_size=args.case_batch or None,
                say=lambda m: None,
            )
            predictor.predict(
                synthetic_chest(tuple(min(a, b) for a, b in zip((128, 160, 160), ct.shape)))
            )  # warm-up: cuDNN autotuning for this batch size
            times = []
            for _ in range(max(1, args.case_repeats)):
                _sync(device)
                _reset_peak(device)
                pred = predictor.predict(ct)
                _sync(device)
                times.append(pred.seconds)
            peak = _peak_gb(device)
        except Exception as exc:  # noqa: BLE001 - print and go on with the next configuration
            log(f"  {cfg['label']}: FAILED {type(exc).__name__}: {exc}")
            traceback.print_exc()
            _empty_cache(device)
            continue
        t = pred.timings
        row = {
            "config": cfg["label"],
            "windows": pred.windows,
            "grid": pred.windows_total,
            "batch": predictor.runner.batch_size,
            "backend": pred.backend,
            "seconds": min(times),
            "seconds_all": times,
            "timings": t,
            "peak_gpu_gb": peak,
            "crop": list(pred.crop.shape),
        }
        mask = pred.mask.array
        prob = pred.probabilities.array
        if base is None:
            base = (mask, prob, min(times))
            row.update(dice=1.0, max_dp=0.0, ratio=1.0)
        else:
            row.update(
                dice=dice(mask, base[0]),
                max_dp=float(np.abs(prob.astype(np.int16) - base[1].astype(np.int16)).max()) / 255.0,
                ratio=base[2] / min(times),
            )
            if trained and args.metrics:
                row["metrics_vs_exact"] = tree_metrics(mask, base[0], spacing_zyx)
        row["mask_voxels"] = int(mask.sum())
        rows.append(row)
        if args.save_masks:
            masks.append(np.ascontiguousarray(mask, bool))
        if label is not None:
            row["dice_vs_label"] = dice(mask, label)
        log(
            f"  {cfg['label']}: {pred.windows}/{pred.windows_total} windows, batch {row['batch']}, {pred.backend}: "
            f"{min(times):.2f} s (runs: {', '.join(f'{v:.2f}' for v in times)}) = prepare {t.get('prepare', 0):.2f} "
            f"+ region {t.get('region', 0):.2f} + windows {t.get('windows', 0):.2f} + post {t.get('postprocess', 0):.2f}; "
            f"peak GPU {peak:.2f} GB; vs exact: {row['ratio']:.2f}x, Dice {row['dice']:.4f}, max |dp| {row['max_dp']:.3f}, "
            f"mask {row['mask_voxels']} voxels"
            + (f", {row['metrics_vs_exact']}" if "metrics_vs_exact" in row else "")
            + (f", Dice vs phantom label {row['dice_vs_label']:.4f}" if "dice_vs_label" in row else "")
        )
        del predictor, pred
        _empty_cache(device)
    results.setdefault("cases", {})[ct.name] = rows
    if args.save_masks and masks:
        Path(args.save_masks).mkdir(parents=True, exist_ok=True)
        target = Path(args.save_masks) / f"masks_{ct.name}.npz"
        packed = {f"m{i}": np.packbits(m) for i, m in enumerate(masks)}
        if label is not None:
            packed["label"] = np.packbits(label)
        np.savez_compressed(
            target,
            shape=np.array(ct.shape),
            spacing=np.array(ct.geometry.spacing),
            configs=np.array([r["config"] for r in rows]),
            **packed,
        )
        log(
            f"  masks (exact first, then each configuration{', and the phantom label' if label is not None else ''}) "
            f"saved to {target} ({target.stat().st_size / 1e6:.1f} MB)"
        )
    if rows:
        log(f"\n| {ct.name}: configuration | windows | s | peak GPU GB | vs exact | Dice vs exact | max abs dp |")
        log("|---|---|---|---|---|---|---|")
        for r in rows:
            log(
                f"| {r['config']} | {r['windows']}/{r['grid']} | {r['seconds']:.2f} | {r['peak_gpu_gb']:.1f} | "
                f"{r['ratio']:.2f}x | {r['dice']:.4f} | {r['max_dp']:.3f} |"
            )


def metrics_from(paths: list[str]) -> int:
    """TD/BD/DSC of each saved configuration's mask against the exact one (m0) and the phantom label."""
    ensure_cc3d()
    from core.metrics import evaluate

    for path in paths:
        d = np.load(path)
        shape = tuple(int(v) for v in d["shape"])
        spacing_zyx = tuple(reversed([float(v) for v in d["spacing"]]))
        n = int(np.prod(shape))

        def unpack(key: str) -> np.ndarray:
            return np.unpackbits(d[key])[:n].reshape(shape).astype(bool)  # noqa: B023 - called in this iteration

        masks = [unpack(f"m{i}") for i in range(len(d["configs"]))]
        label = unpack("label") if "label" in d.files else None
        log(
            f"\n{path}: {shape}\n| configuration | voxels | TD / BD / DSC vs exact | TD / BD / DSC vs label |\n|---|---|---|---|"
        )
        for i, (name, m) in enumerate(zip(d["configs"], masks)):
            vs_exact = vs_label = "-"
            if i:
                e = evaluate(m, masks[0], spacing_zyx).summary()
                vs_exact = f"{e['td']:.2f} / {e['bd']:.2f} / {e['dsc']:.2f}"
            if label is not None:
                e = evaluate(m, label, spacing_zyx).summary()
                vs_label = f"{e['td']:.2f} / {e['bd']:.2f} / {e['dsc']:.2f}"
            log(f"| {name} | {int(m.sum())} | {vs_exact} | {vs_label} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=10, help="timed batches per window measurement")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--no-windows", action="store_true", help="skip part 1 (per-window timings)")
    ap.add_argument("--no-case", action="store_true", help="skip part 2 (whole case)")
    ap.add_argument("--selection", action="store_true", help="also the window-selection configurations")
    ap.add_argument(
        "--model", default=None, help="checkpoint (default: the trained full-size one if present, else random)"
    )
    ap.add_argument("--width", type=float, default=1.0, help="WingsNet width for random weights (1.0 = the paper's)")
    ap.add_argument("--shape", type=int, nargs=3, default=(400, 512, 512), metavar=("Z", "Y", "X"))
    ap.add_argument(
        "--ct-npy",
        default=None,
        help="also a real CT: int16 .npy (z, y, x), or .npz with 'ct' and 'spacing' (x, y, z mm)",
    )
    ap.add_argument("--spacing", type=float, nargs=3, default=(0.977, 0.977, 2.0), help="of --ct-npy, x y z mm")
    ap.add_argument("--case-repeats", type=int, default=2)
    ap.add_argument("--case-batch", type=int, default=0, help="windows per pass in part 2 (default: by free memory)")
    ap.add_argument("--metrics", action="store_true", help="TD/BD vs exact (trained model only; slow on CPU)")
    ap.add_argument(
        "--phantom", action="store_true", help="also a core.phantom case of --shape (with its airway label)"
    )
    ap.add_argument(
        "--save-masks",
        default=None,
        metavar="DIR",
        help="save each case's masks (bit-packed .npz) to compute TD/BD elsewhere",
    )
    ap.add_argument("--window", type=int, default=128, help="window side for part 2 (steps scale with it)")
    ap.add_argument("--json", default=None, help="write all figures here")
    ap.add_argument(
        "--metrics-from",
        nargs="+",
        default=None,
        metavar="NPZ",
        help="no GPU needed: TD/BD from masks saved by --save-masks, then exit",
    )
    args = ap.parse_args()
    if args.metrics_from:
        return metrics_from(args.metrics_from)

    import torch

    if args.device == "cpu":
        log("gpu_inference.py: --device cpu is a smoke test of this script only (tiny shapes make sense there).")
    elif not torch.cuda.is_available():
        log(
            "gpu_inference.py: no CUDA GPU is usable here (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}, CUDA build: {torch.version.cuda}). Run it on a machine with an NVIDIA GPU "
            "and a CUDA build of PyTorch."
        )
        return 2
    cc = ensure_cc3d()
    device = args.device
    if device == "cpu":
        gpu_name = "none (CPU smoke test)"
    else:
        props = torch.cuda.get_device_properties(torch.device(device))
        gpu_name = f"{props.name}, {props.total_memory / 1e9:.0f} GB"
    log(
        f"GPU: {gpu_name}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}, bf16 {'yes' if device != 'cpu' and torch.cuda.is_bf16_supported() else 'no'}; "
        f"host CPUs {os.cpu_count()}; connected components: {cc}"
    )
    model, ckpt_path, weights = load_model(args)
    trained = ckpt_path is not None
    log(f"model: WingsNet ({weights})")
    if not trained:
        log("NOTE: random weights: Dice/max |dp| below measure numerical agreement only, not segmentation quality.")
    results: dict = {"gpu": gpu_name, "torch": torch.__version__, "weights": weights, "windows": [], "cases": {}}
    from core.segmentation import default_batch_size

    if not args.no_windows:
        auto_batch = default_batch_size(device, (128, 128, 128))
        log("\n| mode | batch | ms / window | peak GPU GB |\n|---|---|---|---|")
        batches = sorted({int(b) for b in args.batches.split(",") if b} | {auto_batch})
        for mode, autocast, cl in (
            ("fp32", False, False),
            ("autocast", True, False),
            ("autocast+channels_last", True, True),
        ):
            for batch in batches:
                try:
                    ms, gb = time_windows(model, device, batch, autocast, cl, args.repeats)
                except torch.OutOfMemoryError:
                    log(f"| {mode} | {batch} | out of memory | - |")
                    _empty_cache(device)
                    continue
                except Exception as exc:  # noqa: BLE001
                    log(f"| {mode} | {batch} | FAILED {type(exc).__name__}: {exc} | - |")
                    _empty_cache(device)
                    continue
                results["windows"].append({"mode": mode, "batch": batch, "ms_per_window": ms, "peak_gb": gb})
                log(f"| {mode} | {batch}{' (auto)' if batch == auto_batch else ''} | {ms:.1f} | {gb:.2f} |")
                _empty_cache(device)
    if not args.no_case:
        from core.models.checkpoint import save_checkpoint
        from core.preprocess import Preprocessing
        from core.volume import Geometry, IntensityVolume

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = ckpt_path or save_checkpoint(
                Path(tmp) / "random.pt", model, {"preprocessing": Preprocessing().to_dict()}
            )
            cases = []
            if args.phantom:
                try:
                    from core.phantom import make_phantom

                    t0 = time.perf_counter()
                    ph = make_phantom(tuple(args.shape), seed=0, generations=8)
                    log(
                        f"\nphantom {ph.ct.shape} (core.phantom, seed 0, 8 generations) made in {time.perf_counter() - t0:.1f} s"
                    )
                    cases.append(
                        (IntensityVolume(ph.ct.array, ph.ct.geometry, "phantom"), np.asarray(ph.label.array, bool))
                    )
                except Exception as exc:  # noqa: BLE001 - e.g. a package the phantom needs is missing
                    log(f"\nphantom: could not be made ({type(exc).__name__}: {exc}); skipped")
            if args.ct_npy:
                data = np.load(args.ct_npy)
                spacing = tuple(args.spacing)
                if hasattr(data, "files"):  # .npz: the array as "ct", its spacing (x, y, z) as "spacing"
                    spacing = tuple(float(v) for v in data["spacing"]) if "spacing" in data.files else spacing
                    data = data["ct"]
                cases.insert(
                    0, (IntensityVolume(np.asarray(data), Geometry(spacing=spacing), Path(args.ct_npy).stem), None)
                )
            cases.append((synthetic_chest(tuple(args.shape)), None))
            for ct, label in cases:
                run_case(args, ckpt, ct, device, trained, results, label)
                if args.json:  # after every case: a run cut short still leaves its figures
                    Path(args.json).write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        log(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
