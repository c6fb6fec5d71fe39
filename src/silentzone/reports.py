"""One function per analysis notebook: everything the notebook reports, computed and written here
(tables CSV, figures PNG + CSV through silentzone.plots, headline numbers JSON through
io.write_numbers); the notebook only calls it and displays what it returns.

Each function returns a dict: "summary" (one line on the cohort and its silent zone), the tables
as displayed (DataFrames, by name), "figures" (name -> PNG path) and "numbers" (what
numbers_path holds). Paths are relative to the run folder, the stage's working directory; the
paper's published values are read from its paper/published.yml.

Small cohorts complete: an analysis the cohort is too small for (fewer than `stats.min_n` quants
for a correlation, no quant with per-prompt KLD, fewer than two for routing) writes its empty
tables, figures that say why, and numbers with "refused" giving the reason. That key appears only
then, so the numbers of a complete run keep exactly the keys the manuscript reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from . import analyses, claims, config, io, noise, plots, published, stats, zone
from .config import Params
from .errors import SilentzoneError
from .layout import DEFAULT
from .schema import COMPOSITE, MODEL, REFERENCE, SIGNED, composite_items, quant_names, score_columns

PUBLISHED_VALUES = DEFAULT.paper / "published.yml"
KLD_LABEL = "mean KLD to the reference (nats/token, log scale)"
UNIFORM = "q8_0"  # the uniform 8-bit quant whose KLD and top-1 agreement the manuscript quotes


# ---------------------------------------------------------------- shared by the notebooks


@dataclass
class Cohort:
    """The processed tables and, once computed, the silent zone."""

    cohort: pd.DataFrame
    items: pd.DataFrame
    zone: pd.DataFrame | None = None

    @property
    def full(self) -> list[str]:
        return quant_names(self.cohort)

    @property
    def silent(self) -> list[str]:
        return zone.members(self.zone)

    def summary(self) -> str:
        return f"{len(self.full)} quants; silent zone ({self.zone.attrs['criterion']}): {len(self.silent)} -> {', '.join(self.silent)}"


def load(params: Params, processed_dir, with_zone: bool = True) -> Cohort:
    processed_dir = Path(processed_dir)
    data = Cohort(
        io.read_parquet(processed_dir / "cohort.parquet", "cohort table"),
        composite_items(io.read_parquet(processed_dir / "items.parquet", "item table"), params.composite_tasks()),
    )
    if with_zone:
        data.zone = zone.silent_zone(data.cohort, params, items=data.items)
    return data


def has_signed(cohort: pd.DataFrame) -> bool:
    """Whether the cohort carries the signed outcome (collected items with gold log-probabilities)."""
    return SIGNED in cohort and bool(cohort[SIGNED].notna().any())


def too_few_quants(params: Params, n: int) -> str | None:
    """Why no correlation of the cohort can be computed, or None."""
    return f"fewer than {params.stats.min_n} quants (n = {n}): every correlation is refused" if n < params.stats.min_n else None


def prompt_kld_available(items: pd.DataFrame) -> bool:
    """Whether some quant's items carry per-prompt KLD (ingested cohorts carry none)."""
    return bool(items.loc[items[MODEL] != REFERENCE, "prompt_kld"].notna().any())


def per_prompt_table(
    items: pd.DataFrame, analysis: Callable[[pd.DataFrame], pd.DataFrame], columns: list[str], min_quants: int, what: str
) -> tuple[pd.DataFrame, str | None]:
    """analysis(items) when at least `min_quants` quants carry per-prompt KLD; else an empty table
    with `columns` and the reason. A table with only some KLDs missing is the analysis's error."""
    n = items.loc[items[MODEL] != REFERENCE, MODEL].nunique()
    if not prompt_kld_available(items):
        why = "no quants in the cohort" if n == 0 else "no per-prompt KLD in the item table (ingested cohorts carry none)"
    elif n < min_quants:
        why = f"{what} needs at least {min_quants} quants with per-prompt KLD; the cohort has {n}"
    else:
        return analysis(items), None
    return pd.DataFrame(columns=columns), why


