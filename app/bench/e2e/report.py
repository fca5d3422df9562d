"""How `python -m app bench e2e` shows what it measured: a progress bar, tables (rich), a PNG (matplotlib)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.bench.e2e.plan import E2EConfig
from app.bench.e2e.summary import PhaseData, Sample

console = Console()
if not console.is_terminal:  # a log file or a pipe: wide enough for the tables, not 80 columns
    console = Console(width=150)


def announce(cfg: E2EConfig, health: dict[str, Any]) -> None:
    console.print(f"[bold]bench e2e[/bold] against {cfg.gateway} (node {health.get('node', '?')}): {cfg.describe()}")


class LiveProgress:
    """A progress bar over the sending window with running counts; then 'draining' until idle."""

    def __init__(self, enabled: bool, label: str, duration: float) -> None:
        self.enabled = enabled
        self.label = label
        self.duration = duration
        self.progress: Progress | None = None
        self.task = TaskID(0)

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self.progress.start()
            self.task = self.progress.add_task(f"{self.label}: sending", total=self.duration, stats="")
        return self

    def update(self, sample: Sample, samples: list[Sample]) -> None:
        if self.progress is None:
            return
        prev = samples[-2] if len(samples) > 1 else None
        dt = sample.t - prev.t if prev else 0.0
        acked_rate = (sample.acked - prev.acked) / dt if prev and dt > 0 else 0.0
        delivered_rate = (sample.delivered - prev.delivered) / dt if prev and dt > 0 else 0.0
        stats = (
            f"sent {sample.sent:,}  acked {sample.acked:,} ({acked_rate:,.0f}/s)  "
            f"delivered {sample.delivered:,} ({delivered_rate:,.0f}/s)  queued {sum(sample.queues.values()):,}"
        )
        self.progress.update(self.task, completed=min(max(sample.t, 0.0), self.duration), stats=stats)

    def draining(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"{self.label}: draining", completed=self.duration)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()


def _lat(summary: dict[str, Any], kind: str) -> str:
    lat = summary["latency_ms"][kind]
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f}"


def _after(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.1f} s ({'within' if seconds <= 5.0 else 'NOT within'} 5 s)"


def _per(cpu_ms: dict[str, float | None]) -> str:
    stack, clients = cpu_ms.get("stack"), cpu_ms.get("with_clients")
    return f"{stack:.3f} / {clients:.3f}" if stack is not None and clients is not None else "-"


def _rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    m, t = summary["messages"], summary["throughput"]
    refused = ", ".join(f"{code}: {n}" for code, n in m["refused_by_code"].items())
    return [
        ("messages sent", f"{m['sent']:,}"),
        ("acknowledged", f"{m['acknowledged']:,}"),
        ("refused (errCode)", f"{m['refused']:,}" + (f" ({refused})" if refused else "")),
        ("unanswered", f"{m['unanswered']:,}"),
        ("persisted in MongoDB", f"{m['persisted']:,}"),
        (
            "lost (acked, not persisted)",
            f"{m['lost']:,}" if m["lost"] is not None else f"? ({m['not_persisted_at_end']:,} not yet, not drained)",
        ),
        ("duplicated (pushed / stored)", f"{m['duplicated']:,} ({m['duplicated_pushes']} / {m['duplicated_stored']})"),
        ("deliveries (expected)", f"{m['deliveries']:,} ({m['expected_deliveries']:,})"),
        ("accepted msg/s", f"{t['accepted_msgs_per_s']:,.0f}"),
        ("deliveries/s end to end", f"{t['deliveries_per_s']:,.0f}  (over {t['end_to_end_span_s']:.1f} s)"),
        ("ack ms p50/p95/p99/max", _lat(summary, "ack")),
        ("send-to-push ms p50/p95/p99/max", _lat(summary, "push")),
        ("drained", f"{'yes' if summary['drained'] else 'NO'} after {summary['drain_s']:.1f} s"),
        ("persist queue empty after sending", _after(summary.get("persist_empty_after_s"))),
        ("CPU ms per delivery: stack / + clients", _per(summary.get("cpu_ms_per_delivery") or {})),
        ("machine CPU (2 cores = 100%)", f"{summary['machine_cpu_pct']:.0f}%"),
    ]


def print_report(report: dict[str, Any]) -> None:
    base = report.get("baseline")
    table = Table(title=f"bench e2e: {report['description']}")
    table.add_column("", no_wrap=True)
    table.add_column("pipeline", justify="right")
    if base:
        table.add_column("baseline (1 task/msg)", justify="right")
    for (label, ours), theirs in zip(_rows(report), _rows(base) if base else [("", "")] * 99, strict=False):
        table.add_row(label, ours, *([theirs[1]] if base else []))
    if base:
        r = report["ratio"]

        def x(v: float | None) -> str:
            return f"{v:.2f}x" if v is not None else "-"

        table.add_row(
            "[bold]pipeline / baseline[/bold]",
            f"accepted {x(r['accepted_msgs_per_s'])}, deliveries/s {x(r['deliveries_per_s'])}",
            f"push p99 {x(r['push_p99_lower_by'])} lower",
        )
    console.print(table)
    for summary in [report, *([base] if base else [])]:
        procs = Table(title=f"{summary['label']}: stack processes (CPU % of one core)")
        for col in ("process", "pids", "CPU s", "CPU ms/delivery", "% while sending", "peak %", "peak RSS MB"):
            procs.add_column(col, justify="left" if col in ("process", "pids") else "right", no_wrap=True)
        for p in summary["processes"]:
            pids = ",".join(str(x) for x in p["pids"][:4]) + ("..." if len(p["pids"]) > 4 else "")
            procs.add_row(
                p["name"],
                pids,
                f"{p['cpu_s']:.1f}",
                f"{p['cpu_ms_per_delivery']:.3f}" if p.get("cpu_ms_per_delivery") is not None else "-",
                f"{p['cpu_pct_while_sending']:.0f}",
                f"{p['peak_cpu_pct']:.0f}",
                f"{p['peak_rss_mb']:.0f}",
            )
        console.print(procs)
        queues = Table(title=f"{summary['label']}: broker queues (messages waiting)")
        for col in ("queue", "max depth", "at end of sending"):
            queues.add_column(col, justify="left" if col == "queue" else "right")
        for name, q in summary["queues"].items():
            queues.add_row(name, f"{q['max']:,}", f"{q['at_end_of_sending']:,}")
        console.print(queues)
        console.print(f"[bold]{summary['label']} bottleneck:[/bold] {summary['bottleneck']}")


def plot(phases: list[PhaseData], summaries: list[dict[str, Any]], path: str) -> None:
    """Latency over time, throughput and queue depth over time, latency histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colours = {"pipeline": ("tab:blue", "tab:cyan"), "baseline": ("tab:red", "tab:orange")}
    fig, (ax_lat, ax_rate, ax_hist) = plt.subplots(3, 1, figsize=(11, 13))
    ax_q = ax_rate.twinx()
    all_ms: list[float] = []
    for phase, summary in zip(phases, summaries, strict=True):
        push_c, ack_c = colours.get(phase.label, ("tab:green", "tab:olive"))
        s = phase.series
        if s["push_ms"].size:
            pick = np.random.default_rng(0).choice(s["push_ms"].size, min(20000, s["push_ms"].size), replace=False)
            ax_lat.scatter(s["push_at"][pick], s["push_ms"][pick], s=2, alpha=0.15, color=push_c, rasterized=True)
        rows = summary["timeline"]
        ts = [r["t"] for r in rows]
        for key, colour, style, name in (
            ("push_p99_ms", push_c, "-", "send-to-push p99"),
            ("push_p50_ms", push_c, "--", "send-to-push p50"),
            ("ack_p99_ms", ack_c, "-", "ack p99"),
            ("ack_p50_ms", ack_c, "--", "ack p50"),
        ):
            ys = [r[key] if r[key] is not None else np.nan for r in rows]
            ax_lat.plot(ts, ys, style, color=colour, label=f"{phase.label}: {name}")
        ax_rate.plot(ts, [r["acked_per_s"] for r in rows], "-", color=ack_c, label=f"{phase.label}: acked/s")
        ax_rate.plot(ts, [r["delivered_per_s"] for r in rows], "-", color=push_c, label=f"{phase.label}: delivered/s")
        ax_q.plot(
            ts,
            [sum(r["queues"].values()) if r["queues"] else 0 for r in rows],
            ":",
            color=push_c,
            label=f"{phase.label}: broker messages queued",
        )
        all_ms.extend([float(s["push_ms"].max()) if s["push_ms"].size else 1.0])
        all_ms.extend([float(s["ack_ms"].max()) if s["ack_ms"].size else 1.0])
    top = max([*all_ms, 1.0])
    bins = np.logspace(-1, np.log10(top * 1.1), 80)
    for phase in phases:
        push_c, ack_c = colours.get(phase.label, ("tab:green", "tab:olive"))
        s = phase.series
        for key, colour, name in (("push_ms", push_c, "send-to-push"), ("ack_ms", ack_c, "ack")):
            clipped = np.clip(s[key], 0.1, None)
            ax_hist.hist(clipped, bins=bins, histtype="step", color=colour, label=f"{phase.label}: {name}")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("send time (s from start)")
    ax_lat.set_title("latency over time (dots: send-to-push of single messages)")
    ax_lat.legend(fontsize=7, loc="upper left")
    ax_rate.set_ylabel("messages/s")
    ax_rate.set_xlabel("time (s from start)")
    ax_q.set_ylabel("broker messages queued")
    ax_rate.set_title("throughput and queue depth")
    lines = ax_rate.get_legend_handles_labels()
    qlines = ax_q.get_legend_handles_labels()
    ax_rate.legend(lines[0] + qlines[0], lines[1] + qlines[1], fontsize=7, loc="upper right")
    ax_hist.set_xscale("log")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("latency (ms)")
    ax_hist.set_ylabel("messages")
    ax_hist.set_title("latency histogram")
    ax_hist.legend(fontsize=7)
    fig.suptitle(summaries[0]["description"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
