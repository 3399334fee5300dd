"""The compare output folder: CSV tables, ``compare.json`` (everything, for reopening
in the app), 3D snapshots and ``report.html``.

Files: ``metrics.csv`` (case x model), ``summary.csv`` (per model mean/sd),
``tests.csv`` (paired Wilcoxon per model pair and metric),
``dsc_by_diameter.csv`` + ``dsc_by_diameter_summary.csv``,
``bd_by_generation.csv`` + ``bd_by_generation_summary.csv``, ``failures.csv``,
``gate.csv`` (the output gate of models run by the compare), ``metrics_lobes.csv`` +
``metrics_lobes_summary.csv`` (TD/BD per lobe) and ``metrics_segments.csv`` (each segmental
bronchus of the reference: detected or not; unless ``--no-anatomy``), ``snapshots/<case>__<model>.png``,
``report.html``. Column names: docs/vocabulary.md. The set is written as one
(core.compare.outset): staged beside ``OUT`` and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.compare import stats
from core.compare.batch import METRIC_COLUMNS, CaseRow, CompareResult, CompareSettings, Failure
from core.compare.cache import Cache, text_key
from core.compare.outset import FORMAT_VERSION, RESULT_FILE, CompareFolder, identity
from core.errors import InputError
from core.outputs import atomic_write_bytes as atomic_write


def _csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> bytes:
    buf = io.StringIO()
    columns = columns or (list(rows[0]) if rows else [])
    w = csv.writer(buf)
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue().encode()


def _cell(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "" if math.isnan(v) else v
    return v


def gate_text(g: dict[str, Any] | None) -> str:
    if not g:
        return ""
    return "passed" if g.get("passed") else "failed: " + "; ".join(g.get("problems", []))


def metrics_rows(result: CompareResult) -> list[dict[str, Any]]:
    rows = []
    for r in result.rows:
        d: dict[str, Any] = {"case": r.case, "model": r.model}
        if result.gate:
            d["gate"] = gate_text(result.gate.get(r.model, {}).get(r.case))
        d.update({c: r.value(c) for c, _ in METRIC_COLUMNS})
        if result.settings.anatomy:
            d.update(segmental_columns(r))
        rows.append(d)
    return rows


def segmental_columns(r: CaseRow) -> dict[str, Any]:
    """The segmental bronchi of the case's reference the prediction detects and misses (names space-separated)."""
    from core.compare.anatomy import scores_of

    s = scores_of(r)
    if s is None:
        return {"segmental_detected": None, "segmental_total": None, "segmental_missed": None}
    seg = s.segmental
    return {
        "segmental_detected": len(seg.detected),
        "segmental_total": seg.total,
        "segmental_missed": " ".join(seg.missed),
    }


def gate_rows(result: CompareResult) -> list[dict[str, Any]]:
    """The output gate of every case x model the compare ran (``--models``)."""
    out = []
    for model, per in result.gate.items():
        for case in result.cases:
            g = per.get(case)
            if g is not None:
                out.append(
                    {
                        "case": case,
                        "model": model,
                        "passed": bool(g.get("passed")),
                        "problems": "; ".join(g.get("problems", [])),
                        "outside_fraction": g.get("outside_fraction"),
                        "touches_trachea": g.get("touches_trachea"),
                    }
                )
    return out


def tables(result: CompareResult) -> dict[str, list[dict[str, Any]]]:
    """Every table of the output, by file stem."""
    t = {
        "metrics": metrics_rows(result),
        "summary": stats.summary_rows(result),
        "tests": stats.paired_tests(result),
        "dsc_by_diameter": stats.diameter_rows(result),
        "dsc_by_diameter_summary": stats.diameter_summary(result),
        "bd_by_generation": stats.generation_rows(result),
        "bd_by_generation_summary": stats.generation_summary(result),
        "failures": [asdict(f) for f in result.failures],
    }
    if result.gate:
        t["gate"] = gate_rows(result)
    if result.settings.anatomy:
        from core.compare import anatomy

        t["metrics_lobes"] = anatomy.lobe_rows(result)
        t["metrics_lobes_summary"] = anatomy.lobe_summary(result)
        t["metrics_segments"] = anatomy.segment_rows(result)
    return t


