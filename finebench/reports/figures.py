"""Figures drawn from run artifacts alone (no dataset or model needed at report time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

META = ("images", "labels", "pred", "index")  # arrays of an attention-map artifact that are not maps


def attention_maps(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(meta, maps) of an attention-map artifact: images (n, H, W, 3) uint8, labels, pred, index; and each named
    map (n, h, w) in [0, 1]."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    missing = [k for k in META if k not in arrays]
    if missing:
        raise ValueError(f"attention-map artifact {path} lacks {missing}; it holds {sorted(arrays)}")
    maps = {k: v.astype(np.float32) for k, v in arrays.items() if k not in META}
    return {k: arrays[k] for k in META}, maps


def attention_figure(path: Path, out: Path, title: str, class_names: list[str] | None = None) -> Path:
    """One column per image: the image, then each map drawn over it (bilinearly upsampled). Titles say the true
    class and the prediction, by name when the record has the class names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, maps = attention_maps(path)
    images = meta["images"]
    n, rows = len(images), 1 + len(maps)
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n, 1.7 * rows), squeeze=False)
    for j in range(n):
        h, w = images[j].shape[:2]
        axes[0, j].imshow(images[j])
        y, p = int(meta["labels"][j]), int(meta["pred"][j])
        if class_names and max(y, p) < len(class_names):
            text = class_names[y] if y == p else f"{class_names[y]}\n→ {class_names[p]} ✗"
        else:
            text = f"y={y} ŷ={p}" + ("" if y == p else " ✗")
        axes[0, j].set_title(text, fontsize=7)
        for i, (name, m) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(images[j])
            axes[i, j].imshow(m[j], cmap="jet", alpha=0.45, extent=(0, w, h, 0), interpolation="bilinear")
            if j == 0:
                axes[i, j].set_ylabel(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def pareto_front(costs, scores) -> list[int]:
    """Indices of the points no other point beats on both (lower or equal cost and higher or equal score, one of
    them strictly), in order of cost."""
    points = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i]))
    front, best = [], float("-inf")
    for i in points:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return front


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8", "H")


def method_styles(order: list[str]) -> dict[str, tuple]:
    """A colour and a marker per method, in table order: the ten colours of tab10, then Dark2's eight, then hues
    around the circle, each with its own marker, so that 15 methods stay apart in colour and in shape."""
    import seaborn as sns

    colours = sns.color_palette("tab10", 10) + sns.color_palette("Dark2", 8)
    if len(order) > len(colours):
        colours += sns.color_palette("husl", len(order) - len(colours))
    return {m: (colours[i], MARKERS[i % len(MARKERS)]) for i, m in enumerate(order)}


