"""Render benchmark results: Markdown tables, PNG plots (matplotlib) and JSON.

The input is the plain dict the harness builds (``context``, ``quality``, ``loss``, ``speed``,
``cache``), so a saved ``results.json`` can be re-rendered without re-running anything.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from .metrics import METRICS

__all__ = ["machine_description", "render_markdown", "write_report"]


def machine_description() -> dict[str, Any]:
    """CPU model, core count, memory, OS and library versions of this machine."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"date": _dt.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": mem_gib, "os": platform.platform(),
            "python": platform.python_version()}


def _num(value: Any, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


_DIGITS = {"stoi": 3, "pesq": 2, "distillmos": 2, "dwer": 1, "speaker": 3, "plcmos": 2}


def _quality_table(rows: list[dict[str, Any]]) -> list[str]:
    metrics = list(dict.fromkeys(m for r in rows for m in [*r["metrics"], *r["missing_metrics"]]))
    head = ["codec", "kbps", "delay ms", *[METRICS[m].label for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | missing: {r['reason'][:160]} |"
                         + " |" * (len(head) - 2))
            continue
        cells = [r["label"] if r["label"] != r["name"] else r["name"],
                 "-" if r["name"] == "original" else _num(r["kbps"], 2),
                 _num(r["delay_ms"], 1)]
        for m in metrics:
            if m in r["missing_metrics"]:
                cells.append(r["missing_metrics"][m])
            else:
                cells.append(_num(r["metrics"].get(m), _DIGITS.get(m, 3)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _loss_tables(codecs: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for c in codecs:
        lines.append(f"#### {c['label']}")
        lines.append("")
        if c["status"] != "ok":
            lines += [f"missing: {c['reason']}", ""]
            continue
        for m, hint in c.get("missing_metrics", {}).items():
            lines.append(f"- {METRICS[m].label}: {hint}")
        lines.append(f"PLCMOS of the lossless decode: {_num(c['lossless_plcmos'], 2)}. "
                     "Cells: STOI vs lossless decode / STOI vs original / WB-PESQ vs "
                     "original / PLCMOS (concealed frames %, kbps).")
        lines.append("")
        settings = list(dict.fromkeys(r["redundancy"] for r in c["rows"]))
        head = ["loss", *[f"K={s}" for s in settings]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        conditions = list(dict.fromkeys((r["loss_model"], r["loss_rate"]) for r in c["rows"]))
        for model, rate in conditions:
            cells = [f"{rate * 100:.0f}% {model}"]
            for s in settings:
                r = next(x for x in c["rows"] if x["loss_model"] == model
                         and x["loss_rate"] == rate and x["redundancy"] == s)
                m = r["metrics"]
                cells.append(f"{_num(m.get('stoi_lossless'), 3)} / "
                             f"{_num(m.get('stoi_original'), 3)} / "
                             f"{_num(m.get('pesq_original'), 2)} / {_num(m.get('plcmos'), 2)} "
                             f"({r['concealed_pct']:.1f}%, {r['kbps']:.2f})")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def render_markdown(report: dict[str, Any], plots: bool = True) -> str:
    """The report as Markdown.

    Args:
        report: the harness's result dict.
        plots: add image links to the PNGs :func:`write_report` writes beside it.

    Returns:
        Markdown text.
    """
    ctx = report.get("context", {})
    mach = ctx.get("machine", {})
    lines = ["# voip-codec benchmark report", ""]
    lines.append(f"{mach.get('date', '')}, {mach.get('cpu', '?')}, {mach.get('cores', '?')} "
                 f"cores, {mach.get('memory_gib', '?')} GiB, {mach.get('os', '')}, Python "
                 f"{mach.get('python', '')}. Clips: {ctx.get('clips')} from "
                 f"`{ctx.get('clip_dir')}` ({ctx.get('audio_seconds')} s).")
    lines.append("")
    if "quality" in report:
        lines += ["## Quality (no loss)", "",
                  "Means over clips; each codec's fixed delay removed; outputs resampled to "
                  "16 kHz. kbps = measured payload bitrate (packet headers excluded). dWER = "
                  "pocketsphinx WER of the decoded audio against pocketsphinx's transcript of "
                  "the original (a relative intelligibility proxy).", ""]
        lines += _quality_table(report["quality"])
        lines.append("")
        if plots:
            lines += ["![quality vs bitrate](quality_vs_bitrate.png)", ""]
    if "loss" in report:
        lines += ["## Packet loss", "",
                  f"{ctx.get('loss_clips', ctx.get('clips'))} clips through the packet / jitter "
                  f"buffer / concealment simulation, fixed playout delay "
                  f"{ctx.get('playout_delay_ms')} ms, bursty = Gilbert-Elliott with mean burst "
                  f"{ctx.get('burst')} packets.", ""]
        lines += _loss_tables(report["loss"])
        if plots:
            lines += ["![quality vs loss](quality_vs_loss.png)", ""]
    if "speed" in report:
        from .codec_speed import CodecSpeed, format_speed_table

        lines += ["## Speed", "",
                  f"{ctx.get('speed_seconds', '')} s of speech streamed frame by frame, each "
                  "codec in a fresh process; CPU s/s = CPU seconds per audio second.", ""]
        lines.append(format_speed_table([CodecSpeed(**r) for r in report["speed"]]))
        lines.append("")
        if plots:
            lines += ["![speed](speed.png)", ""]
    return "\n".join(lines)


def _plot_quality(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [r for r in report["quality"]
            if r["status"] == "ok" and r["kbps"] and r["name"] != "original"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("stoi", "pesq"), strict=True):
        for r in rows:
            value = r["metrics"].get(metric)
            if value is None:
                continue
            ax.scatter(r["kbps"], value)
            ax.annotate(r["name"], (r["kbps"], value), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("payload bitrate (kbit/s)")
        ax.set_ylabel(METRICS[metric].label)
        ax.grid(True, alpha=0.3)
    fig.suptitle("Quality vs bitrate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_loss(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    codecs = [c for c in report["loss"] if c["status"] == "ok"]
    fig, axes = plt.subplots(1, max(1, len(codecs)), figsize=(4.5 * max(1, len(codecs)), 4),
                             squeeze=False)
    for ax, c in zip(axes[0], codecs, strict=False):
        settings = list(dict.fromkeys(r["redundancy"] for r in c["rows"]))
        for model, style in (("random", "-"), ("bursty", "--")):
            for s in settings:
                pts = sorted((r["loss_rate"] * 100, r["metrics"].get("stoi_original"))
                             for r in c["rows"] if r["loss_model"] == model
                             and r["redundancy"] == s and r["metrics"].get("stoi_original"))
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, marker="o", ms=3,
                            label=f"{model} K={s}")
        ax.set_title(c["name"], fontsize=9)
        ax.set_xlabel("loss rate (%)")
        ax.set_ylabel("STOI vs original")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("Quality vs packet loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_speed(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [r for r in report["speed"] if r["status"] == "ok"]
    threads = sorted({r["threads"] for r in rows})
    names = list(dict.fromkeys(r["codec"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 2), 4))
    width = 0.8 / max(1, len(threads))
    for k, t in enumerate(threads):
        vals = []
        for n in names:
            r = next((x for x in rows if x["codec"] == n and x["threads"] == t), None)
            vals.append((r["encode_cpu_per_s"] + r["decode_cpu_per_s"]) if r else 0.0)
        ax.bar([i + k * width for i in range(len(names))], vals, width, label=f"{t} thread(s)")
    ax.set_xticks([i + width * (len(threads) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("encode + decode CPU s per audio s")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``report.md``, ``results.json`` and the PNG plots into ``out_dir``.

    Plots are skipped (and said so in the Markdown) when matplotlib is missing.

    Returns:
        The files written.
    """
    import importlib.util

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    have_mpl = importlib.util.find_spec("matplotlib") is not None
    if have_mpl:
        import matplotlib

        matplotlib.use("Agg")
        for key, fn, name in (("quality", _plot_quality, "quality_vs_bitrate.png"),
                              ("loss", _plot_loss, "quality_vs_loss.png"),
                              ("speed", _plot_speed, "speed.png")):
            if report.get(key):
                fn(report, out_dir / name)
                written.append(out_dir / name)
    text = render_markdown(report, plots=have_mpl)
    if not have_mpl:
        text += "\nPlots: missing (pip install matplotlib)\n"
    (out_dir / "report.md").write_text(text, encoding="utf-8")
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, default=str),
                                          encoding="utf-8")
    return written + [out_dir / "report.md", out_dir / "results.json"]