# header of each table when it has no row (an empty CSV still says what it would hold)
EMPTY_COLUMNS = {
    "failures": ["case", "model", "message"],
    "metrics_lobes": ["case", "model", "lobe", "td", "bd", "branches", "detected", "length_mm"],
    "metrics_lobes_summary": ["model", "lobe", "n", "td_mean", "td_sd", "bd_mean", "bd_sd", "branches", "detected"],
    "metrics_segments": ["case", "model", "segment", "detected"],
}


def snapshot_name(case: str, model: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{case}__{model}")
    return f"{safe}.png"


PathMap = Callable[[str], str]


def _same(path: str) -> str:
    return path


def write_outputs(
    result: CompareResult,
    out: str | Path,
    *,
    snapshots: bool = True,
    cache_dir: str | Path | None = None,
    report: bool = True,
    say: Callable[[str], None] | None = None,
    overwrite: bool = True,
) -> dict[str, Any]:
    """Write every file into ``out`` as one set (staged, locked, swapped in: core.compare.outset);
    returns ``{"snapshots_note": str, "figures_note": str, "files": [...]}``.

    ``overwrite=False`` applies the CLI's policy (an ``out`` holding anything but this same
    comparison is refused); the library default replaces it, keeping the first original as ``OUT.bak``.
    """
    with CompareFolder(out, overwrite=overwrite, identity=run_identity(result), say=say) as folder:
        return write_set(result, folder, snapshots=snapshots, cache_dir=cache_dir, report=report, say=say)


def run_identity(result: CompareResult) -> dict[str, Any]:
    return identity(result.reference_dir, result.sources, result.ct_dir, asdict(result.settings))


def write_set(
    result: CompareResult,
    folder: Any,
    *,
    snapshots: bool = True,
    cache_dir: str | Path | None = None,
    report: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the files into ``folder.staging`` and commit it; an unchanged rerun rewrites nothing
    but ``compare.json``'s cache figures (the tests, plots and snapshots cost seconds of imports
    and rendering alone)."""
    out, staging = folder.out, folder.staging
    final: PathMap = folder.final
    key = outputs_key(result, snapshots, report, final)
    marker = out / ".outputs.json"
    try:
        last = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        last = {}
    if last.get("key") == key and all((out / f).exists() for f in last.get("files", [])):
        result.cache_stats["outputs_hits"] = result.cache_stats.get("outputs_hits", 0) + 1
        # one file, and the same rows: the set stays consistent
        atomic_write(out / RESULT_FILE, json.dumps(result_json(result, final), indent=1).encode())
        return dict(last["notes"])
    notes = write_files(result, staging, snapshots=snapshots, cache_dir=cache_dir, report=report, say=say, final=final)
    atomic_write(staging / ".outputs.json", json.dumps({"key": key, "files": notes["files"], "notes": notes}).encode())
    folder.commit()
    return notes


def write_files(
    result: CompareResult,
    target: Path,
    *,
    snapshots: bool = True,
    cache_dir: str | Path | None = None,
    report: bool = True,
    say: Callable[[str], None] | None = None,
    final: PathMap = _same,
) -> dict[str, Any]:
    """Every file of the set into ``target`` (a staging folder)."""
    target.mkdir(parents=True, exist_ok=True)
    t = tables(result)
    files = []
    for stem, rows in t.items():
        if stem in EMPTY_COLUMNS:
            atomic_write(target / f"{stem}.csv", _csv(rows, EMPTY_COLUMNS[stem]))
        else:
            atomic_write(target / f"{stem}.csv", _csv(rows))
        files.append(f"{stem}.csv")
    atomic_write(target / RESULT_FILE, json.dumps(result_json(result, final), indent=1).encode())
    files.append(RESULT_FILE)
    snap_note = ""
    shots: dict[tuple[str, str], Path] = {}
    if snapshots:
        shots, snap_note = make_snapshots(result, target / "snapshots", Cache(cache_dir), say=say)
    else:
        snap_note = "3D snapshots were not asked for (--no-snapshots)."
    fig_note = ""
    if report:
        from core.compare.report import build_report

        html, fig_note = build_report(result, t, shots, snap_note)
        atomic_write(target / "report.html", html.encode())
        files.append("report.html")
    files += [f"snapshots/{p.name}" for p in shots.values()]
    return {
        "snapshots_note": snap_note,
        "figures_note": fig_note,
        "files": files,
        "snapshots": {f"{c}|{m}": final(str(p)) for (c, m), p in shots.items()},
    }


def outputs_key(result: CompareResult, snapshots: bool, report: bool, final: PathMap = _same) -> str:
    """What the written files depend on: rows' content, failures, settings, order, options, gate, notes."""
    rows = [
        (r.case, r.model, r.reference_key, r.prediction_key, final(r.reference), final(r.prediction))
        for r in result.rows
    ]
    return text_key(
        "outputs",
        FORMAT_VERSION,
        result.models,
        result.cases,
        rows,
        [asdict(f) for f in result.failures],
        asdict(result.settings),
        result.reference_dir,
        result.sources,
        snapshots,
        report,
        result.gate,
        result.notes,
        [r.metrics.get("anatomy") for r in result.rows],  # the names of a reference may change (labeller)
    )


def make_snapshots(
    result: CompareResult, folder: Path, cache: Cache, say: Callable[[str], None] | None = None
) -> tuple[dict[tuple[str, str], Path], str]:
    """One PNG per evaluated case x model, from the cache when the masks are unchanged."""
    from core.compare.snapshot import SNAPSHOT_SIZE, render_jobs

    folder.mkdir(parents=True, exist_ok=True)
    s = result.settings
    shots: dict[tuple[str, str], Path] = {}
    jobs, pending = [], []
    for r in result.rows:
        target = folder / snapshot_name(r.case, r.model)
        key = text_key("snapshot", r.reference_key, r.prediction_key, list(SNAPSHOT_SIZE))
        cached = cache.path("snapshots", f"{key}.png")
        if cached is not None and cached.exists():
            cache.stats["snapshots_hits"] += 1
            shutil.copyfile(cached, target)
            shots[(r.case, r.model)] = target
            continue
        jobs.append(
            {
                "reference": r.reference,
                "prediction": r.prediction,
                "label_selector": s.label_selector,
                "prediction_selector": s.prediction_selector,
                "out": str(target),
            }
        )
        pending.append((r, target, cached))
    if jobs and say is not None:
        say(f"rendering {len(jobs)} 3D snapshot(s)")
    status, note = render_jobs(jobs)
    errors = []
    for r, target, cached in pending:
        err = status.get(str(target))
        if err == "" and target.exists():
            shots[(r.case, r.model)] = target
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(target, cached)
        elif err:
            errors.append(f"{r.case}/{r.model}: {err}")
    if errors and not note:
        note = f"{len(errors)} snapshot(s) failed: " + "; ".join(errors[:3])
    return shots, note


def result_json(result: CompareResult, final: PathMap = _same) -> dict[str, Any]:
    rows = []
    for r in result.rows:
        d = asdict(r)
        d["reference"], d["prediction"] = final(r.reference), final(r.prediction)
        rows.append(d)
    return {
        "format_version": FORMAT_VERSION,
        "models": result.models,
        "cases": result.cases,
        "reference_dir": result.reference_dir,
        "sources": result.sources,
        "ct_dir": result.ct_dir,
        "settings": asdict(result.settings),
        "cache_stats": result.cache_stats,
        "rows": rows,
        "failures": [asdict(f) for f in result.failures],
        "notes": list(result.notes),
        "gate": result.gate,
    }


def read_outputs(out: str | Path) -> CompareResult:
    """The :class:`CompareResult` saved in a compare output folder."""
    path = Path(out) / RESULT_FILE if Path(out).is_dir() else Path(out)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"Not a compare output folder ({exc}).",
            f"Open the folder written by `airway compare --out` (it holds {RESULT_FILE}).",
            path=path,
        ) from None
    if d.get("format_version") != FORMAT_VERSION:
        raise InputError(
            "This compare output was written by another version.", "Run `airway compare` again.", path=path
        )
    st = d.get("settings", {})
    st["diameter_edges"] = tuple(st.get("diameter_edges", (0, 2, 4, 6, 8)))
    return CompareResult(
        models=list(d["models"]),
        cases=list(d["cases"]),
        rows=[CaseRow(**r) for r in d["rows"]],
        failures=[Failure(**f) for f in d["failures"]],
        settings=CompareSettings(**st),
        cache_stats=d.get("cache_stats", {}),
        reference_dir=d.get("reference_dir", ""),
        sources=d.get("sources", {}),
        ct_dir=d.get("ct_dir", ""),
        notes=list(d.get("notes", [])),
        gate=dict(d.get("gate", {})),
    )