def legend_outside(ax, handles=None, labels=None, title=None) -> None:
    """The legend to the right of the axes, never over the data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, title=title, fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1),
              borderaxespad=0, frameon=False)  # fmt: skip


def curves_figure(
    epochs, out: Path, title: str, order: list[str] | None = None, pdf: bool = True, styles: dict | None = None
) -> list[Path]:
    """Val top-1 against epoch and against wall-clock seconds, one line per method: the mean over seeds, the band
    ± one standard deviation over seeds (at each epoch; on the wall-clock panel at the seeds' mean time to that
    epoch). `epochs`: a frame with method, seed, epoch, elapsed, val_top1."""
    plt, sns = _plt()
    from matplotlib.ticker import MaxNLocator

    order = order or sorted(set(epochs["method"]))
    styles = styles or method_styles(order)  # the table's styles, so a method looks the same in every figure
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    stats = epochs.groupby(["method", "epoch"]).agg(val=("val_top1", "mean"), sd=("val_top1", "std"),
                                                    elapsed=("elapsed", "mean")).reset_index()  # fmt: skip
    for m in order:
        part = stats[stats["method"] == m].sort_values("epoch")
        if part.empty:
            continue
        colour, marker = styles[m]
        sd = part["sd"].fillna(0.0)
        for ax, x in ((axes[0], part["epoch"]), (axes[1], part["elapsed"])):
            ax.plot(x, part["val"], color=colour, marker=marker, markersize=4, lw=1.2, label=m)
            ax.fill_between(x, part["val"] - sd, part["val"] + sd, color=colour, alpha=0.15, lw=0)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set(xlabel="epoch", ylabel="val top-1 (%)")
    axes[1].set(xlabel="wall-clock seconds of the run's own training (mean over seeds)")
    legend_outside(axes[1], title="method (line: mean over seeds; band: ± 1 std)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, out, plt, pdf)


def cost_figure(
    summary, out: Path, title: str, pdf: bool = True, metric: str = "top1", styles: dict | None = None
) -> list[Path]:
    """The table's metric on test (`metric`: top1, top3, mean_class) against the time including charged phases,
    one marker per method (error bars: ± one standard deviation over seeds), the Pareto front joined."""
    plt, _ = _plt()
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    from finebench.reports.compare import PRIMARY

    key, label = PRIMARY[metric]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    costs, scores = summary["total_seconds_mean"].tolist(), summary[f"{key}_mean"].tolist()
    errors = summary[f"{key}_std"].fillna(0).tolist()
    styles = styles or method_styles(summary["method"].tolist())
    for i, m in enumerate(summary["method"]):
        colour, marker = styles[m]
        ax.errorbar(costs[i], scores[i], yerr=errors[i], fmt=marker, color=colour, capsize=3, markersize=6, label=m)
    front = pareto_front(costs, scores)
    ax.plot([costs[i] for i in front], [scores[i] for i in front], "--", color="k", lw=0.8,
            label="Pareto front (no method both cheaper and better)")  # fmt: skip
    ax.set(xlabel="seconds incl. teacher/source (mean over seeds, log scale)", ylabel=f"{label} (%)", xscale="log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    legend_outside(ax, title="method (error bar: ± 1 std over seeds)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig, out, plt, pdf)


def params_figure(
    summary, out: Path, title: str, pdf: bool = True, metric: str = "top1", styles: dict | None = None
) -> list[Path]:
    """The table's test metric against the parameters each method trains (log scale), one marker per row; error
    bars: the 95 % t-interval over seeds (none for one seed)."""
    plt, _ = _plt()
    from finebench.reports.compare import PRIMARY

    key, label = PRIMARY[metric]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    styles = styles or method_styles(summary["method"].tolist())
    for _, row in summary.iterrows():
        colour, marker = styles[row["method"]]
        mean, ci = row[f"{key}_mean"], row["ci"]
        yerr = [[mean - ci[0]], [ci[1] - mean]] if isinstance(ci, tuple) else None
        ax.errorbar(row["trainable"], mean, yerr=yerr, fmt=marker, color=colour, capsize=3, markersize=6,
                    label=row["method"])  # fmt: skip
    ax.set(xlabel="trained parameters (log scale)", ylabel=f"{label} (%)", xscale="log")
    legend_outside(ax, title="method (error bar: 95 % t-interval over seeds)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig, out, plt, pdf)


def save(fig, out: Path, plt, pdf: bool = True) -> list[Path]:
    """`out`.png, and `out`.pdf unless `pdf` is False."""
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_name(out.name + ".png")] + [out.with_name(out.name + ".pdf")] * pdf  # names may hold dots
    fig.savefig(paths[0], dpi=130)
    if pdf:
        fig.savefig(paths[1])
    plt.close(fig)
    return paths


def layer_group(name: str) -> str:
    """The stage a conv belongs to, by its module path: `layer3.1.conv2` -> layer3, `blocks.4.2.conv_pw` -> blocks.4,
    `conv_stem` -> conv_stem."""
    parts = name.split(".")
    nested = len(parts) > 1 and parts[1].isdigit() and not parts[0].startswith("layer")
    return ".".join(parts[:2]) if nested else parts[0]


def attention_histograms(extras: dict, out: Path, title: str, pdf: bool = True) -> list[Path]:
    """Filter-attention weights per layer group (summed per-layer histograms on the shared edges): the paper's
    Figure 2."""
    plt, _ = _plt()
    edges = np.asarray(extras["histogram_edges"], dtype=float)
    groups: dict[str, np.ndarray] = {}
    for name, layer in extras["layers"].items():
        g = layer_group(name)
        groups[g] = groups.get(g, 0) + np.asarray(layer["histogram"], dtype=float)
    n = len(groups)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.3 * rows), squeeze=False)
    centres = (edges[:-1] + edges[1:]) / 2
    for ax, (g, counts) in zip(axes.flat, groups.items(), strict=False):
        ax.bar(centres, counts, width=np.diff(edges), color="tab:blue", alpha=0.8)
        ax.axvline(1.0, color="tab:red", lw=0.8, ls="--")
        ax.set_title(g, fontsize=8)
        ax.set_yscale("log")
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title + " · attention weights per layer group (1 = unchanged)", fontsize=9)
    fig.tight_layout()
    return save(fig, out, plt, pdf)


def filter_ranking(extras: dict, out: Path, title: str, top: int = 20, pdf: bool = True) -> list[Path]:
    """The filters filter attention ranks highest and lowest over the whole network (score: a filter's mean
    attention over its input channels; 1 = unchanged), and per layer group the share of filters amplified (> 1)."""
    plt, _ = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.22 * top + 1.2), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, key, colour, what in ((axes[0], "global_highest", "tab:green", "highest"),
                                  (axes[1], "global_lowest", "tab:red", "lowest")):  # fmt: skip
        entries = extras.get(key, [])[:top]
        labels = [f"{name} #{i}" for name, i, _ in entries]
        # bars drawn from 1 (unchanged): the scores sit close to 1, and their distance from it is the finding
        ax.barh(range(len(entries)), [s - 1.0 for _, _, s in entries], left=1.0, color=colour, alpha=0.8)
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yticks(range(len(entries)), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_title(f"{len(entries)} {what}-ranked filters (network-wide)", fontsize=8)
        ax.set_xlabel("filter score (mean attention; 1 = unchanged)", fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
    groups: dict[str, list[float]] = {}
    for name, layer in extras["layers"].items():
        groups.setdefault(layer_group(name), []).extend(layer.get("filter_scores", []))
    names = list(groups)
    amplified = [100.0 * float(np.mean(np.asarray(v) > 1)) if v else 0.0 for v in groups.values()]
    axes[2].barh(range(len(names)), amplified, color="tab:blue", alpha=0.8)
    axes[2].set_yticks(range(len(names)), names, fontsize=6)
    axes[2].invert_yaxis()
    axes[2].set_xlim(0, 100)
    axes[2].set_title("filters amplified (score > 1) per layer group, %", fontsize=8)
    axes[2].tick_params(axis="x", labelsize=6)
    fig.suptitle(title + " · filter ranking by attention", fontsize=9)
    fig.tight_layout()
    return save(fig, out, plt, pdf)


def pruning_frame(entries: list[dict]):
    """One row per (class, mode, theta of the sweep, criterion): the balanced single-class test accuracy of the
    network pruned by activation, by weight magnitude and at random (one row per draw), and the shares removed."""
    import pandas as pd

    from finebench.reports.method_tables import removed_shares

    rows = []
    for e in entries:
        if isinstance(e["setting"], str):  # zero / 33% / 66% / median: in the table; the curve is the sweep
            continue
        base = {"class": str(e["class"]), "mode": e["mode"].upper(), "theta": float(e["setting"])}
        params, flops, physical = (100 * v for v in removed_shares(e))
        rows.append(base | {"criterion": "activation (semantic)", "balanced": e["single_class"]["balanced"],
                            "unpruned": e["single_class_unpruned"]["balanced"],
                            "params": params, "flops": flops, "physical": physical})  # fmt: skip
        controls = e.get("controls", {})
        if "magnitude" in controls:
            rows.append(base | {"criterion": "weight magnitude", "balanced": controls["magnitude"]["single_class"]
                                ["balanced"]})  # fmt: skip
        for draw in controls.get("random", []):
            rows.append(base | {"criterion": "random", "balanced": draw["single_class"]["balanced"]})
    return pd.DataFrame(rows)


CRITERIA = {"activation (semantic)": "tab:blue", "attention": "tab:blue", "weight magnitude": "tab:orange",
            "random": "tab:grey"}  # fmt: skip


def pruning_curves(entries: list[dict], out: Path, title: str, pdf: bool = True) -> list[Path]:
    """Semantic pruning against its controls, per mode: balanced single-class test accuracy (mean over the
    analysed classes; band: std over classes, for random over classes and draws) against theta for filters chosen
    by accumulated activation, by weight magnitude and at random; and the parameters and FLOPs removed against
    theta (every pruned filter counted; dotted: what the physically smaller network removes)."""
    frame = pruning_frame(entries)
    if frame.empty:
        return []
    plt, sns = _plt()
    modes = sorted(set(frame["mode"]), reverse=True)  # NWP, LWP
    fig, axes = plt.subplots(1, len(modes) + 1, figsize=(4.2 * (len(modes) + 1), 3.6), squeeze=False)
    axes = axes[0]
    unpruned = frame["unpruned"].dropna().mean()
    for ax, mode in zip(axes, modes, strict=False):
        data = frame[frame["mode"] == mode]
        order = [c for c in CRITERIA if c in set(data["criterion"])]
        sns.lineplot(data=data, x="theta", y="balanced", hue="criterion", hue_order=order, palette=CRITERIA,
                     marker="o", errorbar="sd", ax=ax)  # fmt: skip
        ax.axhline(unpruned, color="k", ls="--", lw=0.8, label="unpruned")
        ax.set(xlabel=f"θ (share of filters pruned, {mode})", ylabel="balanced single-class test accuracy (%)")
        ax.legend(fontsize=7)
    cost = frame[frame["criterion"] == "activation (semantic)"].groupby(["mode", "theta"])[
        ["params", "flops", "physical"]].mean().reset_index()  # fmt: skip
    ax = axes[-1]
    for mode, colour in zip(modes, ("tab:blue", "tab:green"), strict=False):
        part = cost[cost["mode"] == mode]
        ax.plot(part["theta"], part["params"], "-o", color=colour, label=f"{mode} parameters")
        ax.plot(part["theta"], part["flops"], "--s", color=colour, label=f"{mode} FLOPs")
        ax.plot(part["theta"], part["physical"], ":", color=colour, label=f"{mode} parameters, physically removed")
    ax.set(xlabel="θ", ylabel="removed (% of the unpruned network)")
    ax.legend(fontsize=6)
    fig.suptitle(title + " · semantic pruning vs random and weight-magnitude choices of as many filters", fontsize=9)
    fig.tight_layout()
    return save(fig, out, plt, pdf)


def ranking_pruning_curves(entries: list[dict], unpruned: float, out: Path, title: str, pdf: bool = True) -> list:
    """Filter attention's ranking: test top-1 after removing the lowest-attention share of the filters, against
    the same number removed by weight magnitude and at random (band: std over draws), per mode."""
    import pandas as pd

    rows = []
    for e in entries:
        base = {"mode": e["mode"].upper(), "ratio": 100 * e["ratio"]}
        rows.append(base | {"criterion": "attention", "top1": e["test"]["top1"]})
        controls = e.get("controls", {})
        if "magnitude" in controls:
            rows.append(base | {"criterion": "weight magnitude", "top1": controls["magnitude"]["test"]["top1"]})
        rows += [base | {"criterion": "random", "top1": r["test"]["top1"]} for r in controls.get("random", [])]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return []
    plt, sns = _plt()
    modes = sorted(set(frame["mode"]), reverse=True)
    fig, axes = plt.subplots(1, len(modes), figsize=(4.5 * len(modes), 3.6), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=False):
        data = frame[frame["mode"] == mode]
        order = [c for c in CRITERIA if c in set(data["criterion"])]
        sns.lineplot(data=data, x="ratio", y="top1", hue="criterion", hue_order=order, palette=CRITERIA, marker="o",
                     errorbar="sd", ax=ax)  # fmt: skip
        ax.axhline(unpruned, color="k", ls="--", lw=0.8, label="unpruned")
        ax.set(xlabel=f"filters removed (%, {mode})", ylabel="test top-1 (%)")
        ax.legend(fontsize=7)
    fig.suptitle(title + " · pruning by attention rank vs random and weight-magnitude choices", fontsize=9)
    fig.tight_layout()
    return save(fig, out, plt, pdf)