def published_value(path: Path, *keys: str) -> float:
    """A value the paper published, from paper/published.yml."""
    value = config.read_yaml(path)
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise SilentzoneError(
                f"{path}: no `{'.'.join(keys)}`; restore it (the paper's published values, see the file's header)"
            )
        value = value[key]
    return value


def options_of(params: Params, model, options: dict | None, name: str):
    """A notebook's options from its parameters cell, validated like params.yaml's; None (a run by
    hand) takes the notebook's options from params."""
    try:
        return model.model_validate(params.notebooks.options(name) if options is None else options)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        raise SilentzoneError(
            f"{params.source}: `notebooks.{name}.{key}`: {err['msg']}; fix it there (or the `options` given to the notebook)"
        ) from None


def write_numbers(path, numbers: dict) -> dict:
    """Write the headline numbers; return them as written (NaN as None), which is what the notebook
    shows and the manuscript reads."""
    io.write_numbers(path, numbers)
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _value(row: pd.Series, keys: list[str]) -> dict:
    return {k: (None if pd.isna(row[k]) else row[k]) for k in keys}


def _refused(numbers: dict, why: str | None) -> dict:
    if why:
        numbers["refused"] = why
    return numbers


def _extreme(values: pd.Series, how: str):
    return None if values.empty else float(getattr(values, how)())


# ---------------------------------------------------------------- 01 · fidelity vs score


def fidelity_vs_score(params: Params, processed_dir, figures_dir, tables_dir, numbers_path, options: dict | None = None) -> dict:
    """Every variant against the composite, full cohort and silent zone; the primary variant per task."""
    data = load(params, processed_dir, with_zone=False)
    cohort, primary, tables = data.cohort, params.stats.primary_variant, Path(tables_dir)
    targets = (COMPOSITE, SIGNED) if has_signed(cohort) else (COMPOSITE,)
    table, data.zone = zone.variant_correlations(cohort, params, data.items, targets=targets)
    io.write_csv(tables / "variants_full_vs_silent.csv", table, float_format="%.6g")
    zones = {"full": data.full, "silent": data.silent}
    per_task = stats.correlation_table(cohort, [primary], score_columns(cohort), params.stats_settings(), zones=zones)
    io.write_csv(tables / "primary_by_task.csv", per_task, float_format="%.6g")
    figure = plots.fidelity_vs_score(cohort, primary, data.silent, figures_dir, name="kld_vs_composite")
    summary = cohort[[MODEL, "bpw", primary, "top1_disagree", COMPOSITE]].sort_values(primary)
    io.write_csv(tables / "cohort_summary.csv", summary, float_format="%.6g")
    numbers = _refused(_fidelity_numbers(params, data, table), too_few_quants(params, len(data.full)))
    numbers = write_numbers(numbers_path, numbers)
    return {
        "summary": data.summary(),
        "figures": {"kld_vs_composite": figure},
        "numbers": numbers,
        "variants_full_vs_silent": table[
            ["zone", "target", "variant", "n", "rho", "ci_low", "ci_high", "p_perm", "p_holm", "refused"]
        ],
        "primary_by_task": per_task[["zone", "target", "n", "rho", "ci_low", "ci_high", "p_perm", "refused"]],
        "cohort_summary": summary,
    }


