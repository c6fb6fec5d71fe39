"""One function per figure. Each draws with seaborn/matplotlib, saves <name>.png and the exact data
behind it as <name>.csv (so every figure can be re-plotted or checked without the notebook). A
figure with nothing to draw is still written, saying why, so the manuscript's reference holds."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import io  # noqa: E402
from .schema import COMPOSITE, MODEL, REFERENCE  # noqa: E402

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
PAPER_COLOR = "#c0392b"


def save(fig, data: pd.DataFrame, figures_dir, name: str) -> Path:
    """<figures_dir>/<name>.png (deterministic metadata) and <name>.csv beside it."""
    figures_dir = Path(figures_dir)
    png = figures_dir / f"{name}.png"
    with io.atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    io.write_csv(figures_dir / f"{name}.csv", data, float_format="%.9g")
    plt.close(fig)
    return png


def empty(data: pd.DataFrame, figures_dir, name: str, note: str, x_label: str = "", size=(6.4, 2.5)) -> Path:
    """A figure that says why it shows nothing (a refusal, no rows), with its (empty) data beside it."""
    fig, ax = plt.subplots(figsize=size)
    # wrapped by hand: matplotlib's wrap=True wraps at the figure's edge, so a long note overran the frame
    ax.text(0.5, 0.5, textwrap.fill(note, 60), ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(x_label)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    return save(fig, data, figures_dir, name)


# The tallest figure, in inches: one row per quant or pair grew past an A4 page (30 rows at 0.3 in), and
# Typst then printed the caption over the page number. Rows share what fits; their labels shrink to match.
MAX_HEIGHT = 7.0


def row_height(rows: int, per_row: float, base: float, least: float = 2.5) -> float:
    """A figure's height for `rows` labelled rows, capped at MAX_HEIGHT."""
    return min(MAX_HEIGHT, max(least, per_row * rows + base))


def row_label_size(height: float, rows: int, base: float) -> float:
    """Tick-label points that fit one row of a figure `height` inches tall (9 pt at most)."""
    return min(9.0, 0.8 * 72 * (height - base) / max(rows, 1))


def legend_below(fig, axes, ncol: int = 2) -> None:
    """The legend of `axes` under the figure, outside every axes, so it never covers data (a legend
    placed inside hid a point of the published sweep figure). The figure must use layout="constrained",
    which makes room for it."""
    handles, labels = {}, []
    for ax in axes if isinstance(axes, (list, tuple)) else [axes]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles and not label.startswith("_"):
                handles[label] = handle
                labels.append(label)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if labels:
        fig.legend(
            [handles[k] for k in labels],
            labels,
            loc="outside lower center",
            ncol=min(ncol, len(labels)),
            fontsize=8,
            frameon=False,
        )


def stagger_labels(ax, texts: list) -> None:
    """Move each label (annotations placed in one row above the axes, left to right) up a row until it
    clears the labels before it, so neighbouring labels never print over each other; rows are
    1.4 text heights apart."""
    renderer = ax.figure.canvas.get_renderer()
    rows: list[float] = []  # right edge (pixels) of the last label in each row
    for text in texts:
        box = text.get_window_extent(renderer)
        pad = 0.3 * box.height
        row = next((i for i, right in enumerate(rows) if box.x0 > right + pad), len(rows))
        if row == len(rows):
            rows.append(box.x1)
        rows[row] = box.x1
        x, y = text.get_position()
        text.set_position((x, y + row * 1.4 * box.height / ax.get_window_extent(renderer).height))


