"""GPU inference: ms per 128^3 WingsNet window, seconds per 512 x 512 x 400 case, peak GPU memory.

Modes, in the same run: fp32, autocast (bf16 where supported, else fp16), and
autocast with channels-last 3D; each at batch sizes 1 and 4 (and the size the
predictor would choose). The whole case is a synthetic chest (body, two lungs,
a trachea; 400 x 512 x 512, 0.7 x 0.7 x 0.8 mm) run through
core.inference.Predictor with the lung crop, as the CLI does; the time is split
into preprocessing (CPU), windows (GPU) and post-processing (CPU).

Weights: resources/models/demo_wingsnet.pt if present, else random (the speed
is the same; the script says which).

Goal: a whole chest CT in under 5 s on one current data-centre GPU.
Usage: python benchmarks/gpu_inference.py [--device cuda:0] [--repeats 10] [--no-case]
Without a CUDA GPU it prints why and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "resources" / "models" / "demo_wingsnet.pt"


def synthetic_chest(shape=(400, 512, 512), seed: int = 0):
    """Air outside, a soft-tissue body, two lungs and a trachea: the lung crop behaves as on a real CT."""
    from core.volume import Geometry, IntensityVolume

    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cz, cy, cx = shape[0] / 2, shape[1] / 2, shape[2] / 2
    arr = np.full(shape, -1024, np.int16)
    body = ((y - cy) / (0.40 * shape[1])) ** 2 + ((x - cx) / (0.46 * shape[2])) ** 2 <= 1
    arr[:, body[0]] = 40
    for side in (-1, 1):
        lung = (((z - cz) / (0.45 * shape[0])) ** 2 + ((y - cy) / (0.30 * shape[1])) ** 2
                + ((x - cx - side * 0.2 * shape[2]) / (0.15 * shape[2])) ** 2) <= 1
        arr[lung] = -860
    trachea = ((y - cy + 0.1 * shape[1]) ** 2 + (x - cx) ** 2 <= 12 ** 2) & (z > cz)
    arr[np.broadcast_to(trachea, shape)] = -1000
    rng = np.random.default_rng(seed)
    arr += rng.integers(-20, 20, size=shape, dtype=np.int16)
    return IntensityVolume(arr, Geometry(spacing=(0.7, 0.7, 0.8)), "synthetic_chest")


def load_model():
    import torch

    from core.models.checkpoint import model_from_checkpoint
    from core.models.registry import build_model

    if DEMO.exists():
        model, _ = model_from_checkpoint(DEMO)
        return model, f"trained ({DEMO.name})"
    torch.manual_seed(0)
    return build_model("wingsnet").eval(), "random weights"


def time_windows(model, device: str, batch: int, autocast: bool, channels_last: bool, repeats: int) -> tuple[float, float]:
    """(ms per window, peak GPU memory GB) for ``repeats`` batches of 128^3 windows, after warm-up."""
    import torch

    from core.inference_backends import TorchBackend

    backend = TorchBackend(model, device, autocast=autocast, channels_last=channels_last)
    x = np.random.default_rng(0).uniform(0, 255, (batch, 1, 128, 128, 128)).astype(np.float32)
    for _ in range(3):
        backend(x)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(repeats):
        backend(x)  # includes host->device copy and probabilities back to the host, as in real use
    torch.cuda.synchronize(device)
    ms = (time.perf_counter() - t) * 1000 / (repeats * batch)
    return ms, torch.cuda.max_memory_allocated(device) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no-case", action="store_true")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_inference.py: no CUDA GPU is usable here (torch.cuda.is_available() is False; "
              f"torch {torch.__version__}, CUDA build: {torch.version.cuda}). Run it on a machine with an NVIDIA GPU "
              "and a CUDA build of PyTorch.", file=sys.stderr)
        return 2
    device = args.device
    props = torch.cuda.get_device_properties(torch.device(device))
    print(f"GPU: {props.name}, {props.total_memory / 1e9:.0f} GB; torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    model, weights = load_model()
    print(f"model: WingsNet ({weights})")
    from core.inference import default_batch_size

    auto_batch = default_batch_size(device, (128, 128, 128))
    print(f"\n| mode | batch | ms / window | peak GPU GB |\n|---|---|---|---|")
    results = {}
    for mode, autocast, cl in (("fp32", False, False), ("autocast", True, False), ("autocast+channels_last", True, True)):
        for batch in sorted({1, 4, auto_batch}):
            try:
                ms, gb = time_windows(model, device, batch, autocast, cl, args.repeats)
            except torch.OutOfMemoryError:
                print(f"| {mode} | {batch} | out of memory | - |")
                torch.cuda.empty_cache()
                continue
            results[(mode, batch)] = ms
            print(f"| {mode} | {batch} | {ms:.1f} | {gb:.2f} |", flush=True)
            torch.cuda.empty_cache()
    if args.no_case:
        return 0

    from core.inference import Predictor
    from core.models.checkpoint import save_checkpoint
    from core.preprocess import Preprocessing

    ct = synthetic_chest()
    print(f"\nWhole case: synthetic chest {ct.shape} (z, y, x)")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = DEMO if DEMO.exists() else save_checkpoint(Path(tmp) / "random.pt", model,
                                                          {"preprocessing": Preprocessing().to_dict()})
        for label, crop, on_device in (("lung crop, accumulator on the GPU", "lung", True),
                                       ("lung crop, accumulator on the host", "lung", False),
                                       ("no crop (worst case)", "none", None)):
            predictor = Predictor(ckpt, device=device, say=lambda m: print(f"  ({m})"), device_accumulate=on_device)
            predictor.preprocessing = dataclasses.replace(predictor.preprocessing, crop=crop)
            predictor.predict(synthetic_chest((128, 128, 128)))  # warm-up: cuDNN autotuning
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            pred = predictor.predict(ct)
            t = pred.timings
            print(f"  {label}: {pred.windows} windows, batch {predictor.runner.batch_size}, backend {pred.backend}: "
                  f"total {pred.seconds:.2f} s = prepare {t['prepare']:.2f} + windows {t['windows']:.2f} "
                  f"+ postprocess {t['postprocess']:.2f}; peak GPU {torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB "
                  f"(goal: < 5 s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
