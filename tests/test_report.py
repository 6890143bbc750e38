import shutil
import statistics
import subprocess

import numpy as np
import pandas as pd
import pytest

from finebench.reports import write_report
from finebench.reports.compare import summarize
from finebench.reports.frame import runs_frame
from finebench.reports.tables import latex, markdown, tex_escape
from finebench.results.store import ResultStore

from records import make_record


def summary_of(records):
    return summarize(runs_frame(records))


def test_mean_std_n_per_method():
    recs = [make_record("cut-fc", s, v) for s, v in enumerate([50.0, 60.0, 70.0])]
    recs += [make_record("cut-full", s, v, seconds=20.0) for s, v in enumerate([80.0, 81.0])]
    s = summary_of(recs).set_index("method")
    assert s.loc["cut-fc", "n"] == 3 and s.loc["cut-full", "n"] == 2
    assert s.loc["cut-fc", "test_top1_mean"] == pytest.approx(60.0)
    assert s.loc["cut-fc", "test_top1_std"] == pytest.approx(statistics.stdev([50, 60, 70]))
    assert s.loc["cut-full", "total_seconds_mean"] == pytest.approx(20.0)
    assert list(s.index) == ["cut-fc", "cut-full"]  # registry order, not file order


def test_markdown_table_rows_and_values():
    recs = [make_record("cut-full", s, v) for s, v in enumerate([80.0, 82.0])] + [make_record("cut-fc", 0, 55.0)]
    md = markdown(summary_of(recs), wide=True)
    assert "| method | n | test top-1 (%) | 95 % CI (seeds) | Δ vs baseline (seeds) | 95 % CI (test images) |" in md
    assert "| cut-full | 2 | **81.0 ± 1.4** | [68.3, 93.7] | baseline | — | baseline | 90.0 ± 0.0 |" in md
    assert "| cut-fc | 1 | 55.0 | — | no test (n=1) | — | — | 90.0 |" in md  # one seed: no std, no interval, no test
    assert "1.50k / 2.50M" in md and "seeds 0,1" in md
    assert md.index("cut-fc") < md.index("| cut-full")


def test_different_budgets_are_never_mixed():
    recs = [make_record("cut-fc", 0, 50.0, epochs=5), make_record("cut-fc", 0, 70.0, epochs=10)]
    md = markdown(summary_of(recs), wide=True)
    assert md.count("### ") == 2 and "5 epochs" in md and "10 epochs" in md


def test_latex_escapes_and_uses_booktabs():
    assert tex_escape("cut_fc 50% & #1") == r"cut\_fc 50\% \& \#1"
    tex = latex(summary_of([make_record("my_method", 0, 50.0, dataset="synthetic:4x20")]), wide=True)
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"my\_method &" in tex and r"test top-1 (\%)" in tex
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    body = tex.split(r"\midrule")[1]
    assert "_" not in body.replace(r"\_", "")


def test_write_report_from_store(tmp_path):
    store = ResultStore(tmp_path / "results")
    for s, v in enumerate([40.0, 44.0]):
        store.append(make_record("cut-last", s, v))
    (store.runs / "junk.json").write_text("not json")
    report = write_report(tmp_path / "results", tmp_path / "reports", "both", wide=True)
    assert report.runs == 2 and len(report.errors) == 1
    assert (tmp_path / "reports" / "results.md").read_text().count("| cut-last | 2 | **42.0 ± 2.8**") == 1
    assert (tmp_path / "reports" / "results.tex").exists()
    with pytest.raises(ValueError, match="no finished runs"):
        write_report(tmp_path / "empty", tmp_path / "r2")


