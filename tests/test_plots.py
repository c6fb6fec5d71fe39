"""The figures as a reader sees them, measured on the drawn figure (display coordinates, after layout):
no legend over a data point, no label printed over another, no series hidden under another, the ρ = 0
line visible."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from silentzone import plots


@pytest.fixture
def drawn(monkeypatch):
    """Every figure a plots function saves, kept open and drawn (plots.save closes it otherwise)."""
    figures = []
    original = plots.save

    def keep(fig, data, figures_dir, name):
        figures.append(fig)
        return original(fig, data, figures_dir, name)

    monkeypatch.setattr(plots, "save", keep)
    monkeypatch.setattr(plots.plt, "close", lambda *a, **k: None)
    yield figures
    for fig in figures:
        fig.clf()


def _draw(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def data_points(fig) -> np.ndarray:
    """Display coordinates of every marker drawn in every axes (scatter points, line markers)."""
    points = []
    for ax in fig.axes:
        for collection in ax.collections:
            offsets = collection.get_offsets()
            if len(offsets):
                points.append(collection.get_offset_transform().transform(offsets))
        for line in ax.lines:
            if line.get_marker() not in (None, "None", "", " ") and len(line.get_xydata()):
                points.append(line.get_transform().transform(line.get_xydata()))
    return np.concatenate(points) if points else np.empty((0, 2))


def legend_boxes(fig):
    renderer = _draw(fig)
    boxes = [legend.get_window_extent(renderer) for legend in fig.legends]
    boxes += [ax.get_legend().get_window_extent(renderer) for ax in fig.axes if ax.get_legend() is not None]
    return boxes


def covered(fig) -> list:
    """The data points that lie under a legend."""
    points = data_points(fig)
    return [(box, p) for box in legend_boxes(fig) for p in points if box.x0 <= p[0] <= box.x1 and box.y0 <= p[1] <= box.y1]


def overlapping_texts(ax, gap_pt: float = 1.5) -> list:
    """Pairs of labels closer than `gap_pt` points: labels that touch read as one ("n=11n=12")."""
    renderer = _draw(ax.figure)
    pad = gap_pt * ax.figure.dpi / 72 / 2
    boxes = [(t.get_text(), t.get_window_extent(renderer).padded(pad)) for t in ax.texts]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def above_the_grid(ax, line) -> bool:
    """A reference line on a grid value (0, 0.5) is hidden unless drawn over the grid."""
    grid = {True: 0.5, "line": 1.5, False: 2.5}[ax.get_axisbelow()]
    return line.get_zorder() > grid


def margin_sweep() -> pd.DataFrame:
    """The published default run's margin sweep: seven zones, the first four 0.005 apart on an axis to 0.10."""
    return pd.DataFrame(
        {
            "margin": [0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.10],
            "n": [7, 11, 12, 14, 17, 20, 27],
            "rho": [-0.29, -0.31, -0.30, -0.34, -0.46, -0.58, -0.69],
            "ci_low": [-0.88, -0.72, -0.71, -0.78, -0.86, -0.88, -0.9],
            "ci_high": [0.69, 0.46, 0.48, 0.35, 0.13, -0.08, -0.33],
        }
    )


def test_the_sweep_figure_keeps_its_n_labels_apart_its_legend_off_the_data_and_its_zero_line_visible(drawn, tmp_path):
    plots.zone_sweep(margin_sweep(), tmp_path, "margin", "sweep_margin", "margin", paper_value=0.0)
    fig = drawn[-1]
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert labels == [f"n={n}" for n in margin_sweep()["n"]]
    assert overlapping_texts(ax) == []
    assert fig.legends and ax.get_legend() is None and covered(fig) == []
    # the ρ = 0 line runs across the axes, and no other line is drawn over it
    across = [line for line in ax.lines if list(line.get_xdata()) == [0, 1]]
    assert [list(line.get_ydata()) for line in across] == [[0, 0]] and above_the_grid(ax, across[0])
    assert "paper, silent zone (ρ = +0.00)" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert (tmp_path / "sweep_margin.png").is_file() and (tmp_path / "sweep_margin.csv").is_file()


def test_the_staggering_is_what_keeps_the_labels_apart(drawn, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "stagger_labels", lambda ax, texts: None)
    plots.zone_sweep(margin_sweep(), tmp_path, "margin", "sweep_margin", "margin")
    assert overlapping_texts(drawn[-1].axes[0]) != []  # the check above can fail: without staggering they collide


def flips(tasks: list[str], same: bool) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    kld = np.geomspace(1e-4, 1.0, 12)
    rows = []
    for task in tasks + ["composite"]:
        volume = kld / 5 if same or task == "composite" else rng.uniform(0, 0.2, kld.size)
        direction = 0.5 - kld / 3 if same or task == "composite" else rng.uniform(0.1, 0.6, kld.size)
        rows += [
            {"model": f"q{i}", "task": task, "kld_mean": k, "volume_share": v, "direction": d}
            for i, (k, v, d) in enumerate(zip(kld, volume, direction))
        ]
    return pd.DataFrame(rows)