def _fidelity_numbers(params: Params, data: Cohort, table: pd.DataFrame) -> dict:
    cohort, primary = data.cohort, params.stats.primary_variant

    def pick(zone_name, variant, target=COMPOSITE):
        rows = table[(table["zone"] == zone_name) & (table["variant"] == variant) & (table["target"] == target)]
        if rows.empty:
            return {
                "n": None,
                "rho": None,
                "p_perm": None,
                "p_holm": None,
                "ci_low": None,
                "ci_high": None,
                "refused": "no signed outcome",
            }
        row = rows.iloc[0]
        return {**_value(row, ["n", "rho", "p_perm", "p_holm", "ci_low", "ci_high", "p_equiv"]), "refused": row["refused"] or ""}

    def significant(zone_name, target=COMPOSITE):
        of = table[(table["zone"] == zone_name) & (table["target"] == target)]
        return int((of["p_holm"].fillna(1.0) < 0.05).sum())

    def agreement(zone_name):  # top-1 *agreement* = 1 − top1_disagree, so its ρ is the variant's negated
        rho = pick(zone_name, "top1_disagree")["rho"]
        return {"rho": None if rho is None else -rho}

    silent_rhos = table.loc[(table["zone"] == "silent") & (table["target"] == COMPOSITE) & table["rho"].notna(), "rho"]
    quants = cohort[cohort[MODEL].isin(data.full)]
    uniform = cohort[cohort[MODEL] == UNIFORM]
    return {
        "n_quants": len(data.full),
        "n_silent": len(data.silent),
        "n_variants": len(params.variants),
        "silent_criterion": data.zone.attrs["criterion"],
        "primary": {"full": pick("full", primary), "silent": pick("silent", primary)},
        "primary_signed": {"full": pick("full", primary, SIGNED), "silent": pick("silent", primary, SIGNED)},
        "n_significant_signed_full": significant("full", SIGNED),
        "n_significant_signed_silent": significant("silent", SIGNED),
        "has_signed": has_signed(cohort),
        "top1_agreement": {z: agreement(z) for z in ("full", "silent")},
        "n_significant_full": significant("full"),
        "n_significant_silent": significant("silent"),
        "silent_rho_min": _extreme(silent_rhos, "min"),
        "silent_rho_max": _extreme(silent_rhos, "max"),
        "kld_mean_min": float(quants[primary].min()),
        "kld_mean_max": float(quants[primary].max()),
        "n_below_005": int((quants[primary] < 0.05).sum()),
        "reference_composite": zone.reference_score(cohort),
        "q8_0_kld_mean": None if uniform.empty else float(uniform[primary].iloc[0]),
        "q8_0_top1": None if uniform.empty else float(1 - uniform["top1_disagree"].iloc[0]),
    }


# ---------------------------------------------------------------- 02 · silent-zone sweep

SWEEP_AXES = {
    "margin": "silent-zone margin on |composite_q − composite_R| (share of items)",
    "lowest_k": "k quants with the lowest mean KLD",
}