def fidelity_vs_score(
    cohort: pd.DataFrame,
    x: str,
    silent_members: list[str],
    figures_dir,
    name="kld_vs_composite",
    x_label="mean KLD to the reference (nats/token, log scale)",
    y=COMPOSITE,
):
    data = cohort[[MODEL, x, y, "bpw"]].copy()
    data["zone"] = [REFERENCE if q == REFERENCE else ("silent" if q in set(silent_members) else "outside") for q in data[MODEL]]
    plot = data[data[MODEL] != REFERENCE]
    if plot.empty:
        return empty(data, figures_dir, name, "no quants in the cohort: nothing to plot", x_label)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    sns.scatterplot(
        data=plot,
        x=x,
        y=y,
        hue="zone",
        style="zone",
        hue_order=["silent", "outside"],
        style_order=["silent", "outside"],
        s=60,
        ax=ax,
    )
    ref = data[data[MODEL] == REFERENCE]
    if len(ref):
        ax.axhline(float(ref[y].iloc[0]), color="black", lw=1, ls="--", label="reference score")
    if (plot[x] > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("benchmark composite (share of items correct)")
    legend_below(fig, ax, ncol=3)
    return save(fig, data, figures_dir, name)


def zone_sweep(sweep: pd.DataFrame, figures_dir, x: str, name: str, x_label: str, paper_value: float | None = None):
    """ρ (with CI band) as the silent zone grows; `sweep` has columns x, n, rho, ci_low, ci_high."""
    if sweep.empty:
        return empty(
            sweep, figures_dir, name, "every zone's correlation was refused (see the table's `refused`): nothing to plot", x_label
        )
    # Refused rows made these columns object dtype (None); matplotlib needs floats.
    values = sweep[[x, "rho", "ci_low", "ci_high"]].astype(float)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    ax.axhline(0, color="black", lw=1.0, zorder=1, label="ρ = 0")
    ax.fill_between(values[x], values["ci_low"], values["ci_high"], color="C0", alpha=0.2, zorder=2, label="95% bootstrap CI")
    ax.plot(values[x], values["rho"], marker="o", color="C0", zorder=3, label="Spearman ρ in the zone")
    if paper_value is not None:
        # a mark on the right edge, not a line across: the paper's silent-zone value is 0.00 for Qwen,
        # and a line there hid the ρ = 0 line
        ax.plot(
            [1.0], [paper_value], transform=ax.get_yaxis_transform(), marker="<", ms=9, color=PAPER_COLOR, ls="none", clip_on=False, zorder=5,
            label=f"paper, silent zone (ρ = {paper_value:+.2f})",
        )  # fmt: skip
    labels = [
        ax.annotate(f"n={n}", (xv, 1.01), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7)
        for xv, n in sorted(zip(values[x], sweep["n"]))
    ]
    ax.set_xlabel(x_label)
    ax.set_ylabel("Spearman ρ (KLD vs composite)")
    ax.set_ylim(-1.05, 1.05)
    stagger_labels(ax, labels)
    legend_below(fig, ax, ncol=2)
    return save(fig, sweep, figures_dir, name)


OUTCOME_STYLE = {"accuracy": ("C0", "o", "accuracy"), "signed": ("C3", "s", "signed outcome (Δ log p of the gold answer)")}


def rho_k_curves(curves: pd.DataFrame, figures_dir, margin: float, name: str = "rho_k"):
    """ρ(mean KLD, outcome) over the zones of the k lowest-KLD quants, one line per outcome with its 95 %
    bootstrap band; hollow markers where the outcome is not reliable across the zone's quants (the
    verdicts ignore those points); the ±margin of "no relation" shaded. The CSV is `curves` wide, one row
    per k and one column per outcome and quantity (rho_accuracy, ci_low_signed, ...), so `dvc plots`
    draws both outcomes from it."""
    ok = curves[curves["rho"].notna()]
    if ok.empty:
        return empty(curves, figures_dir, name, "every zone's correlation was refused: nothing to plot", "k")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    ax.axhspan(-margin, margin, color="0.9", zorder=0, label=f"no relation (|ρ| < {margin:g})")
    ax.axhline(0, color="black", lw=0.8, zorder=1)
    for outcome, part in ok.groupby("outcome", sort=False):
        color, marker, label = OUTCOME_STYLE.get(outcome, ("C2", "^", outcome))
        values = part[["k", "rho", "ci_low", "ci_high"]].astype(float)
        ax.plot(values["k"], values["rho"], color=color, lw=1.2, label=label, zorder=3)
        ax.fill_between(values["k"], values["ci_low"], values["ci_high"], color=color, alpha=0.15, zorder=2)
        reliable = part["powered"].astype(bool).to_numpy()
        ax.scatter(values["k"][reliable], values["rho"][reliable], color=color, marker=marker, zorder=4)
        ax.scatter(values["k"][~reliable], values["rho"][~reliable], facecolor="white", edgecolor=color, marker=marker, zorder=4)
    ax.scatter([], [], facecolor="white", edgecolor="0.3", marker="o", label="outcome not reliable in the zone")
    ax.set_xlabel("k: the zone of the k quants with the lowest mean KLD")
    ax.set_ylabel("Spearman ρ with mean KLD (95% CI)")
    ax.set_ylim(-1.05, 1.05)
    legend_below(fig, ax, ncol=2)  # beside the axes it took half the figure's width
    quantities = [c for c in ("rho", "ci_low", "ci_high", "reliability", "powered") if c in curves]
    wide = curves.pivot(index="k", columns="outcome", values=quantities)
    wide.columns = [f"{what}_{outcome}" for what, outcome in wide.columns]
    return save(fig, wide.reset_index(), figures_dir, name)


def prompt_kld_by_outcome(items: pd.DataFrame, figures_dir, name="prompt_kld_failed_vs_passed", note: str | None = None):
    """`note`: why there is nothing to show (no per-prompt KLD), drawn instead of the boxes."""
    data = items.loc[items[MODEL] != REFERENCE, [MODEL, "task", "item_id", "correct", "prompt_kld"]].copy()
    data["outcome"] = data["correct"].map({True: "passed", False: "failed"})
    plot = data[data["prompt_kld"] > 0]
    x_label = "per-prompt mean KLD to the reference (nats/token, log scale)"
    if note or plot.empty:
        return empty(data, figures_dir, name, note or "no quant prompt with a KLD above 0: nothing to plot", x_label)
    rows = data[MODEL].nunique()
    height = row_height(rows, 0.28, 1.5, least=3.0)
    fig, ax = plt.subplots(figsize=(7.0, height), layout="constrained")
    sns.boxplot(
        data=plot, y=MODEL, x="prompt_kld", hue="outcome", hue_order=["passed", "failed"], log_scale=True, fliersize=1, ax=ax
    )
    ax.set_xlabel(x_label)
    ax.set_ylabel("quant")
    ax.tick_params(axis="y", labelsize=row_label_size(height, rows, 1.5))
    legend_below(fig, ax)
    return save(fig, data, figures_dir, name)


def ratio_intervals(
    table: pd.DataFrame,
    figures_dir,
    name: str,
    value: str,
    low: str,
    high: str,
    label: str,
    chance: float | None = None,
    paper_range: tuple[float, float] | None = None,
    by: str = MODEL,
    note: str = "no rows to show (every row refused; see the table)",
):
    """A dot with its CI per row (GM ratios per model, routing accuracy per pair); `note` says why
    when there is no row."""
    data = table.sort_values(value).reset_index(drop=True)
    if data.empty:
        return empty(data, figures_dir, name, note, label)
    height = row_height(len(data), 0.3, 1.2)
    fig, ax = plt.subplots(figsize=(6.4, height), layout="constrained")
    ax.errorbar(
        data[value],
        range(len(data)),
        xerr=[data[value] - data[low], data[high] - data[value]],
        fmt="o",
        color="C0",
        ecolor="C0",
        capsize=2,
    )
    ax.set_yticks(range(len(data)), data[by], fontsize=row_label_size(height, len(data), 1.2))
    if chance is not None:
        ax.axvline(chance, color="black", lw=0.8, ls="--", label=f"chance / no signal ({chance:g})")
    if paper_range is not None:
        ax.axvspan(*paper_range, color=PAPER_COLOR, alpha=0.15, label=f"paper range [{paper_range[0]:g}, {paper_range[1]:g}]")
    ax.set_xlabel(label)
    legend_below(fig, ax)
    return save(fig, data, figures_dir, name)


def same_series(data: pd.DataFrame, x: str, task: str, other: str) -> bool:
    """Whether two tasks' points coincide quant by quant (the composite of one task is that task)."""
    a = data[data["task"] == task].set_index(MODEL)[[x, "volume_share", "direction"]].sort_index()
    b = data[data["task"] == other].set_index(MODEL)[[x, "volume_share", "direction"]].sort_index()
    return len(a) == len(b) and a.index.equals(b.index) and bool(((a - b).abs().fillna(0) < 1e-12).all().all())


def volume_direction(flips: pd.DataFrame, x: str, figures_dir, name="kld_vs_volume_direction", x_label="mean KLD (nats/token)"):
    """Left: KLD vs flip volume (share of items flipped); right: KLD vs direction f. A task whose points
    are the composite's (a composite of one task) is drawn once, as "composite (= TASK)": drawn twice,
    one series hid the other. The CSV keeps every row."""
    data = flips.copy()
    if data.empty:
        return empty(data, figures_dir, name, "no quants in the cohort: no flips to plot", x_label)
    plot = data.copy()
    if COMPOSITE in set(plot["task"]):
        same = [t for t in plot["task"].unique() if t != COMPOSITE and same_series(plot, x, t, COMPOSITE)]
        plot = plot[~plot["task"].isin(same)].copy()
        if same:
            plot.loc[plot["task"] == COMPOSITE, "task"] = f"{COMPOSITE} (= {', '.join(same)})"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    sns.scatterplot(data=plot, x=x, y="volume_share", hue="task", style="task", ax=axes[0], s=30)
    sns.scatterplot(data=plot, x=x, y="direction", hue="task", style="task", ax=axes[1], s=30, legend=False)
    for ax in axes:
        if (plot[x] > 0).all():
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
    axes[0].set_ylabel("flip volume (L + D) / N")
    axes[1].set_ylabel("direction f = L / (L + D)")
    # above the grid: the grid line at 0.50 hid it
    axes[1].axhline(0.5, color="black", lw=1.2, ls="--", zorder=1.5, label="f = 0.5: as many leapfrogs as drops")
    legend_below(fig, [axes[0], axes[1]], ncol=3)
    return save(fig, data, figures_dir, name)


def simulated_rho(
    replicates: pd.DataFrame,
    observed: dict,
    figures_dir,
    name="simulated_silent_rho",
    note: str | None = None,
    x_label="Spearman ρ (KLD vs composite) if KLD ranked quality perfectly",
):
    """Histograms of the perfect-ranking replicates' ρ, silent zone and full cohort, with the
    observed ρ of each marked; `replicates` has zone, replicate, n, rho; `observed` zone -> ρ or None.
    The CSV holds every replicate and the observed values (kind = simulated / observed)."""
    sim = replicates.assign(kind="simulated")
    obs = pd.DataFrame([{"zone": z, "replicate": None, "n": None, "rho": r, "kind": "observed"} for z, r in observed.items()])
    data = pd.concat([sim, obs], ignore_index=True)[["kind", "zone", "replicate", "n", "rho"]] if len(obs) else sim
    plot = sim[sim["rho"].notna()].astype({"rho": float})
    if note or plot.empty:
        return empty(data, figures_dir, name, note or "every replicate's ρ was refused: nothing to plot", x_label)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    colors = {"silent": "C0", "full": "C7"}
    labels = {"silent": "silent zone", "full": "full cohort"}
    bins = [i / 20 - 1 for i in range(41)]
    for zone in ("full", "silent"):
        part = plot[plot["zone"] == zone]
        if part.empty:
            continue
        ax.hist(
            part["rho"],
            bins=bins,
            color=colors[zone],
            alpha=0.35 if zone == "full" else 0.6,
            label=f"{labels[zone]}, simulated ({len(part)} replicates)",
        )
        rho = observed.get(zone)
        if rho is not None:
            ax.axvline(rho, color=colors[zone], lw=2, ls="--", label=f"{labels[zone]}, observed (ρ = {rho:+.2f})")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(x_label)
    ax.set_ylabel("replicates")
    legend_below(fig, ax)
    return save(fig, data, figures_dir, name)


def reliability_by_score(
    table: pd.DataFrame,
    figures_dir,
    name="split_half_reliability",
    threshold: float | None = None,
    note: str | None = None,
    x_label="split-half reliability across quants (Spearman–Brown)",
):
    """Split-half reliability with its percentile interval per score (each task, then the
    composite); `table` has score, reliability, low, high (and what else reports keeps)."""
    data = table.reset_index(drop=True)
    plot = data[data["reliability"].notna()]
    if note or plot.empty:
        return empty(data, figures_dir, name, note or "every reliability was refused (see the table): nothing to plot", x_label)
    values = plot[["reliability", "low", "high"]].astype(float)
    fig, ax = plt.subplots(figsize=(6.4, row_height(len(plot), 0.35, 1.4)), layout="constrained")
    y = range(len(plot))
    ax.errorbar(
        values["reliability"],
        y,
        xerr=[values["reliability"] - values["low"], values["high"] - values["reliability"]],
        fmt="o",
        color="C0",
        ecolor="C0",
        capsize=3,
    )
    ax.set_yticks(list(y), [s.removeprefix("score_") for s in plot["score"]])
    if threshold is not None:
        ax.axvline(threshold, color=PAPER_COLOR, ls=":", label=f"target ({threshold:g})")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(x_label)
    legend_below(fig, ax)
    return save(fig, data, figures_dir, name)
