"""collect: one cohort table and one item table from the per-model outputs → data/processed/.

cohort.parquet: one row per model (the reference included, is_reference=True): bpw, where the
member comes from (`source`: recipe, gguf:<file>, llama-quantize:<type>[+imatrix:<corpus>]) and its
2-D weight types (`types`, e.g. "Q5_0:166,Q6_K:14,Q8_0:1"), the
measurement variants (read from each quant's fidelity report), score_<task> and the composite.
items.parquet: every model's per-item outcomes (the source of truth for flips, the silent zone and
per-prompt analyses). A CSV copy of the cohort table sits beside it for people and spreadsheets.

Each report must have been made from the current params: its variants must be exactly the ones
params name, and its recipe the one params give (otherwise rerun that quant's fidelity stage).
"""

from __future__ import annotations

import json

import pandas as pd

from .. import io, provenance, variants
from ..errors import SilentzoneError
from ..layout import Layout
from ..schema import ITEM_KEYS, MODEL, REFERENCE, TOKEN_COLUMNS, scores, write_tables

# float32 work leaves ~1e-7 of rounding per token (docs/fidelity.md); anything below this is damage
KLD_TOLERANCE = 1e-5


def read_report(params, layout: Layout, quant: str) -> dict:
    path = layout.fidelity_report(quant)
    rerun = f"rerun `silentzone fidelity {quant}`"
    if not path.exists():
        raise SilentzoneError(f"{path}: missing; {rerun}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        found = dict(report["variants"])
        bpw = float(report["bpw"])
        quant_report = dict(report.get("quant_report") or {})
        stamp = dict(report.get("provenance") or {"files": {}})
        stamp["files"] = dict(stamp["files"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise SilentzoneError(f"{path}: damaged (not the JSON `silentzone fidelity` writes); {rerun}") from None
    provenance.verify(stamp, path, params, "fidelity", layout.fidelity, quant)
    # the report is its own stamp (no checksum covers it): its one number must at least be physical
    if not 0.0 < bpw <= 32.0:
        raise SilentzoneError(f"{path}: `bpw` = {bpw!r} is impossible (bits per weight lie in (0, 32]; damaged file); {rerun}")
    types = quant_report.get("matrix_types") or quant_report.get("formats") or {}
    return {
        "bpw": bpw,
        "variants": found,
        "unavailable": dict(report.get("unavailable") or {}),  # a served member's top-k cannot give these (docs/server.md)
        "source": str(quant_report.get("source", "recipe")),
        "types": ",".join(f"{t}:{n}" for t, n in sorted(types.items())),
    }


# Per-token columns a member measured through a server may leave NaN (its top-k cannot give them).
SERVED_NAN = ("kld", "rkld", "nll_q_greedy")


def check_per_token(table: pd.DataFrame, path, served: bool = False) -> None:
    """Physical sanity: every value finite, KL divergences and NLLs ≥ 0 (float tolerance), |dp| ≤ 1.
    (kld_topk is a truncated sum and may be negative.) A served member's SERVED_NAN columns may be NaN."""
    import numpy as np

    if list(table.columns) != TOKEN_COLUMNS:
        raise SilentzoneError(f"{path}: columns {list(table.columns)} are not a fidelity table's; rerun its fidelity stage")
    for col in ("kld", "rkld", "kld_topk", "nll_q", "nll_R", "nll_q_greedy", "dp"):
        values = table[col].to_numpy(np.float64)
        low = {"dp": -1.0, "kld_topk": -np.inf}.get(col, -KLD_TOLERANCE)
        bad = ~np.isfinite(values) | (values < low) | ((values > 1.0) if col == "dp" else False)
        if served and col in SERVED_NAN:
            bad &= ~np.isnan(values)
        if bad.any():
            i = int(bad.argmax())
            raise SilentzoneError(
                f"{path}: `{col}` = {values[i]!r} at row {i} is impossible (damaged file); rerun its fidelity stage"
            )


def cohort_rows(params, layout: Layout) -> list[dict]:
    rows = [
        {
            MODEL: REFERENCE,
            "is_reference": True,
            "bpw": 32.0,
            "source": REFERENCE,
            "types": "F32",
            **variants.reference_values(params),
        }
    ]
    for quant in params.quant_names():
        report = read_report(params, layout, quant)  # first: a damaged table is named by its stamped sha256
        per_token = io.read_parquet(layout.fidelity_table(quant), f"fidelity table of quant {quant!r}")
        served = bool(report["unavailable"])
        check_per_token(per_token, layout.fidelity_table(quant), served)
        found = variants.compute(per_token, params, skip=report["unavailable"])
        rows.append(
            {
                MODEL: quant,
                "is_reference": False,
                "bpw": report["bpw"],
                "source": report["source"],
                "types": report["types"],
                **{name: found.get(name, float("nan")) for name in params.variants},  # NaN: unavailable from a server
            }
        )
    return rows


def check_items(table: pd.DataFrame, path, model: str, expected: set | None, rerun: str, served: bool = False) -> None:
    """Physical sanity of one model's item table: its own rows, exactly the reference's items (a
    score over fewer items is a silent wrong number), a quant's per-prompt KLD finite and ≥ 0."""
    import numpy as np

    if (table[MODEL] != model).any():
        raise SilentzoneError(
            f"{path}: holds rows of model {table.loc[table[MODEL] != model, MODEL].iloc[0]!r}, not {model!r} (damaged or replaced); {rerun}"
        )
    if expected is not None:
        found = set(zip(table["task"], table["item_id"]))
        odd = sorted(expected ^ found)
        if odd:
            task, item = odd[0]
            what = "lacks the reference's item" if (task, item) in expected else "holds an item the reference lacks:"
            raise SilentzoneError(f"{path}: {what} {task}/{item} (damaged, or made from other items); {rerun}")
        kld = table["prompt_kld"].to_numpy(np.float64)
        bad = (~np.isfinite(kld) & ~(served & np.isnan(kld))) | (kld < -KLD_TOLERANCE)  # served: NaN, no full distribution
        if bad.any():
            i = int(bad.argmax())
            raise SilentzoneError(
                f"{path}: `prompt_kld` = {kld[i]!r} for item {table['task'].iloc[i]}/{table['item_id'].iloc[i]} is impossible (damaged file); {rerun}"
            )


def item_table(params, layout: Layout) -> pd.DataFrame:
    frames, expected = [], None
    for m in [REFERENCE, *params.quant_names()]:
        stage, name = ("bench-reference", None) if m == REFERENCE else ("bench", m)
        stamp_path = layout.bench_stamp(m)
        found = provenance.read_stamp(stamp_path, stage, name)
        provenance.verify(found, stamp_path, params, stage, layout.bench, name)
        frames.append(io.read_parquet(layout.bench_table(m), f"bench table of {m!r}"))
        served = found.get("engine", {}).get("kind") == "server"
        check_items(frames[-1], layout.bench_table(m), m, expected, f"rerun `{provenance.command(stage, name)}`", served)
        if m == REFERENCE:
            expected = set(zip(frames[-1]["task"], frames[-1]["item_id"]))
    items = pd.concat(frames, ignore_index=True)
    dupes = items.duplicated(ITEM_KEYS)
    if dupes.any():
        first = items[dupes].iloc[0]
        raise SilentzoneError(
            f"{layout.bench}: duplicate item {first['task']}/{first['item_id']} for model {first[MODEL]}; rerun its bench stage"
        )
    return items.sort_values(ITEM_KEYS, kind="stable").reset_index(drop=True)


def with_gold_logprob(items: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """The item table with `gold_logprob` (silentzone.bench.outcome), from each row's choice
    log-probabilities and its prepared item (the gold label and the choices)."""
    from .. import task_registry
    from ..bench.outcome import gold_logprob
    from ..data import items as bench_items

    values = pd.Series(float("nan"), index=items.index)
    for task, rows in items.groupby("task", sort=True):
        spec = task_registry.get_task(task)
        if spec.kind == "code":
            continue
        prepared = {it["item_id"]: it for it in bench_items.read_prepared(task, layout.prepared)}
        for index, item_id, logprobs in zip(rows.index, rows["item_id"], rows["choice_logprobs"]):
            if item_id not in prepared:
                raise SilentzoneError(
                    f"{layout.bench_items(task)}: no item {item_id!r}, which the bench tables hold; rerun `silentzone prepare` and the bench stages"
                )
            values[index] = gold_logprob(spec.kind, spec.metric, logprobs, prepared[item_id])
    return items.assign(gold_logprob=values)


def run(params, layout: Layout) -> str:
    cohort = pd.DataFrame(cohort_rows(params, layout))
    items = with_gold_logprob(item_table(params, layout), layout)
    cohort = cohort.merge(scores(items, params.composite_tasks()), on=MODEL, how="left", validate="one_to_one")
    missing = cohort.loc[cohort["composite"].isna(), MODEL].tolist()
    if missing:
        raise SilentzoneError(f"{layout.bench}: no benchmark outcomes for {', '.join(missing)}; run their bench stages")
    write_tables(layout.processed, cohort, items)
    provenance.write_stamp(
        layout.processed_stamp,
        params,
        "collect",
        [layout.processed / n for n in ("cohort.parquet", "cohort.csv", "items.parquet")],
    )
    return f"{layout.processed}/cohort.parquet: {len(cohort)} models; items.parquet: {len(items)} rows"