def silent_zone_sweep(
    params: Params,
    processed_dir,
    figures_dir,
    tables_dir,
    numbers_path,
    options: dict | None = None,
    published_path: Path = PUBLISHED_VALUES,
) -> dict:
    """ρ of the primary variant and the composite as the zone grows by margin and by k."""
    data = load(params, processed_dir)
    sweep = zone.zone_sweep(data.cohort, params)
    io.write_csv(Path(tables_dir) / "zone_sweep.csv", sweep, float_format="%.6g")
    paper_rho = published_value(published_path, "qwen", "rho_silent")
    figures = {}
    for criterion, label in SWEEP_AXES.items():
        part = sweep[(sweep["criterion"] == criterion) & sweep["rho"].notna()].rename(columns={"threshold": criterion})
        figures[f"sweep_{criterion}"] = plots.zone_sweep(
            part[[criterion, "n", "rho", "ci_low", "ci_high", "p_perm"]],
            figures_dir,
            x=criterion,
            name=f"sweep_{criterion}",
            x_label=label,
            paper_value=paper_rho,
        )
    tests = claims.prepare(data.cohort, data.items, params, data.zone)
    curves = pd.concat([claims.curve(tests, o) for o in claims.OUTCOMES if tests.outcomes.get(o) is not None], ignore_index=True)
    io.write_csv(Path(tables_dir) / "rho_k.csv", curves, float_format="%.6g")
    figures["rho_k"] = plots.rho_k_curves(curves, figures_dir, params.verdicts.rho_margin)
    ok = sweep[sweep["rho"].notna()]
    by_k = ok[ok["criterion"] == "lowest_k"].sort_values("threshold")
    at_k = by_k[by_k["threshold"] == params.silent_zone.k]
    numbers = _refused(
        {
            "n_zones": int(len(sweep)),
            "n_refused": int(sweep["rho"].isna().sum()),
            "rho_min": _extreme(ok["rho"], "min"),
            "rho_max": _extreme(ok["rho"], "max"),
            "default_k": params.silent_zone.k,
            "rho_at_default_k": None if at_k.empty else float(at_k["rho"].iloc[0]),
            "rho_largest_k": None if by_k.empty else float(by_k["rho"].iloc[-1]),
            "largest_k": None if by_k.empty else int(by_k["threshold"].iloc[-1]),
            "rho_k": {o: _curve_numbers(curves[curves["outcome"] == o]) for o in curves["outcome"].unique()},
        },
        too_few_quants(params, len(data.full)),
    )
    numbers = write_numbers(numbers_path, numbers)
    return {
        "summary": data.summary(),
        "figures": figures,
        "numbers": numbers,
        "zone_sweep": sweep[["criterion", "threshold", "n", "rho", "ci_low", "ci_high", "p_perm", "refused"]],
        "rho_k": curves[["outcome", "k", "n", "rho", "ci_low", "ci_high", "p_perm", "p_equiv", "reliability", "powered"]],
    }


def _curve_numbers(curve: pd.DataFrame) -> dict:
    """Where an outcome's ρ(k) curve is reliable: how many zones, the smallest, and ρ there."""
    reliable = curve[curve["powered"].astype(bool) & curve["rho"].notna()]
    first = reliable.iloc[0] if len(reliable) else None
    return {
        "n_zones": int(len(curve)),
        "n_reliable": int(len(reliable)),
        "smallest_reliable_k": None if first is None else int(first["k"]),
        "rho_smallest_reliable": None if first is None else float(first["rho"]),
    }


# ---------------------------------------------------------------- 03 · failure prediction


def failure_prediction(
    params: Params,
    processed_dir,
    figures_dir,
    tables_dir,
    numbers_path,
    options: dict | None = None,
    published_path: Path = PUBLISHED_VALUES,
) -> dict:
    """Per-prompt KLD of failed against passed prompts: geometric-mean ratio and AUROC per quant."""
    data = load(params, processed_dir)
    fp, why = per_prompt_table(
        data.items,
        lambda items: analyses.failure_prediction(items, params.stats_settings()),
        analyses.FAILURE_COLUMNS,
        1,
        "failure prediction",
    )
    io.write_csv(Path(tables_dir) / "failure_prediction.csv", fp, float_format="%.6g")
    overall = fp[(fp["task"] == "all") & fp["gm_ratio"].notna()].copy()
    low, high = published_value(published_path, "gm_ratio_low"), published_value(published_path, "gm_ratio_high")
    figures = {
        "prompt_kld_failed_vs_passed": plots.prompt_kld_by_outcome(
            data.items.iloc[:0] if why else data.items, figures_dir, note=why
        ),
        "gm_ratio_per_model": plots.ratio_intervals(
            overall,
            figures_dir,
            "gm_ratio_per_model",
            "gm_ratio",
            "ci_low",
            "ci_high",
            "geometric-mean per-prompt KLD, failed / passed (95% bootstrap CI)",
            chance=1.0,
            paper_range=(low, high),
            note=why or "no rows to show (every row refused; see the table)",
        ),
    }
    silent_rows = overall[overall[MODEL].isin(data.silent)]
    numbers = _refused(
        {
            "prompt_kld_available": prompt_kld_available(data.items),
            "n_models": int(len(overall)),
            "gm_ratio_min": _extreme(overall["gm_ratio"], "min"),
            "gm_ratio_max": _extreme(overall["gm_ratio"], "max"),
            "gm_ratio_median": _extreme(overall["gm_ratio"], "median"),
            "gm_ratio_silent_min": _extreme(silent_rows["gm_ratio"], "min"),
            "gm_ratio_silent_max": _extreme(silent_rows["gm_ratio"], "max"),
            "auroc_min": _extreme(overall["auroc"], "min"),
            "auroc_max": _extreme(overall["auroc"], "max"),
            "auroc_median": _extreme(overall["auroc"], "median"),
            "n_refused": int(fp["refused"].notna().sum()),
        },
        why,
    )
    numbers = write_numbers(numbers_path, numbers)
    return {
        "summary": data.summary(),
        "figures": figures,
        "numbers": numbers,
        "failure_prediction": overall[[MODEL, "n_failed", "n_passed", "gm_ratio", "ci_low", "ci_high", "auroc"]],
    }