def test_default_tuple_settings_read_back_from_json_are_not_variants():
    from finebench.reports.frame import method_label

    default = {"sweep": [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "modes": ["nwp", "lwp"], "accumulate": "signed"}
    assert method_label("semantic-pruning", default) == "semantic-pruning"
    one = {"sweep": [0.5], "accumulate": "signed"}
    assert method_label("semantic-pruning", one) == "semantic-pruning (sweep=[0.5])"


def test_method_settings_get_their_own_rows_and_commits_are_flagged():
    a = make_record("cut-full", 0, 80.0)
    b = make_record("cut-full", 0, 50.0, run_id="other")
    b.spec["method_config"] = {"freeze_bn": True}
    b.env["commit"] = "abcdef1234567"
    md = markdown(summary_of([a, b]), wide=True)
    assert "| cut-full | 1 | **80.0** |" in md and "| cut-full (freeze_bn=True) | 1 | 50.0 |" in md
    assert "WARNING: runs from different code commits" in md


def test_cpu_runs_at_different_thread_counts_are_flagged():
    """The same spec on a CPU at another thread count gives slightly different numbers (reductions split
    differently): measured on filter attention, Flowers-17, one vs two threads. The caption says so."""
    runs = [make_record("cut-full", s, 80.0, run_id=f"a{s}") for s in (0, 1)]
    for r, threads in zip(runs, (1, 2), strict=True):
        r.env.update(device="cpu", threads=threads)
    md = markdown(summary_of(runs), wide=True)
    assert "CPU runs with different thread counts (1, 2)" in md
    runs[1].env["threads"] = 1
    assert "thread counts" not in markdown(summary_of(runs), wide=True)
    runs[1].env.update(device="cuda", threads=2)  # a GPU run's CPU threads do not decide its numbers
    assert "thread counts" not in markdown(summary_of(runs), wide=True)


def test_teacher_rows_join_their_students_table_once_and_teachers_with_other_weights_stay_apart():
    student = [make_record("kd", s, 70.0 + s, run_id=f"kd-{s}") for s in (0, 1)]
    teacher = make_record("cut-full", 0, 90.0, run_id="teacher-a", seconds=100.0)
    teacher.spec["backbone"] = "big_net"
    for r in student:
        r.sources = {"teacher": "teacher-a"}
        r.cost["charged_seconds"] = 100.0
    other = make_record("at+kd", 0, 75.0, run_id="atkd-0")
    other.sources = {"teacher": "teacher-b"}
    teacher_b = make_record("cut-full", 0, 80.0, run_id="teacher-b")
    teacher_b.spec["backbone"] = "big_net"
    teacher_b.spec["train"] = dict(teacher_b.spec["train"], weights="random")  # another teacher, same seed
    md = markdown(summary_of([*student, teacher, other, teacher_b]), wide=True)
    table = next(t for t in md.split("### ") if t.startswith("synthetic · test_resnet"))
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    names = [r.split("|")[1].strip() for r in rows]
    assert names[:2] == ["kd", "at+kd"]
    assert names[2:] == ["teacher: cut-full (big_net)", "teacher: cut-full (big_net, weights=random)"]
    header = [c.strip() for c in table.splitlines()[2].split("|")]
    kd = [c.strip() for c in rows[0].split("|")]
    own, incl = header.index("own time (s)"), header.index("time incl. teacher/source (s)")
    assert kd[own] == "10.0 ± 0.0" and kd[incl] == "110.0 ± 0.0"  # own time; time including the teacher's 100 s


def test_paired_tests_against_the_baseline_with_holm_and_bold_best():
    from scipy import stats

    from finebench.reports.stats import holm

    base = [80.0, 82.0, 81.0, 79.5]
    kd = [81.5, 83.9, 81.8, 80.9]  # better on every seed
    fc = [79.0, 82.5, 80.0, 80.0]  # no consistent difference
    recs = [make_record("cut-full", s, v) for s, v in enumerate(base)]
    recs += [make_record("kd", s, v) for s, v in enumerate(kd)]
    recs += [make_record("cut-fc", s, v) for s, v in enumerate(fc)]
    s = summary_of(recs).set_index("method")
    p_kd, p_fc = stats.ttest_rel(kd, base).pvalue, stats.ttest_rel(fc, base).pvalue
    adjusted = holm([p_fc, p_kd])
    assert s.loc["kd", "test"] == "paired-t" and s.loc["kd", "pairs"] == 4
    assert s.loc["kd", "p"] == pytest.approx(p_kd) and s.loc["kd", "p_holm"] == pytest.approx(adjusted[1])
    assert s.loc["cut-fc", "p_holm"] == pytest.approx(adjusted[0])
    assert s.loc["kd", "delta"] == pytest.approx(statistics.mean(kd) - statistics.mean(base))
    lo, hi = s.loc["kd", "ci"]
    half = stats.t.ppf(0.975, 3) * statistics.stdev(kd) / 2
    assert (lo, hi) == pytest.approx((statistics.mean(kd) - half, statistics.mean(kd) + half))
    md = markdown(summary_of(recs), wide=True)
    assert f"| kd | 4 | **{statistics.mean(kd):.1f} ± {statistics.stdev(kd):.1f}** |" in md  # best in bold
    assert f"+{statistics.mean(kd) - statistics.mean(base):.1f} (p={adjusted[1]:.3f}) |" in md
    assert f"(p={adjusted[0]:.3f}) n.s. |" in md  # not significant: marked
    assert "paired-t test, Holm-corrected" in md
    tex = latex(summary_of(recs), wide=True)
    assert r"\textbf{" in tex and r"$\Delta$ vs baseline" in tex and "Δ" not in tex and "≥" not in tex


def test_csv_filters_and_cost_columns(tmp_path):

    store = ResultStore(tmp_path / "results")
    for s in (0, 1):
        full = make_record("cut-full", s, 80.0 + s)
        full.cost.update(samples=1000, train_flops_estimate=3e12, charges={})
        store.append(full)
        kd = make_record("kd", s, 82.0 + s)
        kd.cost.update(samples=1000, train_flops_estimate=3e12, charges={"teacher:cut-full": {"samples": 1000,
                       "flops": 6e12, "seconds": 50.0}})  # fmt: skip
        store.append(kd)
    report = write_report(tmp_path / "results", tmp_path / "rep", wide=True)
    summary = pd.read_csv(tmp_path / "rep" / "results.csv").set_index("method")
    assert (
        summary.loc["kd", "flops_total_mean"] == pytest.approx(9e12) and summary.loc["kd", "samples_total_mean"] == 2000
    )
    assert summary.loc["kd", "test_top1_ci_low"] < 82.5 < summary.loc["kd", "test_top1_ci_high"]
    assert len(pd.read_csv(tmp_path / "rep" / "runs.csv")) == 4 and report.runs == 4
    md = (tmp_path / "rep" / "results.md").read_text()
    assert "| 2.00k | 9 TFLOP |" in md and "| 1.00k | 3 TFLOP |" in md  # records of the old 3 x forward estimate
    only = write_report(tmp_path / "results", tmp_path / "rep2", "md", methods=["kd"])
    assert only.runs == 2 and "| cut-full |" not in only.markdown
    with pytest.raises(ValueError, match=r"--datasets \['cub200'\]: not in the records; they hold \['synthetic'\]"):
        write_report(tmp_path / "results", tmp_path / "rep3", datasets=["cub200"])


def test_pareto_front_and_figures_are_written(tmp_path):
    from finebench.reports.figures import pareto_front

    # (cost, score): b is dominated by a (cheaper and better); d costs more than c for less
    assert pareto_front([1.0, 2.0, 3.0, 4.0], [80.0, 75.0, 85.0, 84.0]) == [0, 2]
    assert pareto_front([5.0, 1.0], [90.0, 90.0]) == [1]  # a tie in score: the cheaper one
    store = ResultStore(tmp_path / "results")
    for s in (0, 1):
        for method, top1 in (("cut-fc", 60.0), ("cut-full", 80.0)):
            r = make_record(method, s, top1 + s)
            r.epochs = [{"epoch": e + 1, "elapsed": 2.0 * (e + 1), "val": {"top1": top1 - 5 + e}} for e in range(5)]
            store.append(r)
    report = write_report(tmp_path / "results", tmp_path / "rep")
    figures = sorted(p.name for p in (tmp_path / "rep" / "figures").iterdir())
    assert [f for f in figures if f.startswith("curves-")] == ["curves-synthetic-test_resnet-a84d0820.pdf",
                                                               "curves-synthetic-test_resnet-a84d0820.png"]  # fmt: skip
    assert any(f.startswith("cost-") and f.endswith(".png") for f in figures)
    md = (tmp_path / "rep" / "results.md").read_text()
    assert "## Figures" in md and "](figures/curves-synthetic-test_resnet-a84d0820.png)" in md
    assert all(p.exists() for p in report.written)
    index = (tmp_path / "rep" / "index.md").read_text()
    assert "- [results.md](results.md): the comparison tables" in index and "runs.csv" in index
    assert (
        "[figures/curves-synthetic-test_resnet-a84d0820.png](figures/curves-synthetic-test_resnet-a84d0820.png)"
        " ([PDF](figures/curves-synthetic-test_resnet-a84d0820.pdf)): val top-1 against epoch" in index
    )


def test_time_to_target_counts_seeds_that_reach_it(tmp_path):
    store = ResultStore(tmp_path / "results")
    for s, curve in enumerate(([70, 80, 86], [75, 85, 88], [60, 70, 80])):
        r = make_record("cut-full", s, 80.0)
        r.epochs = [{"epoch": e + 1, "elapsed": 10.0 * (e + 1), "val": {"top1": v}} for e, v in enumerate(curve)]
        r.cost["charged_seconds"] = 1.0
        store.append(r)
    report = write_report(tmp_path / "results", tmp_path / "rep", "md", target=85, wide=True)
    header = [c.strip() for c in report.markdown.splitlines()[2].split("|")]
    row = [c.strip() for c in report.markdown.splitlines()[4].split("|")]
    at = header.index("time to 85 % val (s)")
    assert header[at - 1] == "time to best (s)"
    assert row[at] == "26.0 ± 7.1 (2/3 seeds)"  # seeds 0 and 1 reach 85 at 31 s and 21 s; seed 2 never
    plain = write_report(tmp_path / "results", tmp_path / "rep2", "md", wide=True)
    assert "time to 85" not in plain.markdown


def test_method_tables_from_extras():
    from finebench.reports.method_tables import attention_pruning_table, distillation_table, pruning_table

    def entry(c, mode, setting, pruned, unpruned, magnitude, random):
        def bal(v):
            return {"single_class": {"balanced": v}}

        return {"class": c, "mode": mode, "setting": setting, "multi_class": 70.0, "params_removed": 0.25,
                "flops_removed": 0.1, "single_class": {"balanced": pruned},
                "single_class_unpruned": {"balanced": unpruned},
                "physical": {"latency_ms": 8.0, "params_removed": 0.2},
                "controls": {"magnitude": bal(magnitude), "random": [bal(v) for v in random]}}  # fmt: skip

    sp = []
    for s, shift in ((0, 0.0), (1, 2.0)):
        r = make_record("semantic-pruning", s, 70.0)
        r.extras = {"pruning": [entry(0, "nwp", "33%", 90.0 + shift, 88.0, 70.0, [60.0, 62.0]),
                                entry(1, "nwp", "33%", 80.0, 84.0, 74.0, [58.0, 64.0])],
                    "unpruned_cost": {"latency_ms": 10.0}}  # fmt: skip
        sp.append(r)
    table = pruning_table(sp)
    # seed 0: mean(90, 80) = 85; seed 1: mean(92, 80) = 86 -> 85.5 ± 0.7; magnitude mean(70, 74) = 72; random:
    # each draw's mean over the classes, 59 and 63 in both seeds -> 61 ± 2.3 over seeds and draws; one class of two
    # kept; 20 % physically removed; latency 80 %
    assert (
        "| semantic-pruning | nwp | 33% | 85.5 ± 0.7 | 72.0 ± 0.0 | 61.0 ± 2.3 | 86.0 ± 0.0 | 50.0 ± 0.0 | 70.0 ± 0.0 |"
        in table
    )
    assert table.rstrip().endswith("| 25.0 ± 0.0 | — / — | 10.0 ± 0.0 | 20.0 ± 0.0 | 80.0 ± 0.0 |")
    fa = make_record("filter-attention", 0, 70.0)
    fa.extras = {"attention_pruning": [{"mode": "nwp", "ratio": 0.05, "test": {"top1": 66.5},
                 "controls": {"magnitude": {"test": {"top1": 60.0}},
                              "random": [{"test": {"top1": 50.0}}, {"test": {"top1": 54.0}}]}}]}  # fmt: skip
    out = make_record("filter-attention", 0, 60.0, run_id="out")  # a variant: its own row, not pooled
    out.spec["method_config"] = {"shape": "out"}
    out.extras = {"attention_pruning": [{"mode": "nwp", "ratio": 0.05, "test": {"top1": 40.0}}]}  # older: none
    table = attention_pruning_table([fa, out])
    assert " | filter-attention | nwp | 5 % | 66.5 | 60.0 | 52.0 ± 2.8 |" in table
    assert " | filter-attention (shape=out) | nwp | 5 % | 40.0 | — | — |" in table
    students = [make_record(m, 0, v) for m, v in (("cut-full", 80.0), ("kd", 81.0), ("attention-transfer", 82.5))]
    teacher = make_record("cut-full", 0, 90.0, run_id="big")
    teacher.spec["backbone"] = "big_net"
    for r in students[1:]:
        r.sources = {"teacher": "big"}
    table = distillation_table(summary_of([*students, teacher]))
    assert "| synthetic · test_resnet | 20.0 | 19.0 | 17.5 | — | 10.0 (cut-full (big_net)) |" in table


def test_method_figures_are_drawn_from_extras(tmp_path):
    from finebench.reports.figures import layer_group

    assert [layer_group(n) for n in ("layer3.1.conv2", "blocks.4.2.conv_pw", "conv_stem", "fc")] == [
        "layer3", "blocks.4", "conv_stem", "fc"]  # fmt: skip
    store = ResultStore(tmp_path / "results")
    fa = make_record("filter-attention", 0, 70.0)
    fa.extras = {"attention": {"histogram_edges": [0.0, 0.5, 1.0, 1.5, 2.0],
                               "layers": {"layer1.0.conv1": {"histogram": [0, 3, 5, 1]},
                                          "layer2.0.conv1": {"histogram": [1, 1, 6, 0]}}}}  # fmt: skip
    fa.extras["attention_pruning"] = [
        {"mode": m, "ratio": r, "test": {"top1": 70 - 100 * r},
         "controls": {"magnitude": {"test": {"top1": 69 - 100 * r}}, "random": [{"test": {"top1": 60.0}}] * 2}}
        for m in ("nwp", "lwp") for r in (0.01, 0.05)
    ]  # fmt: skip
    store.append(fa)
    sp = make_record("semantic-pruning", 0, 70.0)
    plan = [(c, m, t) for c in (0, 1) for m, t in (("nwp", "33%"), ("nwp", 0.5), ("lwp", "33%"), ("nwp", "zero"))]
    sp.extras = {"pruning": [{"class": c, "mode": m, "setting": t, "single_class": {"balanced": 80.0 - 10 * c},
                              "single_class_unpruned": {"balanced": 82.0}, "multi_class": 70.0,
                              "params_removed": 0.3, "flops_removed": 0.2} for c, m, t in plan]}  # fmt: skip
    store.append(sp)
    write_report(tmp_path / "results", tmp_path / "rep")
    names = sorted(p.name for p in (tmp_path / "rep" / "figures").iterdir())
    assert "fa-filter-attention-synthetic-test_resnet-a84d0820.png" in names
    assert "pruning-semantic-pruning-synthetic-test_resnet-a84d0820.pdf" in names
    assert "faprune-filter-attention-synthetic-test_resnet-a84d0820.png" in names
    index = (tmp_path / "rep" / "index.md").read_text()
    assert "the paper's Figure 2" in index and "random and weight-magnitude choices" in index


def test_latex_rows_match_the_column_spec():
    import re

    recs = [make_record("cut-full", s, 80.0 + s) for s in range(3)] + [
        make_record("my_net%", s, 70.0) for s in range(3)
    ]
    tex = latex(summary_of(recs), wide=True)
    spec = re.search(r"\\begin\{tabular\}\{(l+r*)\}", tex).group(1)
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    header = tex.split(r"\toprule")[1].split(r"\midrule")[0].strip()
    for line in [header, *body]:
        assert line.endswith(r"\\") and len(re.findall(r"(?<!\\)&", line)) == len(spec) - 1
    assert r"my\_net\%" in tex and tex.count("{") == tex.count("}")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine (.ci/run installs one with apt-get)")
def test_latex_report_compiles_standalone(tmp_path):
    """The generated .tex, \\input into a bare article with booktabs and graphicx, compiles without an error."""
    store = ResultStore(tmp_path / "results")
    for seed, (a, b, c) in enumerate([(80.0, 70.0, 75.0), (82.0, 71.0, 77.0), (81.0, 69.0, 74.0)]):
        store.append(make_record("cut-full", seed, a))
        store.append(make_record("cut-fc", seed, b))
        store.append(make_record("my_method 50% & #1", seed, c))
    write_report(tmp_path / "results", tmp_path / "rep", "tex")
    doc = tmp_path / "rep" / "doc.tex"
    doc.write_text("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs,graphicx,array}\n\\begin{document}\n"
                   "\\input{results.tex}\n\\end{document}\n")  # fmt: skip
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=doc.parent,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "rep" / "doc.pdf").stat().st_size > 1000
    assert "my\\_method 50\\% \\& \\#1" in (tmp_path / "rep" / "results.tex").read_text()


