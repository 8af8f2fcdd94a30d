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

__all__ = ["README_BEGIN", "README_END", "machine_description", "quality_table",
           "readme_quality_section", "render_markdown", "update_readme", "write_report"]

README_BEGIN = "<!-- bench-quality:begin -->"
README_END = "<!-- bench-quality:end -->"
"""Markers around the generated quality table in a README (see :func:`update_readme`)."""


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


def quality_table(rows: list[dict[str, Any]]) -> list[str]:
    """The Markdown quality table (one line per list item) of :func:`run_quality`'s rows.

    Args:
        rows: :class:`~voip_codec_bench.harness.CodecQuality` objects as dicts
            (``dataclasses.asdict``).

    Returns:
        The table's lines: header, separator, one row per codec.
    """
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


_LOSS_CELL = (("stoi_lossless", "STOI vs lossless", 3), ("stoi_original", "STOI vs original", 3),
              ("pesq_lossless", "WB-PESQ vs lossless", 2),
              ("pesq_original", "WB-PESQ vs original", 2), ("plcmos", "PLCMOS", 2))


def _loss_tables(codecs: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for c in codecs:
        lines.append(f"#### {c['label']}")
        lines.append("")
        if c["status"] != "ok":
            lines += [f"{c['status']}: {c['reason']}", ""]
            continue
        for m, hint in c.get("missing_metrics", {}).items():
            lines.append(f"- {METRICS[m].label}: {hint}")
        present = {k for r in c["rows"] for k, v in r["metrics"].items() if v is not None}
        shown = [(k, label, d) for k, label, d in _LOSS_CELL if k in present]
        if c.get("lossless_plcmos") is not None:
            lines.append(f"PLCMOS of the lossless decode: {_num(c['lossless_plcmos'], 2)}.")
        lines.append("Cells: " + " / ".join(label for _, label, _ in shown)
                     + " (concealed frames %, packet kbps).")
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
                values = " / ".join(_num(r["metrics"].get(k), d) for k, _, d in shown)
                cells.append(f"{values} ({r['concealed_pct']:.1f}%, {r['kbps']:.2f})")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _header(report: dict[str, Any]) -> list[str]:
    ctx = report.get("context", {})
    mach = ctx.get("machine", {})
    lines = [f"{mach.get('date', '')}, {mach.get('cpu', '?')} ({mach.get('cores', '?')} cores), "
             f"{mach.get('memory_gib', '?')} GiB, {mach.get('os', '')}, Python "
             f"{mach.get('python', '')}, torch threads per process: {ctx.get('threads', '?')}, "
             f"worker processes: {ctx.get('jobs', 1)}."]
    if "loadavg_start" in ctx:
        lines.append(f"Load average at the start: {ctx['loadavg_start']}, at the end: "
                     f"{ctx.get('loadavg_end')}.")
    if ctx.get("note"):
        note = str(ctx["note"]).strip()
        lines.append(note if note.endswith((".", "!", "?")) else note + ".")
    avail = ctx.get("clips_available")
    subset = (f" (all {avail} clips)" if avail == ctx.get("clips")
              else f" ({ctx.get('clips')} of {avail} clips, picked evenly from the sorted list)"
              if avail else "")
    lines.append(f"Quality: {ctx.get('clips')} clips from `{ctx.get('clip_dir')}`{subset}, "
                 f"{ctx.get('audio_seconds')} s of speech.")
    if "loss_clips" in ctx and report.get("loss"):
        lines.append(f"Packet loss: {ctx['loss_clips']} clips ({ctx.get('loss_audio_seconds')} s; "
                     "picked evenly from the folder: a subset for time), listed in results.json.")
    wall = ctx.get("wall_s")
    if wall:
        lines.append(f"Wall time: quality + loss {wall['quality_and_loss'] / 60:.1f} min, speed "
                     f"{wall['speed'] / 60:.1f} min; cache {report.get('cache', {}).get('hits')} "
                     f"hits, {report.get('cache', {}).get('misses')} misses.")
    return [" ".join(lines), ""]


def render_markdown(report: dict[str, Any], plots: bool = True) -> str:
    """The report as Markdown.

    Args:
        report: the harness's result dict.
        plots: add image links to the PNGs :func:`write_report` writes beside it.

    Returns:
        Markdown text.
    """
    ctx = report.get("context", {})
    lines = ["# voip-codec benchmark report", "", *_header(report)]
    if "quality" in report:
        lines += ["## Quality (no loss)", "",
                  "Means over clips; each codec's fixed delay removed; outputs resampled to "
                  "16 kHz. kbps = measured payload bitrate (packet headers excluded). dWER = "
                  "pocketsphinx WER of the decoded audio against pocketsphinx's transcript of "
                  "the original (a relative intelligibility proxy).", ""]
        lines += quality_table(report["quality"])
        lines.append("")
        if plots:
            lines += ["![quality vs bitrate](quality_vs_bitrate.png)", ""]
    if "loss" in report:
        lines += ["## Packet loss", "",
                  f"{ctx.get('loss_clips', ctx.get('clips'))} clips through the packet / jitter "
                  f"buffer / concealment simulation (one codec frame per packet), fixed playout "
                  f"delay {ctx.get('playout_delay_ms')} ms, bursty = Gilbert-Elliott with mean "
                  f"burst {ctx.get('burst')} packets. Lost frames are concealed by repeating the "
                  "last payload with a fade (FFmpeg exposes no Opus PLC/FEC). K = earlier frames "
                  "repeated in each packet; packet kbps include our 16-byte packet header.", ""]
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


def readme_quality_section(report: dict[str, Any]) -> str:
    """The README's generated block: one line on when/where/what, then the quality table."""
    ctx = report.get("context", {})
    mach = ctx.get("machine", {})
    avail = ctx.get("clips_available")
    scope = (f"all {avail} clips" if avail == ctx.get("clips")
             else f"{ctx.get('clips')} of {avail} clips")
    rows = [dict(r, reason=r["reason"].split(". ")[0].split(" (looked")[0][:100])
            for r in report.get("quality", [])]
    lines = [README_BEGIN,
             f"Generated by `voip-codec bench report` on {mach.get('date', '?')}: eval split, "
             f"{scope} ({ctx.get('audio_seconds')} s of speech), {mach.get('cpu', '?')} "
             f"({mach.get('cores', '?')} cores, shared), {mach.get('memory_gib', '?')} GiB. "
             "Full report with loss and speed: `docs/benchmarks/report.md`.", "",
             *quality_table(rows), README_END]
    return "\n".join(lines)


def update_readme(path: Path, report: dict[str, Any]) -> None:
    """Replace the block between :data:`README_BEGIN` and :data:`README_END` in ``path``.

    Raises:
        ValueError: the file lacks the markers, or the report has no quality results.
        OSError: the file cannot be read or written.
    """
    if not report.get("quality"):
        raise ValueError("the report has no quality results to put in the README")
    text = Path(path).read_text(encoding="utf-8")
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{path} has no {README_BEGIN} ... {README_END} block")
    new = text[:begin] + readme_quality_section(report) + text[end + len(README_END):]
    Path(path).write_text(new, encoding="utf-8")


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
    cols = min(3, max(1, len(codecs)))
    rows = max(1, -(-len(codecs) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(codecs):]:
        ax.set_visible(False)
    for ax, c in zip(axes.flat, codecs, strict=False):
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