# ---------------------------------------------------------------- 04 · routing


def routing(
    params: Params,
    processed_dir,
    figures_dir,
    tables_dir,
    numbers_path,
    options: dict | None = None,
    published_path: Path = PUBLISHED_VALUES,
) -> dict:
    """KLD as a router between two quants on their disagreement prompts."""
    opts = options_of(params, config.RoutingOptions, options, "04-routing")
    data = load(params, processed_dir)
    routes, why = per_prompt_table(
        data.items, lambda items: analyses.routing(items, params.stats_settings()), analyses.ROUTING_COLUMNS, 2, "routing"
    )
    io.write_csv(Path(tables_dir) / "routing.csv", routes, float_format="%.6g")
    pairs = routes[(routes["task"] == "all") & routes["accuracy"].notna()].copy()
    pairs = pairs[pairs["n_routed"] >= opts.min_disagreements]
    pairs["pair"] = pairs["model_a"] + " | " + pairs["model_b"]
    silent_pairs = pairs[pairs["model_a"].isin(data.silent) & pairs["model_b"].isin(data.silent)]
    low, high = published_value(published_path, "routing_low"), published_value(published_path, "routing_high")
    figure = plots.ratio_intervals(
        _readable(pairs, silent_pairs),
        figures_dir,
        "routing_accuracy",
        "accuracy",
        "ci_low",
        "ci_high",
        "KLD-router accuracy on disagreement prompts (95% Clopper-Pearson CI)",
        chance=0.5,
        paper_range=(low, high),
        by="pair",
        note=why or f"no pair with {opts.min_disagreements} or more routed prompts",
    )
    pooled = pairs["n_correct"].sum() / pairs["n_routed"].sum() if len(pairs) else None
    baselines = _router_baselines(params, data) if not why else None
    io.write_csv(
        Path(tables_dir) / "router_baselines.csv",
        pd.DataFrame(columns=ROUTER_BASELINE_COLUMNS) if baselines is None else baselines["table"],
        float_format="%.6g",
    )
    numbers = _refused(
        {
            "prompt_kld_available": prompt_kld_available(data.items),
            "n_pairs": int(len(pairs)),
            "n_silent_pairs": int(len(silent_pairs)),
            "accuracy_min": _extreme(pairs["accuracy"], "min"),
            "accuracy_max": _extreme(pairs["accuracy"], "max"),
            "accuracy_median": _extreme(pairs["accuracy"], "median"),
            "accuracy_pooled": None if pooled is None else float(pooled),
            "silent_accuracy_min": _extreme(silent_pairs["accuracy"], "min"),
            "silent_accuracy_max": _extreme(silent_pairs["accuracy"], "max"),
            "share_below_chance": None if pairs.empty else float((pairs["accuracy"] < 0.5).mean()),
            "baselines": None if baselines is None else baselines["numbers"],
        },
        why,
    )
    numbers = write_numbers(numbers_path, numbers)
    shown = pairs.sort_values("accuracy")[["pair", "n_disagree", "n_routed", "accuracy", "ci_low", "ci_high", "p_binom"]]
    return {
        "summary": data.summary(),
        "figures": {"routing_accuracy": figure},
        "numbers": numbers,
        "routing": shown,
        "router_baselines": None if baselines is None else baselines["table"],
    }