def test_a_composite_of_one_task_is_drawn_once_with_both_names(drawn, tmp_path):
    plots.volume_direction(flips(["lambada"], same=True), "kld_mean", tmp_path)
    fig = drawn[-1]
    assert len(data_points(fig)) == 2 * 12  # twelve quants per panel, not twice twelve hidden under each other
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "composite (= lambada)" in labels and "lambada" not in labels
    assert "f = 0.5: as many leapfrogs as drops" in labels
    half = [line for line in fig.axes[1].lines if list(line.get_ydata()) == [0.5, 0.5]]
    assert len(half) == 1 and above_the_grid(fig.axes[1], half[0])
    assert covered(fig) == [] and all(ax.get_legend() is None for ax in fig.axes)
    assert len(pd.read_csv(tmp_path / "kld_vs_volume_direction.csv")) == 2 * 12  # the CSV keeps every row


def test_tasks_that_differ_from_the_composite_are_all_drawn(drawn, tmp_path):
    plots.volume_direction(flips(["arc_easy", "lambada"], same=False), "kld_mean", tmp_path)
    fig = drawn[-1]
    assert len(data_points(fig)) == 2 * 3 * 12
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"arc_easy", "lambada", "composite"} <= set(labels)


def test_legends_of_the_other_figures_sit_outside_the_data(drawn, tmp_path):
    rng = np.random.default_rng(1)
    cohort = pd.DataFrame(
        {
            "model": ["reference"] + [f"q{i}" for i in range(20)],
            "kld_mean": [0.0] + list(np.geomspace(1e-4, 1, 20)),
            "composite": [0.6] + list(0.6 - np.geomspace(1e-4, 1, 20) / 3 + rng.normal(0, 0.01, 20)),
            "bpw": [32.0] + [4.5] * 20,
        }
    )
    plots.fidelity_vs_score(cohort, "kld_mean", [f"q{i}" for i in range(8)], tmp_path)
    pairs = pd.DataFrame({"pair": [f"p{i}" for i in range(12)], "accuracy": np.linspace(0.3, 0.9, 12)})
    pairs = pairs.assign(ci_low=pairs["accuracy"] - 0.08, ci_high=pairs["accuracy"] + 0.08)
    plots.ratio_intervals(pairs, tmp_path, "routing", "accuracy", "ci_low", "ci_high", "accuracy", 0.5, (0.423, 0.494), by="pair")
    replicates = pd.DataFrame({"zone": ["silent"] * 200 + ["full"] * 200, "replicate": list(range(200)) * 2, "n": 13})
    replicates["rho"] = np.r_[rng.normal(-0.6, 0.2, 200), rng.normal(-0.9, 0.03, 200)].clip(-1, 1)
    plots.simulated_rho(replicates, {"silent": -0.32, "full": -0.78}, tmp_path)
    reliability = pd.DataFrame({"score": ["score_lambada", "composite"], "reliability": [0.92, 0.92], "low": [0.88, 0.88]})
    plots.reliability_by_score(reliability.assign(high=0.95), tmp_path, threshold=0.9)
    curves = pd.DataFrame(
        [
            {"outcome": o, "k": k, "rho": r, "ci_low": r - 0.3, "ci_high": min(1, r + 0.4), "powered": k > 8}
            for o, shift in (("accuracy", 0.0), ("signed", -0.1))
            for k, r in zip([6, 8, 10, 12, 16, 20, 24], [-0.5, -0.66, -0.75, -0.82, -0.6, -0.77, -0.84])
            for r in [r + shift]
        ]
    )
    plots.rho_k_curves(curves, tmp_path, margin=0.5)
    assert len(drawn) == 5
    for fig in drawn:
        assert fig.legends and all(ax.get_legend() is None for ax in fig.axes), fig
        assert covered(fig) == [], fig


def test_a_figure_with_a_row_per_quant_fits_a_page(drawn, tmp_path):
    """30 rows at 0.3 in made figures taller than an A4 page, and Typst printed their captions over the
    page number; every row still gets a label that fits it."""
    pairs = pd.DataFrame({"pair": [f"pair {i}" for i in range(60)], "accuracy": np.linspace(0.3, 0.9, 60)})
    pairs = pairs.assign(ci_low=pairs["accuracy"] - 0.05, ci_high=pairs["accuracy"] + 0.05)
    plots.ratio_intervals(pairs, tmp_path, "routing", "accuracy", "ci_low", "ci_high", "accuracy", 0.5, by="pair")
    rng = np.random.default_rng(2)
    items = pd.DataFrame(
        {
            "model": np.repeat([f"q{i:02d}" for i in range(40)], 20),
            "task": "t",
            "item_id": np.tile(np.arange(20), 40),
            "correct": rng.random(800) < 0.5,
            "prompt_kld": rng.lognormal(-4, 1, 800),
        }
    )
    plots.prompt_kld_by_outcome(items, tmp_path)
    for fig in drawn:
        assert fig.get_size_inches()[1] <= plots.MAX_HEIGHT
        ax = fig.axes[0]
        labels = [t for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) in (40, 60) and overlapping_texts_of(ax, labels) == []
        assert covered(fig) == []


def overlapping_texts_of(ax, texts) -> list:
    renderer = _draw(ax.figure)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
