"""Print each benchmark group's medians as ratios against the group's baseline (a test named *baseline*)."""


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or getattr(session, "disabled", True) or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group, []).append(bench)
    terminalreporter.section("ratios against the baseline measured in the same run (median)")
    for bench in session.benchmarks:
        for key, value in bench.extra_info.items():
            if key.startswith(("ratio", "runner_")):
                terminalreporter.write_line(f"{bench.group}: {bench.name}: {key} {value:.3f}")
    for group, benches in groups.items():
        base = [b for b in benches if "baseline" in b.name]
        if not base:
            continue
        ref = base[0].stats.median
        for b in benches:
            terminalreporter.write_line(
                f"{group}: {b.name}: median {b.stats.median * 1e3:.2f} ms, ratio {b.stats.median / ref:.3f}"
            )