ROUTER_BASELINE_COLUMNS = ["pairs", "router", "n_routed", "accuracy", "ci_low", "ci_high"]


def _router_baselines(params: Params, data: Cohort) -> dict | None:
    """The per-prompt KLD router against chance, the mean-KLD router and the best fixed choice, pooled
    over every pair and over the silent-zone pairs (claims.claim4: cluster bootstrap over prompts)."""
    test = claims.claim4(claims.prepare(data.cohort, data.items, params, data.zone))
    if not test["available"]:
        return None
    rows, numbers = [], {}
    for scope in ("pooled", "silent"):
        s = test[scope]
        numbers[scope] = {"n_pairs": s["n_pairs"], "n_routed": s["n_routed"], "n_prompts": s["n_prompts"], "chance": s["chance"]}
        for router in ("per_prompt", "mean_kld", "oracle_fixed", "gain"):
            numbers[scope][router] = {
                "accuracy": s[router]["accuracy"],
                "ci_low": s[router]["ci"][0],
                "ci_high": s[router]["ci"][1],
            }
            rows.append(
                {
                    "pairs": s["pairs"],
                    "router": router,
                    "n_routed": s["n_routed"],
                    "accuracy": s[router]["accuracy"],
                    "ci_low": s[router]["ci"][0],
                    "ci_high": s[router]["ci"][1],
                }
            )
    return {"table": pd.DataFrame(rows), "numbers": numbers}


def _readable(pairs: pd.DataFrame, silent_pairs: pd.DataFrame, most: int = 40) -> pd.DataFrame:
    """The pairs a figure can show legibly: the silent-zone pairs if few enough, else the `most`
    pairs with the most routed prompts."""
    if 0 < len(silent_pairs) <= most:
        return silent_pairs
    return pairs.nlargest(min(most, len(pairs)), "n_routed") if len(pairs) else pairs


# ---------------------------------------------------------------- 05 · volume and direction


def volume_direction(params: Params, processed_dir, figures_dir, tables_dir, numbers_path, options: dict | None = None) -> dict:
    """Flips against the reference (volume, direction) and their correlation with KLD."""
    data = load(params, processed_dir)
    primary, tables = params.stats.primary_variant, Path(tables_dir)
    flip_table = analyses.flips(data.items)
    io.write_csv(tables / "flips.csv", flip_table, float_format="%.6g")
    corr = analyses.flip_correlations(
        data.cohort,
        flip_table,
        [primary, "top1_disagree"],
        params.stats_settings(),
        zones={"full": data.full, "silent": data.silent},
    )
    io.write_csv(tables / "flip_correlations.csv", corr, float_format="%.6g")
    per_quant = flip_table.merge(data.cohort[[MODEL, primary]], on=MODEL).rename(columns={"volume_rate": "volume_share"})
    figure = plots.volume_direction(
        per_quant[[MODEL, "task", primary, "volume_share", "direction", "leapfrogs", "drops", "n_items"]],
        primary,
        figures_dir,
        x_label=KLD_LABEL,
    )
    flip_numbers, signed_corr = _flip_numbers(flip_table, corr, primary), None
    if not has_signed(data.cohort):  # ingested cohorts: the manuscript's table says there is none
        io.write_csv(tables / "signed_flip_correlations.csv", corr.iloc[:0], float_format="%.6g")
    else:
        signed = analyses.signed_flips(data.items)
        io.write_csv(tables / "signed_flips.csv", signed, float_format="%.6g")
        signed_corr = analyses.flip_correlations(
            data.cohort, signed, [primary], params.stats_settings(), zones={"full": data.full, "silent": data.silent}
        )
        io.write_csv(tables / "signed_flip_correlations.csv", signed_corr, float_format="%.6g")
        flip_numbers["signed"] = _flip_numbers(signed, signed_corr, primary, signed=True)
    numbers = _refused(flip_numbers, too_few_quants(params, len(data.full)))
    numbers = write_numbers(numbers_path, numbers)
    return {
        "summary": data.summary(),
        "figures": {"kld_vs_volume_direction": figure},
        "numbers": numbers,
        "flips": flip_table[flip_table["task"] == COMPOSITE],
        "flip_correlations": corr[corr["variant"] == primary][
            ["zone", "target", "n", "rho", "ci_low", "ci_high", "p_perm", "refused"]
        ],
        "signed_flip_correlations": None
        if signed_corr is None
        else signed_corr[signed_corr["target"].str.endswith(":composite")][
            ["zone", "target", "n", "rho", "ci_low", "ci_high", "p_perm", "p_equiv", "refused"]
        ],
    }


