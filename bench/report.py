"""Turn results.json into bench/results/results.md, the PNG plots, and the results section of bench/README.md.

    .venv/bin/python bench/report.py          # re-render from bench/results/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import failover  # noqa: E402
from common import RESULTS  # noqa: E402

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
COLORS = {"cmw": "tab:blue", "cmw-w2": "tab:cyan", "chatinterface": "tab:gray", "cmw-tuned": "tab:green",
          "cmw-tuned-2proc": "tab:purple", "cmw-per-token": "tab:orange", "naive": "tab:red"}
# issue 15's targets (2-core machine)
W2_WALL_RATIO, W2_OVERHEAD_P99_MS, CPU_VS_BARE = 1.5, 300, 1.5


def _f(value, spec=".0f", none="-"):
    return none if value is None else format(value, spec)


def _mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def cpu_per_turn_ms(r: dict) -> float | None:
    """App CPU ms per served turn (older results.json files have no such field)."""
    if r.get("app_cpu_per_turn_ms") is not None:
        return r["app_cpu_per_turn_ms"]
    return r["app_cpu_s"] / r["ok"] * 1000 if r["ok"] else None


def _clean(r: dict) -> bool:
    return (r["errors"] == 0 and r["unserved_at_deadline"] == 0 and r["leaks"] == 0
            and r["ok"] == r.get("expected", r["n"]))


def _by_n(conc: dict, key: str) -> dict[int, dict]:
    return {r["n"]: r for r in conc.get(key, {}).get("rounds", [])}


def issue15_targets(conc: dict) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    w2, bare = _by_n(conc, "cmw-w2"), _by_n(conc, "chatinterface")
    if 100 in w2:
        r = w2[100]
        rows.append(("`--workers 2`, N=100: wall(N)/wall(1)", f"<= {W2_WALL_RATIO}", _f(r["wall_ratio"], ".2f"),
                     r["wall_ratio"] is not None and r["wall_ratio"] <= W2_WALL_RATIO))
        ov = r["first_token_overhead_p99_ms"]
        rows.append(("`--workers 2`, N=100: first-token overhead p99", f"<= {W2_OVERHEAD_P99_MS} ms", f"{_f(ov)} ms",
                     ov is not None and ov <= W2_OVERHEAD_P99_MS))
    for key, label in (("cmw-w2", "`--workers 2`"), ("cmw", "`--workers 1`")):
        r = _by_n(conc, key).get(200)
        if r:
            rows.append((f"{label}, N=200: errors / leaks", "0 / 0", f"{r['ok']}/{r.get('expected', r['n'])} ok, "
                         f"{r['errors'] + r['unserved_at_deadline']} / {r['leaks']}", _clean(r)))
    for n in (100, 200):
        if n not in bare or not cpu_per_turn_ms(bare[n]):
            continue
        base = cpu_per_turn_ms(bare[n])
        for key, label in (("cmw", "`--workers 1`"), ("cmw-w2", "`--workers 2`")):
            r = _by_n(conc, key).get(n)
            if r and cpu_per_turn_ms(r):
                ratio = cpu_per_turn_ms(r) / base
                rows.append((f"{label}, N={n}: app CPU per turn vs bare ChatInterface", f"<= {CPU_VS_BARE}x",
                             f"{cpu_per_turn_ms(r):.1f} / {base:.1f} ms = {ratio:.2f}x", ratio <= CPU_VS_BARE))
    return rows


# ------------------------------------------------------------------------------------------------
# targets


def targets(res: dict) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    conc = (res.get("concurrency") or {}).get("apps", {})
    rows += issue15_targets(conc)
    if res.get("failover"):
        rows += failover.targets(res["failover"])
    cmw = {r["n"]: r for r in conc.get("cmw", {}).get("rounds", [])}
    if 100 in cmw:
        r = cmw[100]
        rows.append(("(issue 6) one process, N=100: wall(N)/wall(1)", "<= 1.3", _f(r["wall_ratio"], ".2f"),
                     r["wall_ratio"] is not None and r["wall_ratio"] <= 1.3))
        ov = r["first_token_overhead_p99_ms"]
        rows.append(("(issue 6) one process, N=100: first-token overhead p99", "<= 150 ms", f"{_f(ov)} ms",
                     ov is not None and ov <= 150))
        rows.append(("(issue 6) one process, N=100: errors / leaks", "0 / 0",
                     f"{r['errors'] + r['unserved_at_deadline']} / {r['leaks']}", _clean(r)))
    before = {r["n"]: r for r in conc.get("cmw-per-token", {}).get("rounds", [])}
    tuned = {r["n"]: r for r in conc.get("cmw-tuned", {}).get("rounds", [])}
    for n in (100, 200):
        if n in cmw:
            parts = []
            if n in before:
                parts.append(f"one yield per token {_f(before[n]['app_cpu_per_1k_tokens_s'], '.3f')} s")
            parts.append(f"current (80 ms throttle) {_f(cmw[n]['app_cpu_per_1k_tokens_s'], '.3f')} s")
            if n in tuned:
                parts.append(f"settings-only tuning {_f(tuned[n]['app_cpu_per_1k_tokens_s'], '.3f')} s")
            rows.append((f"(issue 6) N={n}: app CPU per 1,000 streamed tokens", "measure, then cut", " -> ".join(parts), None))
    if 100 in tuned:
        r = tuned[100]
        rows.append(("(issue 6) N=100 with settings-only tuning: wall ratio / first-token overhead p99", "<= 1.3 / <= 150 ms",
                     f"{_f(r['wall_ratio'], '.2f')} / {_f(r['first_token_overhead_p99_ms'])} ms",
                     (r["wall_ratio"] or 99) <= 1.3 and (r["first_token_overhead_p99_ms"] or 1e9) <= 150))
    http = (res.get("memory") or {}).get("http")
    if http:
        per = http["points"][-1]["bytes_per_session"]
        rows.append(("RSS per live idle session, whole process (Gradio state included)", "-",
                     f"{per / 1024:.1f} KiB", None))
    if http and http.get("after_expiry"):
        v = http["after_expiry"]["vs_baseline"]
        rows.append(("RSS after expiry vs baseline (HTTP)", "within 10%", f"{100 * v:+.1f}%", abs(v) <= 0.10))
    sp = res.get("session_path") or {}
    if sp.get("sqlite"):
        p50 = sp["sqlite"]["resume"]["p50_ms"]
        rows.append((f"resume a {sp['turns']}-turn conversation, SQLite p50", "<= 20 ms", f"{p50:.2f} ms", p50 <= 20))
    if sp.get("postgres"):
        p50 = sp["postgres"]["resume"]["p50_ms"]
        rows.append((f"resume a {sp['turns']}-turn conversation, PostgreSQL p50", "(no target)", f"{p50:.2f} ms", None))
    return rows


# ------------------------------------------------------------------------------------------------
# markdown


def _series(conc: dict, multi: bool = False):
    """(app key, app, rounds) for every app: its one-turn rounds, or its several-turns rounds."""
    for key, app in conc["apps"].items():
        rounds = (app.get("multi_turn") or {}).get("rounds", []) if multi else app["rounds"]
        if rounds:
            yield key, app, rounds


def concurrency_table(conc: dict, multi: bool = False) -> str:
    head = ("| app | N | ok | errors | unserved @deadline | wall s | wall(N)/wall(1) | TTFT p50 / p99 ms | "
            "first-token overhead p50 / p99 ms | token gap ms | update gap p99 ms | leaks (stream + recall) | "
            "app CPU s | app CPU % of a core | app CPU ms / turn | app CPU s / 1k tokens | proxy CPU s | "
            "loadgen CPU s | other CPU s | load 1m |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for key, app, rounds in _series(conc, multi):
        for r in rounds:
            lines.append(
                f"| {key} | {r['n']} | {r['ok']}/{r.get('expected', r['n'])} | {r['errors']} | "
                f"{r['unserved_at_deadline']} | {r['wall_s']:.2f} | "
                f"{_f(r.get('wall_ratio'), '.2f')} | {_f(r['ttft_p50_ms'])} / {_f(r['ttft_p99_ms'])} | "
                f"{_f(r['first_token_overhead_p50_ms'])} / {_f(r['first_token_overhead_p99_ms'])} | "
                f"{_f(r['token_gap_mean_ms'], '.1f')} | {_f(r['update_gap_p99_ms'])} | "
                f"{r['stream_leaks']} + {r['recall_leaks']}/{r['recall_checked']} | {r['app_cpu_s']:.2f} | "
                f"{100 * r['app_cpu_share_of_core']:.0f}% | {_f(cpu_per_turn_ms(r), '.1f')} | "
                f"{_f(r['app_cpu_per_1k_tokens_s'], '.3f')} | {_f(r.get('proxy_cpu_s'), '.2f')} | "
                f"{r['loadgen_cpu_s']:.2f} | {r['other_cpu_s']:.2f} | {r.get('loadavg_1m_before', 0):.2f} |")
    return head + "\n".join(lines) + "\n"


SIDE_APPS = ("cmw", "cmw-w2", "chatinterface", "naive")


def side_by_side(conc: dict) -> str:
    """Issue 15's comparison: the app as 1 and 2 workers, the bare ChatInterface and the naive one, per N."""
    bare = _by_n(conc["apps"], "chatinterface")
    keys = [k for k in SIDE_APPS if k in conc["apps"]]
    head = ("| N | app | turns/session | served | wall s | wall(N)/wall(1) | first-token overhead p50 / p99 ms | "
            "app CPU ms / turn | vs bare ChatInterface | errors | leaks | load 1m |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for multi in (False, True):
        ns = sorted({r["n"] for k in keys for r in (conc["apps"][k]["rounds"] if not multi else
                                                     (conc["apps"][k].get("multi_turn") or {}).get("rounds", []))})
        for n in ns:
            for key in keys:
                app = conc["apps"][key]
                rounds = (app.get("multi_turn") or {}).get("rounds", []) if multi else app["rounds"]
                r = next((x for x in rounds if x["n"] == n), None)
                if r is None:
                    continue
                cpu = cpu_per_turn_ms(r)
                base = cpu_per_turn_ms(bare[n]) if (n in bare and not multi) else None
                vs = f"{cpu / base:.2f}x" if cpu and base and key != "chatinterface" else "-"
                rows.append(f"| {n} | {key} | {r.get('turns_per_session', 1)} | {r['ok']}/{r.get('expected', r['n'])} | "
                            f"{r['wall_s']:.2f} | {_f(r.get('wall_ratio'), '.2f')} | "
                            f"{_f(r['first_token_overhead_p50_ms'])} / {_f(r['first_token_overhead_p99_ms'])} | "
                            f"{_f(cpu, '.1f')} | {vs} | {r['errors'] + r['unserved_at_deadline']} | {r['leaks']} | "
                            f"{r.get('loadavg_1m_before', 0):.2f} |")
    return head + "\n".join(rows) + "\n"


def memory_tables(mem: dict) -> str:
    out = []
    http = mem.get("http")
    if http:
        out.append(f"HTTP, real app, idle TTL {http['ttl_s']:.0f} s (sweeper every {http['sweep_interval_s']:.1f} s), "
                   f"each session created by one short turn (`{http['short_turn']}`); creation took "
                   f"{http['creation_s']:.0f} s, app CPU {http['app_cpu_s_creating']:.0f} s; errors: "
                   f"{sum(http['errors'].values()) if http['errors'] else 0}.\n\n")
        out.append("| live sessions | RSS MiB | per session (vs 0) | created/s | app CPU ms per creating turn |\n"
                   "|---:|---:|---:|---:|---:|\n")
        for p in http["points"]:
            per = "-" if not p["live"] else f"{p['bytes_per_session'] / 1024:.1f} KiB"
            out.append(f"| {p['live']:,} | {_mib(p['rss'])} | {per} | {_f(p.get('create_rate_per_s'))} | "
                       f"{_f(p.get('cpu_ms_per_turn'), '.1f')} |\n")
        a = http.get("after_expiry")
        if a:
            out.append(f"| 0 (after TTL + sweep, t={a['t']:.0f} s) | {_mib(a['rss'])} | "
                       f"{100 * a['vs_baseline']:+.1f}% vs baseline | | |\n")
        out.append("\n")
    return "".join(out)


def session_table(sp: dict) -> str:
    out = [f"Resume a {sp['turns']}-turn conversation (load its state back: `aget_state` on its thread):\n\n"
           "| store | messages | resume p50 ms | resume p99 ms | first load after reopening ms | "
           "turn write p50 ms |\n|---|---:|---:|---:|---:|---:|\n"]
    for key in ("sqlite", "postgres"):
        r = sp.get(key)
        if r:
            out.append(f"| {r['store']} | {r['resume']['messages']} | {r['resume']['p50_ms']:.2f} | "
                       f"{r['resume']['p99_ms']:.2f} | {r['first_load_after_reopen_ms']:.1f} | "
                       f"{r['turn_write']['p50_ms']:.1f} |\n")
    if not sp.get("postgres"):
        out.append("| AsyncPostgresSaver | - | skipped: `DATABASE_URL` not set | | | |\n")
    return "".join(out)


def _when(section: dict) -> str:
    if not section.get("measured_at"):
        return ""
    load = section.get("load_at_start")
    return f"Measured {section['measured_at']}" + (f", load average at start {load[0]:.2f}" if load else "") + ".\n\n"


def render_markdown(res: dict) -> str:
    m = res["machine"]
    out = [f"# Benchmark results\n\nRun {res['started']} - {res['finished']} ({res['duration_s'] / 60:.1f} min) with "
           f"`{res['command']}`. Reproduce everything with `.venv/bin/python bench/run_all.py` (~11 min; "
           "`--max-load 1.0` first waits for a quiet machine).\n\n",
           f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['ram_gib']} GiB RAM, {m['os']}, "
           f"Python {m['python']}, gradio {m['gradio']}, langgraph {m['langgraph']}.\n",
           f"Load average (1 min) at start {res['load_start'][0]:.2f}, at end {res['load_end'][0]:.2f}; per round in "
           "the table (`load 1m`). `other CPU s` is CPU used by everything except the app and the load generator "
           "during the round (other work on the machine, kernel): high values mean a disturbed figure.\n\n",
           f"Offline model, {res['token_delay_s'] * 1000:.0f} ms per token; every chat turn streams ~50 tokens. "
           "Load generator: bench/loadgen.py (httpx + asyncio, Gradio queue protocol, one cookie jar per user). "
           "Rate limits and new-session limits are switched off for the benchmark (all users come from "
           "127.0.0.1).\n\n",
           "## Targets\n\n| target | goal | measured | met |\n|---|---|---|---|\n"]
    for name, goal, got, ok in targets(res):
        out.append(f"| {name} | {goal} | {got} | {'yes' if ok else ('no' if ok is False else '-')} |\n")
    conc = res.get("concurrency")
    if conc:
        out.append(f"\n## 1-2. Concurrency: one process, two workers behind HAProxy, bare and naive ChatInterface\n\n"
                   f"{_when(conc)}![concurrency](concurrency.png)\n\n"
                   f"Each round: N users join at the same instant, one turn each (or {conc.get('turns', 5)} turns in a "
                   f"row each: the `x{conc.get('turns', 5)}` series); rounds are cut after "
                   f"{conc['deadline_s']:.0f} s (`unserved`; several-turn rounds get proportionally longer). Apps:\n\n")
        for key, app in conc["apps"].items():
            idle = app.get("idle_cpu_share_of_core")
            out.append(f"- `{key}`: {app['label']}" + (f"; idle CPU {100 * idle:.1f}% of a core" if idle is not None
                                                       else "") + "\n")
        if any(k in conc["apps"] for k in ("cmw-w2", "chatinterface")):
            out.append("\n### Side by side (issue 15)\n\n*first-token overhead* = time to first token - one token "
                       "delay; *app CPU* = the app's processes only (for `cmw-w2` both workers; HAProxy and the "
                       "supervisor are the `proxy CPU s` column below); *vs bare ChatInterface*: app CPU per turn "
                       "divided by the bare ChatInterface's at the same N (one-turn rounds).\n\n" + side_by_side(conc))
        out.append("\n### All figures, one turn per session\n\n" + concurrency_table(conc))
        if any(app.get("multi_turn") for app in conc["apps"].values()):
            out.append(f"\n### All figures, {conc.get('turns', 5)} turns per session\n\nEach session: its name, "
                       "\"What's my name?\" (answered with its own name, else counted as an error), its name, ...; "
                       "wall = first join -> last reply of the round.\n\n" + concurrency_table(conc, multi=True))
    fo = res.get("failover")
    if fo:
        out.append("\n## Failover: SIGKILL of a serving worker mid-stream\n\n" + _when(fo) + failover.markdown(fo))
    mem = res.get("memory")
    if mem:
        out.append("\n## 3. Memory per live session and after expiry\n\n" + _when(mem) + "![memory](memory.png)\n\n"
                   + memory_tables(mem))
    sp = res.get("session_path")
    if sp:
        out.append("\n## 4. Resume (in-process)\n\n" + _when(sp) + session_table(sp))
    notes = res.get("notes")
    if notes:
        out.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
    return "".join(out)