def fa_record(seed, top1, **config):
    r = make_record("filter-attention", seed, top1)
    r.spec["method_config"] = config
    r.run_id += "-" + "-".join(f"{k}{v}" for k, v in config.items())
    scores = [1.0 + 0.01 * i for i in range(-3, 4)]
    r.extras["attention"] = {
        "histogram_edges": [0.9, 1.0, 1.1],
        "layers": {"layer1.0.conv1": {"histogram": [3, 4], "filter_scores": scores}},
        "global_highest": [["layer1.0.conv1", i, s] for i, s in sorted(enumerate(scores), key=lambda t: -t[1])],
        "global_lowest": [["layer1.0.conv1", i, s] for i, s in sorted(enumerate(scores), key=lambda t: t[1])],
        "unchanged": 1.0 if config.get("schedule") == "FFFFF" else 0.1,  # F only: the attention never trains
    }
    return r


def test_filter_attention_variants_table_and_ranking_figure(tmp_path):
    store = ResultStore(tmp_path / "results")
    for seed in range(3):
        store.append(make_record("cut-fc", seed, 60.0 + seed))
        store.append(make_record("cut-full", seed, 70.0 + seed))
        store.append(fa_record(seed, 75.0 + seed))  # the defaults: schedule paper, shape full, no penalty
        store.append(fa_record(seed, 72.0 + 2 * seed, shape="out", penalty="l2", lam=0.01, schedule="FAAAB"))
        store.append(fa_record(seed, 60.0, schedule="FFFFF"))
    write_report(tmp_path / "results", tmp_path / "rep", "md", pdf=False)
    md = (tmp_path / "rep" / "results.md").read_text()
    table = md.split("### Filter-attention variants")[1].split("###")[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert rows["cut-fc"].startswith("| cut-fc | FFFFF | — | — | suite's | 3 | 61.0 ± 1.0 |")
    assert rows["filter-attention"].startswith("| filter-attention | FAAAB | full | none | adam 0.001 | 3 | 76.0 ± 1.0")
    # 75/76/77 vs 70/71/72: the same +5 on each seed, so no test; the variant's +2/+3/+4 is tested
    assert rows["filter-attention"].endswith("| no test (the same difference on every seed) |")
    variant = "filter-attention (lam=0.01, penalty=l2, schedule=FAAAB, shape=out)"
    assert rows[variant].startswith(f"| {variant} | FAAAB | out | l2 (0.01) | adam 0.001 | 3 | 74.0 ± 2.0")
    assert "| +3.0 (p=" in rows[variant] and rows["cut-full"].endswith("| baseline |")
    figure = tmp_path / "rep" / "figures" / "farank-filter-attention-synthetic-test_resnet-"
    assert list(figure.parent.glob(figure.name + "*.png")) and "farank-filter-attention" in md
    assert "farank-" in (tmp_path / "rep" / "index.md").read_text()
    assert "filter-attention (schedule=FFFFF) | FFFFF | full | none |" in table
    assert not list(figure.parent.glob("*FFFFF*"))  # attention all 1 (never trained): no histogram, no ranking
    assert not list(figure.parent.glob("*.pdf")) and ".pdf" not in (tmp_path / "rep" / "index.md").read_text()


def test_metric_chooses_what_the_table_leads_with_tests_and_bolds():
    recs = []
    for seed in range(3):
        recs.append(make_record("cut-full", seed, 80.0 + seed, top3=90.0 + seed))
        recs.append(make_record("cut-fc", seed, 70.0 + seed, top3=95.0 + seed * 1.5))  # worse top-1, better top-3
    top3 = summarize(runs_frame(recs), metric="top3")
    md = markdown(top3, wide=True)
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert header.startswith("| method | n | test top-3 (%) | 95 % CI (seeds) | Δ vs baseline (seeds) | 95 % CI (test")
    row = next(line for line in md.splitlines() if line.startswith("| cut-fc "))
    assert "**96.5 ± 1.5**" in row and "| +5.5 (p=" in row  # top-3 differences 5, 5.5, 6 over the seeds
    lo, hi = top3.set_index("method").loc["cut-fc", "ci"]
    assert lo < 96.5 < hi and "mean paired difference of test top-3" in md
    top1 = markdown(summarize(runs_frame(recs)), wide=True)
    assert "**81.0 ± 1.0**" in next(line for line in top1.splitlines() if line.startswith("| cut-full "))
    with pytest.raises(ValueError, match="metric 'top5' is not one of top1, top3, mean_class"):
        summarize(runs_frame(recs), metric="top5")


def test_test_image_intervals_and_paired_tests_and_rows_that_train_nothing():
    from finebench.results.predictions import decode, encode

    from records import with_predictions

    rng = np.random.default_rng(0)
    target = [0] * 50 + [1] * 50
    recs = []
    for seed in range(3):
        base = rng.random(100) < 0.75
        better = base | (rng.random(100) < 0.6)  # right wherever the baseline is, and on more
        recs.append(with_predictions(make_record("cut-full", seed, 0.0), base.tolist(), target))
        recs.append(with_predictions(make_record("cut-fc", seed, 0.0), better.tolist(), target))
        sp = with_predictions(make_record("semantic-pruning", seed, 0.0), base.tolist(), target)
        sp.epochs = []  # trains nothing: its row is its source model's
        recs.append(sp)
    other = with_predictions(make_record("cut-last", 0, 0.0), [True] * 100, target)
    other.dataset["split_hash"] = "another split"  # never paired with the baseline's seed 0
    recs.append(other)
    recs.append(with_predictions(make_record("cut-last", 1, 0.0), [True] * 100, target))
    full = summary_of(recs)
    summary = full.set_index("method")
    fc = summary.loc["cut-fc"]
    lo, hi = fc["ci_images"]
    assert lo < fc["test_top1_mean"] < hi
    assert fc["images_delta"] == pytest.approx(fc["test_top1_mean"] - summary.loc["cut-full", "test_top1_mean"])
    assert fc["images_p_holm"] < 0.01
    # the untrained row: interval yes, no test, not in either Holm family, never bold
    sp = summary.loc["semantic-pruning"]
    assert sp["ci_images"] is not None and sp["images_p"] is None and sp["p"] is None and not sp["best"]
    assert summary.loc["cut-last", "pairs"] == 1  # seed 1 only: seed 0 ran on another split
    base_seed1 = next(r for r in recs if r.spec["method"] == "cut-full" and r.spec["seed"] == 1)
    assert summary.loc["cut-last", "images_delta"] == pytest.approx(100 - base_seed1.best["test"]["top1"])
    md = markdown(full, wide=True)
    assert "not tested (no model of its own)" in md and "95 % CI (test images): stratified bootstrap" in md
    # the compact encoding round-trips
    data = decode(encode([3, 0, 65535], [3, 1, 2], [True, False, True]))
    assert data["pred"].tolist() == [3, 0, 65535] and data["top3"].tolist() == [True, False, True]
    assert decode(None) is None


def test_a_teacher_weaker_than_the_students_own_baseline_is_marked():
    """A kd row whose teacher scores below cut-full (the student's own baseline, same freezing) on val gets a † and
    a note; the AT row whose teacher is stronger than its own (frozen) baseline does not."""
    from finebench.reports.method_tables import distillation_table

    recs = [make_record("cut-full", s, 80.0) for s in (0, 1)]  # val 81.0
    frozen = [make_record("cut-full", s, 70.0, run_id=f"frozen-{s}") for s in (0, 1)]  # val 71.0
    for r in frozen:
        r.spec["method_config"] = {"freeze_stages": 2, "freeze_bn": True}
    weak = make_record("cut-full", 0, 75.0, run_id="weak-teacher")  # val 76.0
    weak.spec["backbone"] = "big_net"
    weak.spec["method_config"] = {"freeze_stages": 2, "freeze_bn": True}
    kd = [make_record("kd", s, 79.0, run_id=f"kd-{s}") for s in (0, 1)]
    at = [make_record("attention-transfer", s, 72.0, run_id=f"at-{s}") for s in (0, 1)]
    for r in kd + at:
        r.sources = {"teacher": "weak-teacher"}
    for r in at:
        r.spec["method_config"] = {"freeze_stages": 2, "freeze_bn": True}
    summary = summary_of([*recs, *frozen, weak, *kd, *at])
    md = markdown(summary, wide=True)
    assert "| kd † |" in md and "† kd: its teacher is weaker on val than the student's own baseline (76.0 vs 81.0" in md
    assert "| attention-transfer (freeze_bn=True, freeze_stages=2) |" in md  # 76.0 > 71.0 of its own baseline
    assert "79.0 ± 0.0 †" not in distillation_table(summary) and "21.0 ± 0.0 †" in distillation_table(summary)
    assert r"kd \dag{}" in latex(summary, wide=True)


def test_a_methods_note_labels_its_row():
    recs = [make_record("cut-full", s, 80.0) for s in (0, 1)]
    fa = make_record("filter-attention", 0, 70.0)
    fa.spec["method_config"] = {"penalty": "none", "lam": 0.0}
    fa.extras["variant"] = "the paper's ablation: attention without a penalty"
    md = markdown(summary_of([*recs, fa]), wide=True)
    assert "| filter-attention (lam=0.0, penalty=none) [the paper's ablation: attention without a penalty] |" in md


def test_one_teacher_per_split_joins_its_students_table_once_per_seed():
    """split_seed=seed: the teacher of each student seed (its own seed 0, on the student's split) is a row of the
    teacher's line under that split's seed, not three seed-0 rows."""
    recs = []
    for s in (0, 1, 2):
        kd = make_record("kd", s, 80.0 + s, run_id=f"kd-{s}")
        kd.spec["train"]["split_seed"] = "seed"
        kd.sources = {"teacher": f"teacher-{s}"}
        teacher = make_record("cut-full", 0, 90.0 + s, run_id=f"teacher-{s}")
        teacher.spec["backbone"] = "big_net"
        teacher.spec["train"]["split_seed"] = s
        teacher.dataset["split_seed"] = s
        recs += [kd, teacher]
    summary = summary_of(recs).set_index("method")
    row = summary.loc["teacher: cut-full (big_net)"]
    assert row["n"] == 3 and row["seeds"] == "0,1,2" and row["test_top1_mean"] == pytest.approx(91.0)


def test_distillation_table_finds_the_rows_of_the_papers_cub_setting():
    from finebench.reports.method_tables import distillation_table

    frozen = {"freeze_stages": 2, "freeze_bn": True}
    base = make_record("cut-full", 0, 71.5, run_id="base")
    base.spec["method_config"] = dict(frozen)
    at = make_record("attention-transfer", 0, 73.0, run_id="at")
    at.spec["method_config"] = {**at.spec["method_config"], **frozen, "teacher_config": dict(frozen)}
    at.sources = {"teacher": "t"}
    teacher = make_record("cut-full", 0, 73.5, run_id="t")
    teacher.spec["backbone"] = "resnet34"
    teacher.spec["method_config"] = dict(frozen)
    table = distillation_table(summary_of([base, at, teacher]))
    teacher_cell = "26.5 (cut-full (freeze_bn=True, freeze_stages=2) (resnet34))"
    assert f"| synthetic · test_resnet | 28.5 | — | 27.0 | — | {teacher_cell} |" in table


def test_compact_table_is_the_default_and_fits_one_column(tmp_path):
    """The default table: n, test top-1 with its interval, Δ (p), epochs, time, FLOPs; a short caption and the
    details in a note below; the wide table has every column. In LaTeX it has a \\label, booktabs rules, and fits a
    column of a two-column article (no overfull box) with a long method label."""
    store = ResultStore(tmp_path / "results")
    for seed, (a, b, c) in enumerate([(80.0, 70.0, 75.0), (82.0, 71.0, 77.0), (81.0, 69.0, 74.0)]):
        store.append(make_record("cut-full", seed, a))
        store.append(make_record("cut-fc", seed, b))
        r = make_record("filter-attention", seed, c)
        r.spec["method_config"] = {"lam": 0.0, "penalty": "none"}
        store.append(r)
    write_report(tmp_path / "results", tmp_path / "rep", "all", pdf=False)
    md = (tmp_path / "rep" / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert header == "| method | n | test top-1 (%) | 95 % CI | Δ (p) | epochs | time (s) | train FLOPs |"
    assert "\nNote: " in md and "paired-t" in md.split("\nNote: ")[1]  # the details below the table
    assert "| cut-full | 3 | **81.0** | 78.5–83.5 | baseline |" in md  # the best, in bold
    tex = (tmp_path / "rep" / "results.tex").read_text()
    assert r"\label{tab:finebench-synthetic-test-resnet-" in tex and r"\toprule" in tex and "resizebox" not in tex
    wide = write_report(tmp_path / "results", tmp_path / "wide", "md", pdf=False, wide=True).markdown
    assert "| 95 % CI (seeds) |" in wide and "| test top-3 (%) |" in wide
    csv = pd.read_csv(tmp_path / "rep" / "results.csv")
    assert {"test_top3_mean", "own_seconds_mean", "test_top1_ci_low"} <= set(csv.columns)  # every column in CSV
    if shutil.which("pdflatex"):
        doc = tmp_path / "rep" / "doc.tex"
        text = " ".join(["Words that fill a column of a two-column paper."] * 30)
        doc.write_text(f"\\documentclass[twocolumn]{{article}}\n\\usepackage{{booktabs,graphicx,array}}\n"
                       f"\\begin{{document}}\n{text}\n\\input{{results.tex}}\n{text}\n\\end{{document}}\n")  # fmt: skip
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=doc.parent,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:]
        log = (tmp_path / "rep" / "doc.log").read_text()
        assert "Overfull \\hbox" not in log, log[log.index("Overfull") : log.index("Overfull") + 300]


def test_curves_keep_fifteen_methods_apart_with_the_legend_outside(tmp_path, monkeypatch):
    """15 methods: 15 distinct colour-marker pairs, all colours distinct; one line per method on each panel (no
    per-seed lines); integer epoch ticks; the legend right of the axes, not over the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finebench.reports import figures

    order = [f"method-{i}" for i in range(15)]
    styles = figures.method_styles(order)
    assert len(set(styles.values())) == 15 and len({tuple(c) for c, _ in styles.values()}) == 15
    rows = [{"method": m, "seed": s, "epoch": e, "elapsed": 10.0 * e + s, "val_top1": 50.0 + e + i + s}
            for i, m in enumerate(order) for s in range(3) for e in range(1, 4)]  # fmt: skip
    captured = {}
    monkeypatch.setattr(figures, "save", lambda fig, out, plt, pdf=True: captured.setdefault("fig", fig) and [])
    figures.curves_figure(pd.DataFrame(rows), tmp_path / "c", "t", order)
    fig = captured["fig"]
    left, right = fig.axes
    assert len(left.get_lines()) == 15 and len(right.get_lines()) == 15  # one mean line per method
    fig.canvas.draw()
    ticks = [t for t in left.get_xticks() if left.get_xlim()[0] <= t <= left.get_xlim()[1]]
    assert all(float(t).is_integer() for t in ticks)
    legend = right.get_legend().get_window_extent()
    assert legend.x0 >= right.get_window_extent().x1  # outside, to the right
    plt.close(fig)


def test_attention_figure_names_the_classes(tmp_path, monkeypatch):
    """Titles say the true class and the prediction by name (the record's class names), indices without them."""
    from matplotlib.figure import Figure

    from finebench.reports.figures import attention_figure

    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=np.array([0, 1]), pred=np.array([0, 2]),
             index=np.array([5, 9]), **{"student blocks.4": np.zeros((2, 4, 4), dtype=np.float16)})  # fmt: skip
    titles = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: titles.append([ax.get_title() for ax in fig.axes]))
    attention_figure(tmp_path / "a.npz", tmp_path / "f.png", "t", ["daisy", "tulip", "iris"])
    attention_figure(tmp_path / "a.npz", tmp_path / "g.png", "t")
    assert titles[0][:2] == ["daisy", "tulip\n→ iris ✗"]
    assert titles[1][:2] == ["y=0 ŷ=0", "y=1 ŷ=2 ✗"]