def identity_errors(flip_table: pd.DataFrame, signed: bool = False) -> tuple[float, float]:
    """Largest |delta − (L − D)/N| and |delta − volume·(2f − 1)/N| over quants and tasks: the
    decomposition is an identity, checked on the data before it is used. For the signed outcome
    (analyses.signed_flips) L and D count items moving up and down, so only the second applies and
    is returned twice."""
    tasks = flip_table[flip_table["task"] != COMPOSITE]
    if signed:
        moved = tasks[tasks["volume"] > 0]
        error = float((moved["delta"] - moved["volume_rate"] * (2 * moved["direction"] - 1)).abs().max()) if len(moved) else 0.0
        return error, error
    error = float((tasks["delta"] - (tasks["leapfrogs"] - tasks["drops"]) / tasks["n_items"]).abs().max())
    flipped = tasks[tasks["volume"] > 0]
    if flipped.empty:
        return error, 0.0
    return error, float((flipped["delta"] - flipped["volume"] * (2 * flipped["direction"] - 1) / flipped["n_items"]).abs().max())


def _flip_numbers(flip_table: pd.DataFrame, corr: pd.DataFrame, primary: str, signed: bool = False) -> dict:
    def pick(zone_name, target):
        row = corr[(corr["zone"] == zone_name) & (corr["variant"] == primary) & (corr["target"] == target)]
        if row.empty:
            return {"rho": None, "p_perm": None, "ci_low": None, "ci_high": None, "n": 0}
        return _value(row.iloc[0], ["n", "rho", "p_perm", "ci_low", "ci_high"])

    error, error_f = identity_errors(flip_table, signed)
    composite = flip_table[flip_table["task"] == COMPOSITE]
    return {
        "identity_max_abs_error": error,
        "identity_f_max_abs_error": error_f,
        "volume": {z: pick(z, "volume:composite") for z in ("full", "silent")},
        "direction": {z: pick(z, "direction:composite") for z in ("full", "silent")},
        "volume_share_min": float(composite["volume_rate"].min()),
        "volume_share_max": float(composite["volume_rate"].max()),
        "direction_min": float(composite["direction"].min()),
        "direction_max": float(composite["direction"].max()),
    }


# ---------------------------------------------------------------- 06 · published cohorts


def published_cohorts(params: Params, external_dir, tables_dir, numbers_path, options: dict | None = None) -> dict:
    """The full-cohort and silent-zone correlations on each published table of `options.cohorts`."""
    opts = options_of(params, config.PublishedOptions, options, "06-published-cohorts")
    docs, tidy_tables = {}, []
    for name, spec in opts.cohorts.items():
        doc, tidy = published.analyze(
            Path(external_dir) / f"{name}.csv",
            spec.fidelity,
            spec.score,
            reference_row=spec.reference_row,
            margin=spec.silent_margin,
            k=spec.silent_k,
            seed=params.seed,
            resamples=opts.resamples,
        )
        docs[name] = doc
        tidy_tables.append(tidy.assign(cohort=name))
        io.write_json(Path(tables_dir) / f"{name}.correlations.json", doc)
    tidy = pd.concat(tidy_tables, ignore_index=True)
    io.write_csv(Path(tables_dir) / "published_correlations.csv", tidy, float_format="%.6g")
    numbers = {_short(name): _published_numbers(doc) for name, doc in docs.items()}
    numbers = write_numbers(numbers_path, numbers)
    return {
        "summary": "\n".join(published.report(doc) for doc in docs.values()),
        "figures": {},
        "numbers": numbers,
        "published_correlations": tidy,
    }