# ------------------------------------------------------------------------------------------------
# plots


def plot_concurrency(conc: dict, path: Path, token_delay: float) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (a_wall, a_ttft), (a_cpu, a_ok) = axes
    for key, app in conc["apps"].items():
        color = COLORS.get(key)
        for multi, rs in ((False, app["rounds"]), (True, (app.get("multi_turn") or {}).get("rounds", []))):
            if not rs:
                continue
            ns = [r["n"] for r in rs]
            label, style = (f"{key} x{rs[0]['turns_per_session']} turns", "s:") if multi else (key, "o-")
            a_wall.plot(ns, [r.get("wall_ratio") for r in rs], style, color=color, label=label)
            if not multi:
                a_ttft.plot(ns, [r["ttft_p99_ms"] for r in rs], "o-", color=color, label=f"{key} p99")
                a_ttft.plot(ns, [r["ttft_p50_ms"] for r in rs], "x--", color=color, alpha=0.6, label=f"{key} p50")
            a_cpu.plot(ns, [cpu_per_turn_ms(r) for r in rs], style, color=color, label=label)
            a_ok.plot(ns, [100 * r["ok"] / r.get("expected", r["n"]) for r in rs], style, color=color, label=label)
            cut = [r for r in rs if r["unserved_at_deadline"]]
            if cut:  # rounds cut at the deadline: their wall is the deadline, TTFT covers served turns only
                a_wall.plot([r["n"] for r in cut], [r.get("wall_ratio") for r in cut], "o", mfc="white", color=color,
                            label=f"{label}: cut at deadline")
    a_wall.axhline(W2_WALL_RATIO, color="gray", ls=":", label=f"target {W2_WALL_RATIO} (--workers 2, N=100)")
    a_wall.set(title="wall(N) / wall(1)", xlabel="concurrent sessions N", xscale="log", yscale="log")
    a_ttft.axhline(W2_OVERHEAD_P99_MS + token_delay * 1000, color="gray", ls=":", label="target p99 (--workers 2, N=100)")
    a_ttft.set(title="time to first token (ms, served turns)", xlabel="concurrent sessions N", xscale="log", yscale="log")
    a_cpu.set(title="app CPU ms per served turn (all app processes)", xlabel="concurrent sessions N", xscale="log")
    a_ok.set(title="turns served before the deadline (%)", xlabel="concurrent sessions N",
             xscale="log", ylim=(0, 105))
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"Concurrent chat sessions, offline model at {token_delay * 1000:.0f} ms/token, ~50 tokens per turn")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(mem: dict, path: Path) -> None:
    fig, (a_live, a_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    http = mem.get("http")
    if http:
        pts = http["points"]
        a_live.plot([p["live"] for p in pts], [p["rss"] / 2**20 for p in pts], "o-", label="app process RSS")
    a_live.set(title="RSS vs live sessions", xlabel="live sessions", ylabel="MiB")
    if http:
        base = http["points"][0]["rss"] / 2**20
        t = [p["t"] for p in http["points"]] + [p["t"] for p in http["timeline"]]
        r = [p["rss"] / 2**20 for p in http["points"]] + [p["rss"] / 2**20 for p in http["timeline"]]
        a_time.plot(t, r, ".-", label="app RSS")
        a_time.axhspan(base * 0.9, base * 1.1, color="green", alpha=0.15, label="baseline +-10%")
        created = http["creation_s"]
        a_time.axvline(created, color="gray", ls=":", label="last session created")
        a_time.axvline(created + http["ttl_s"], color="red", ls=":", label="last session's TTL over")
        a_time.set(title="RSS over time (creation, then idle expiry)", xlabel="seconds", ylabel="MiB")
    for ax in (a_live, a_time):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(res: dict, results_dir: Path = RESULTS, update_readme: bool = True) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    if res.get("concurrency"):
        plot_concurrency(res["concurrency"], results_dir / "concurrency.png", res["token_delay_s"])
    if res.get("memory"):
        plot_memory(res["memory"], results_dir / "memory.png")
    md = render_markdown(res)
    (results_dir / "results.md").write_text(md)
    if update_readme and README.exists():
        text = README.read_text()
        if START in text and END in text:
            section = md.split("\n", 2)[2].replace("](concurrency.png)", "](results/concurrency.png)").replace(
                "](memory.png)", "](results/memory.png)")
            head, rest = text.split(START, 1)
            _, tail = rest.split(END, 1)
            README.write_text(f"{head}{START}\n{section}\n{END}{tail}")


def main() -> None:
    res = json.loads((RESULTS / "results.json").read_text())
    render(res)
    print(f"wrote {RESULTS / 'results.md'}")


if __name__ == "__main__":
    main()
