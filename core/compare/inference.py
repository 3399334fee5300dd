"""Run each model's checkpoint over a folder of CTs (as ``airway segment`` does) and
keep the masks, so the comparison can evaluate them like any predictions folder.

A mask is reused when its CT file, checkpoint file and settings are unchanged:
``OUT/predictions/<model>/.keys.json`` records the key each mask was made with,
and the output gate's verdict on it (core.gate, as ``airway segment`` applies it:
does the mask touch the CT's trachea and stay inside the lungs?). Masks are named
by :mod:`core.casenames` (``CASE_0000.nii.gz`` -> ``CASE.nii.gz``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.casenames import case_id, mask_name
from core.compare.batch import Failure
from core.compare.cache import Cache, text_key
from core.errors import AirwayError, Cancelled, InputError
from core.outputs import atomic_write_bytes as atomic_write
from core.progress import Progress


def predict_folders(
    ct_dir: str | Path,
    models: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    device: str = "auto",
    backend: str = "auto",
    threads: int | None = None,
    cache: Cache | None = None,
    progress: Progress | None = None,
    cancel: Any = None,
    say: Callable[[str], None] | None = None,
    gate: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> tuple[dict[str, Path], list[Failure]]:
    """``({model: folder of <case>.nii.gz masks}, failures)``; predictions go to ``out_dir/<model>/``.
    ``gate`` (filled when given): model -> case -> the output gate's ``GateReport.as_dict()``."""
    from core.casenames import find_images

    cts = find_images(ct_dir)
    cache = cache or Cache(None)
    out_dir = Path(out_dir)
    dirs: dict[str, Path] = {}
    failures: list[Failure] = []
    total = len(cts) * len(models)
    done = 0
    for model, ckpt in models.items():
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise InputError(
                f"Checkpoint of model '{model}' not found.", "Give NAME=CKPT with an existing .pt file.", path=ckpt
            )
        folder = out_dir / model
        folder.mkdir(parents=True, exist_ok=True)
        dirs[model] = folder
        keys_path = folder / ".keys.json"
        try:
            keys = json.loads(keys_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            keys = {}
        ck = cache.digest(ckpt)
        predictor = None
        for name, ct_path in cts:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if progress is not None:
                progress(done, total, f"segmenting {name} with {model}")
            done += 1
            target = folder / mask_name(name)
            try:
                ct_key = cache.digest(ct_path) if ct_path.is_file() else str(ct_path.resolve())
                key = text_key("predict", ck, ct_key, device, backend)
                known = keys.get(target.name)
                if target.exists() and isinstance(known, dict) and known.get("key") == key and "gate" in known:
                    cache.stats["predictions_hits"] += 1
                    if gate is not None:
                        gate.setdefault(model, {})[case_id(name)] = known["gate"]
                    continue
                if predictor is None:
                    predictor = _predictor(ckpt, device, backend, threads, say)
                verdict = _segment(predictor, ct_path, target, cancel)
                cache.stats["predictions_made"] += 1
                keys[target.name] = {"key": key, "gate": verdict}
                if gate is not None:
                    gate.setdefault(model, {})[case_id(name)] = verdict
                atomic_write(keys_path, json.dumps(keys, indent=1).encode())
            except Cancelled:
                raise
            except (AirwayError, OSError, ValueError, MemoryError) as exc:
                from core.compare.batch import _message

                failures.append(Failure(case_id(name), model, f"segmentation: {_message(exc)}"))
                if target.exists() and keys.get(target.name) is None:
                    target.unlink()
    cache.save()
    return dirs, failures


def _predictor(ckpt: Path, device: str, backend: str, threads: int | None, say: Any) -> Any:
    from core.segmentation import PostProcessing, Predictor

    # airway segment's defaults: the checkpoint's own window/step, threshold 0.5, largest 26-component
    return Predictor(
        ckpt,
        device=device,
        window=None,
        step=None,
        backend=backend,
        postprocess=PostProcessing(),
        say=say,
        threads=threads,
    )


def _segment(predictor: Any, ct_path: Path, target: Path, cancel: Any) -> dict[str, Any]:
    """Segment one CT into ``target``; the output gate's verdict on the mask (as ``airway segment``)."""
    from core.gate import check_mask
    from core.io import read_ct, write_volume

    ct = read_ct(ct_path)
    pred = predictor.predict(ct, cancel=cancel)
    write_volume(pred.mask, target)
    return check_mask(ct, pred.mask.mask).as_dict()