def _short(name: str) -> str:
    """'qwen3.5-35b-a3b__apex-quant' -> 'qwen3_5_35b_a3b': a key Quarto's {{< var >}} can address."""
    return name.split("__")[0].replace("-", "_").replace(".", "_")


def _published_numbers(doc: dict) -> dict:
    first = doc["results"][0]
    full, silent = first["full"], first["silent"]
    return {
        "fidelity": first["fidelity"],
        "n": full["n"],
        "score": ", ".join(doc["score"]),
        "rho_full": full["rho"],
        "p_full": full["p_perm"],
        "ci_low_full": full["ci_low"],
        "ci_high_full": full["ci_high"],
        "n_silent": len(silent["members"]),
        "rho_silent": silent["rho"],
        "p_silent": silent["p_perm"],
        "silent_refused": silent["refused"] or "",
    }


# ---------------------------------------------------------------- 07 · noise ceiling


def noise_ceiling(params: Params, processed_dir, figures_dir, tables_dir, numbers_path, options: dict | None = None) -> dict:
    """How much the benchmark can see: split-half reliability of every score across quants, the
    attenuation-corrected ρ, the silent-zone ρ a perfect KLD ranking would show through item noise,
    the minimal detectable difference per quant and the power verdict (silentzone.noise)."""
    opts = options_of(params, config.NoiseOptions, options, "07-noise-ceiling")
    data = load(params, processed_dir)
    result = noise.noise_ceiling(data.cohort, data.items, data.zone, params, opts)
    tables = Path(tables_dir)
    io.write_csv(tables / "reliability.csv", result.reliability, float_format="%.6g")
    io.write_csv(tables / "attenuation.csv", result.attenuation, float_format="%.6g")
    io.write_csv(tables / "detectable_difference.csv", result.mdd, float_format="%.6g")
    io.write_csv(tables / "simulation.csv", result.simulation, float_format="%.6g")
    why = too_few_quants(params, len(data.full))
    full = result.reliability[result.reliability["zone"] == "full"]
    observed = {
        z: (None if pd.isna(r) else float(r)) for z, r in zip(result.simulation["zone"], result.simulation["rho_observed"])
    }
    sim_refused = result.simulation["refused"].dropna()
    rel_refused = full.loc[full["reliability"].isna(), "refused"].dropna()
    figures = {
        "simulated_silent_rho": plots.simulated_rho(
            result.replicates,
            observed,
            figures_dir,
            note=str(sim_refused.iloc[0]) if len(sim_refused) == len(result.simulation) else None,
        ),
        "split_half_reliability": plots.reliability_by_score(
            full,
            figures_dir,
            threshold=params.verdicts.min_reliability,
            note=None if full["reliability"].notna().any() or rel_refused.empty else str(rel_refused.iloc[0]),
        ),
    }
    numbers = write_numbers(numbers_path, _refused(result.numbers, why))
    power = result.numbers["power"]
    summary = f"{data.summary()}\npower: {power['verdict']} ({power['reason']})"
    return {
        "summary": summary,
        "figures": figures,
        "numbers": numbers,
        "reliability": result.reliability[
            ["zone", "score", "n_quants", "n_items", "reliability", "low", "high", "reliability_pearson", "refused"]
        ],
        "attenuation": result.attenuation,
        "simulation": result.simulation,
        "detectable_difference": result.mdd,
    }
