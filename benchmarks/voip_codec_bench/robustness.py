"""``voip-codec bench robustness``: reliability and security in figures.

Sections, in this order (``--sections`` picks some):

* ``fuzz``: every parser of outside bytes (:data:`voip_codec_bench.fuzz.FUZZ_TARGETS`),
  1,000,000 inputs each by the mutation engine and, when atheris installs, as many again
  coverage-guided;
* ``poison``: NaN / inf / square / DC / silence into the bundled model's encoder mid-call and
  bad token sequences into its decoder (:mod:`voip_codec_bench.poison`);
* ``long-call``: a one-hour call on an accelerated clock with PCM, and a shorter FocalCodec one
  (:mod:`voip_codec_bench.long_call`);
* ``signaling``: the signaling server under load (:mod:`voip_codec_bench.signaling_load`);
* ``faults``: real aiortc calls on 127.0.0.1 with a killed peer, an outage, a restarted
  signaling server and a peer sending at twice real time (:mod:`voip_codec_bench.faults`);
* ``long-aiortc``: with ``--long-call-minutes N``, a real N-minute aiortc call at 10% loss with
  RSS and CPU sampled every 10 s.

``--quick`` shrinks every size for CI. The exit status is 1 when a figure misses its bound
(listed under ``failures``), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from voip_codec.errors import UserError

__all__ = ["SECTIONS", "add_robustness_parser", "run_robustness"]

SECTIONS: tuple[str, ...] = ("fuzz", "poison", "long-call", "signaling", "faults")
"""Sections run by default, in order (``long-aiortc`` only with ``--long-call-minutes``)."""


def add_robustness_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench robustness`` to the ``bench`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "robustness", help="fuzzing, poisoned input, a one-hour call, signaling load, faults")
    p.add_argument("--sections", nargs="+", choices=(*SECTIONS, "long-aiortc"), default=None,
                   metavar="S", help=f"sections to run (default: {' '.join(SECTIONS)}; "
                                     "long-aiortc is added by --long-call-minutes)")
    p.add_argument("--quick", action="store_true",
                   help="CI sizes (100k fuzz inputs per parser, a 5-minute call, 100 "
                        "signaling clients, ...) instead of the full ones")
    p.add_argument("--fuzz-inputs", type=int, default=None,
                   help="inputs per parser and engine (default 1,000,000; --quick 100,000)")
    p.add_argument("--fuzz-targets", nargs="+", default=None, metavar="T",
                   help="parsers to fuzz (default: all of voip_codec_bench.fuzz.FUZZ_TARGETS)")
    p.add_argument("--fuzz-engine", choices=("auto", "mutation", "atheris", "both"),
                   default="auto", help="auto (default): both when atheris is installed, "
                                        "else mutation")
    p.add_argument("--call-seconds", type=float, default=None,
                   help="length of the simulated PCM call (default 3600; --quick 300)")
    p.add_argument("--long-call-minutes", type=float, default=None,
                   help="also run a real aiortc call of this many minutes at 10%% loss")
    p.add_argument("--speech", default=None,
                   help="folder of eval speech (default $VOIP_CODEC_SHARED/speech/eval, else "
                        "../shared/speech/eval beside the checkout)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--from-json", default=None, metavar="FILE",
                   help="print the tables of an earlier --json run instead of running")
    p.set_defaults(func=run_robustness)
    return p


def _fuzz(args: argparse.Namespace, failures: list[str]) -> list[dict[str, Any]]:
    from .fuzz import FUZZ_TARGETS, atheris_available, fuzz_atheris, fuzz_mutation, target_by_name

    try:
        targets = ([target_by_name(n) for n in args.fuzz_targets] if args.fuzz_targets
                   else list(FUZZ_TARGETS))
    except ValueError as exc:
        raise UserError(f"bench robustness: {exc}") from None
    inputs = args.fuzz_inputs or (100_000 if args.quick else 1_000_000)
    engine = args.fuzz_engine
    if engine == "atheris" and not atheris_available():
        raise UserError("bench robustness: --fuzz-engine atheris needs `pip install atheris`")
    if engine == "auto":
        engine = "both" if atheris_available() and not args.quick else "mutation"
    rows = []
    for target in targets:
        if engine in ("mutation", "both"):
            rows.append(fuzz_mutation(target, inputs).to_dict())
        if engine in ("atheris", "both"):
            rows.append(fuzz_atheris(target, inputs).to_dict())
        _progress(args, f"fuzz {target.name}: done")
    for row in rows:
        if row["unexpected"] or row["crashes"]:
            failures.append(f"fuzz {row['target']} ({row['engine']}): {row['unexpected']} "
                            f"undocumented exceptions, {row['crashes']} crashes")
    return rows


def _speech_dir(args: argparse.Namespace) -> Path:
    from .paths import default_clip_dir

    return Path(args.speech) if args.speech else default_clip_dir()


def _poison(args: argparse.Namespace, failures: list[str]) -> list[dict[str, Any]]:
    from .poison import STOI_TOLERANCE, run_poisoning

    before, after = (2.0, 4.0) if args.quick else (4.0, 8.0)
    rows = [r.to_dict() for r in run_poisoning(_speech_dir(args), before_s=before,
                                               after_s=after)]
    for row in rows:
        if not row["ok"]:
            failures.append(f"poison {row['side']} {row['condition']}: finite="
                            f"{row['state_finite']}, peak {row['peak_abs']}, STOI delta "
                            f"{row['stoi_delta']} (bound -{STOI_TOLERANCE})")
    return rows


def _long_call(args: argparse.Namespace, failures: list[str]) -> list[dict[str, Any]]:
    from .long_call import run_long_call

    seconds = args.call_seconds or (300.0 if args.quick else 3600.0)
    runs = [("pcm16", seconds, 30.0 if seconds >= 300 else seconds / 10),
            ("focalcodec-default", 60.0 if args.quick else 300.0, 5.0 if args.quick else 30.0)]
    rows = []
    for codec, length, outage in runs:
        row = run_long_call(codec, length, outage_s=outage, clip_dir=_speech_dir(args)).to_dict()
        rows.append(row)
        _progress(args, f"long call {codec}: done")
        if not row["exact_length"]:
            failures.append(f"long call {codec}: {row['output_frames']} output frames for "
                            f"{row['input_frames']} input frames")
        if row["resync_seconds"] is None or row["resync_seconds"] >= 1.0:
            failures.append(f"long call {codec}: resync after the outage "
                            f"{row['resync_seconds']} s (bound 1 s)")
        if length >= 120 and row["rss_growth_mb"] >= 20.0:
            failures.append(f"long call {codec}: RSS grew {row['rss_growth_mb']} MB after the "
                            "first minute (bound 20 MB)")
    return rows


def _signaling(args: argparse.Namespace, failures: list[str]) -> dict[str, Any]:
    from .signaling_load import run_signaling_load

    if args.quick:
        result = run_signaling_load(clients=100, rounds=1, idle=200, abuse=10)
    else:
        result = run_signaling_load(clients=500, rounds=2, idle=1000, abuse=50)
    row = result.to_dict()
    if result.room_mixing:
        failures.append(f"signaling: {result.room_mixing} messages crossed rooms")
    if result.pairs_ok != result.pairs_expected:
        failures.append(f"signaling: {result.pairs_ok}/{result.pairs_expected} room pairings "
                        f"completed ({'; '.join(result.client_failures[:3])})")
    if not result.abuse_ok:
        bad = [k for k, v in result.abuse.items() if v["ok"] != v["tries"]]
        failures.append(f"signaling: abuse not rejected as documented: {', '.join(bad)}")
    if result.health_p99_ms >= 50.0:
        failures.append(f"signaling: /health p99 {result.health_p99_ms:.1f} ms (bound 50 ms)")
    return row


def _faults(args: argparse.Namespace, failures: list[str]) -> dict[str, Any]:
    from .faults import run_faults

    result = run_faults(quick=args.quick)
    failures.extend(result.pop("failures"))
    return result


def _long_aiortc(args: argparse.Namespace, failures: list[str]) -> dict[str, Any]:
    from .faults import run_long_aiortc_call

    clips = _speech_dir(args)
    result = run_long_aiortc_call(args.long_call_minutes or (0.5 if args.quick else 10.0),
                                  clip_dir=clips if clips.is_dir() else None)
    failures.extend(result.pop("failures"))
    return result


_RUNNERS = {"fuzz": _fuzz, "poison": _poison, "long-call": _long_call,
            "signaling": _signaling, "faults": _faults, "long-aiortc": _long_aiortc}


def _progress(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(f"  .. {text}", file=sys.stderr, flush=True)


def run_robustness(args: argparse.Namespace) -> int:
    """Run the chosen sections, print the figures (table or JSON); 1 when a bound is missed."""
    if args.from_json:
        try:
            earlier = json.loads(Path(args.from_json).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"bench robustness: cannot read {args.from_json}: {exc}") from None
        print(format_report(earlier))
        return 1 if earlier.get("failures") else 0
    sections = list(args.sections or SECTIONS)
    if args.long_call_minutes is not None and "long-aiortc" not in sections:
        sections.append("long-aiortc")
    if args.fuzz_inputs is not None and args.fuzz_inputs < 1:
        raise UserError("bench robustness: --fuzz-inputs must be at least 1")
    if ("poison" in sections or "long-call" in sections) and not _speech_dir(args).is_dir():
        raise UserError(f"bench robustness: no eval speech at {_speech_dir(args)}; pass "
                         "--speech DIR or set $VOIP_CODEC_SHARED")
    failures: list[str] = []
    report: dict[str, Any] = {"quick": bool(args.quick)}
    timings: dict[str, float] = {}
    for name in sections:
        start = time.perf_counter()
        report[name] = _RUNNERS[name](args, failures)
        timings[name] = round(time.perf_counter() - start, 1)
        _progress(args, f"{name}: {timings[name]} s")
    report["seconds"] = timings
    report["failures"] = failures
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 1 if failures else 0


# ------------------------------------------------------------------------------- the table
def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _worst(per_phase: dict[str, dict[str, float]], key: str) -> float:
    return max((v[key] for v in per_phase.values()), default=0.0)


def _sample_table(samples: list[dict[str, Any]]) -> bool:
    """Whether the long call's samples carry the per-sample counters (earlier runs: RSS and
    CPU only, printed in one cell)."""
    return bool(samples) and "queue_ms" in samples[0]


def _cell(key: str, value: Any) -> str:
    if key == "samples":  # RSS every 10 s of the long call
        return ", ".join(f"{d['t']:g} s: {d['rss_mb']} MB / {d['cpu_s']} s CPU" for d in value)
    return json.dumps(value)


def _summary(report: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    if "fuzz" in report:
        fuzz = report["fuzz"]
        engines = sorted({r["engine"] for r in fuzz})
        per = max(r["inputs"] for r in fuzz)
        fewer = sorted({f"{r['target']} {r['inputs']:,}" for r in fuzz if r["inputs"] < per})
        rows.append(["fuzzing", f"{len({r['target'] for r in fuzz})} parsers x {per:,} inputs"
                     + (f" ({', '.join(fewer)})" if fewer else "")
                     + f" x {'+'.join(engines)}",
                     f"{sum(r['unexpected'] for r in fuzz)} undocumented exceptions, "
                     f"{sum(r['crashes'] for r in fuzz)} crashes, peak RSS "
                     f"{max(r['peak_rss_mb'] for r in fuzz):.0f} MB", "0 / 0"])
    if "poison" in report:
        rows_p = report["poison"]
        rows.append(["poisoned input (bundled model)",
                     f"{len(rows_p)} conditions (NaN, inf, square, DC, 10 s silence; random/"
                     "zero/one/alternating tokens)",
                     f"state finite {sum(r['state_finite'] for r in rows_p)}/{len(rows_p)}, "
                     f"peak abs(out) {max(r['peak_abs'] for r in rows_p):.2f}, worst STOI delta "
                     f"{min(r['stoi_delta'] for r in rows_p):+.4f}", "finite, <= 1, >= -0.02"])
    for r in report.get("long-call", []):
        rows.append([f"{r['call_seconds'] / 60:g}-min call, {r['codec']} (simulated clock)",
                     f"5% bursty loss, jitter, reordering, {r['outage_seconds']:g} s outage",
                     f"frames {r['input_frames']}/{r['output_frames']}, concealed "
                     f"{r['concealed_fraction']:.1%} ({r['concealed_fraction_outside_outage']:.1%}"
                     f" outside the outage), resync {r['resync_seconds']} s, RSS growth "
                     f"{r['rss_growth_mb']} MB", "exact, < 1 s, < 20 MB"])
    if "signaling" in report:
        s = report["signaling"]
        rows.append(["signaling under load", f"{s['idle_connections']} idle + {s['clients']} "
                     f"churning clients, {sum(v['tries'] for v in s['abuse'].values())} abuse "
                     "attempts", f"/health p99 {s['health_p99_ms']} ms (worst phase)"
                     + (f", server loop stalls <= {_worst(s['loop_ms'], 'stall')} ms, its own "
                        f"work <= {_worst(s['loop_ms'], 'busy')} ms per wake-up"
                        if s.get("loop_ms") else "") + ", pairings "
                     f"{s['pairs_ok']}/{s['pairs_expected']}, room mixing {s['room_mixing']}, "
                     f"abuse rejected as documented "
                     f"{sum(v['ok'] for v in s['abuse'].values())}/"
                     f"{sum(v['tries'] for v in s['abuse'].values())}, server RSS "
                     f"{max(v for k, v in s['server_rss_mb'].items() if not k.startswith('end_')):.0f}"
                     " MB", "< 50 ms, all, 0, all"])
    if "faults" in report:
        f = report["faults"]
        k, o, fast = f["peer_killed"], f["outage"], f["fast_sender"]
        rows.append(["peer killed mid-call", "SIGKILL of one `voip-codec call` process",
                     f"survivor ended after {k.get('survivor_ended_s')} s ({k.get('end')})",
                     "< 3 s"])
        r = f["signaling_restart"]
        rows.append(["signaling restarted mid-call", "server stopped and started again",
                     f"exit {r.get('exit_codes')}, frames received {r.get('frames_received')} "
                     f"of {r.get('input_frames')}", "call goes on"])
        rows.append(["5 s outage (real call)", "every datagram one way dropped",
                     f"resync {o['resync_s']} s, longest output gap {o['max_output_gap_ms']} ms",
                     "< 1 s, no stall"])
        rows.append(["peer sending at 2x real time", f"{fast['seconds']:g} s",
                     f"playout delay <= {fast['max_playout_delay_ms']} ms (bound "
                     f"{fast['max_delay_bound_ms']:g}), {fast['resyncs']} resyncs, "
                     f"{fast['dropped_counted']} frames dropped", "bounded, counted"])
    if "long-aiortc" in report:
        la = report["long-aiortc"]
        rss = (f"RSS {la['rss_start_mb']:.0f} -> {la['rss_after_1min_mb']:.0f} (1 min) -> "
               f"{la['rss_end_mb']:.0f} MB, " if "rss_end_mb" in la else "RSS ")
        more = (f", {la['resyncs']} resyncs, output queue <= {la['output_queue_ms_max']:g} ms, "
                f"drift {la['output_drift_ms']:+g} ms" if "resyncs" in la else "")
        rows.append([f"{la['minutes']:g}-min real aiortc call, {la.get('codec', '')}",
                     f"{la['loss']:.0%} random loss",
                     f"{rss}slope {la['rss_slope_mb_per_min']} MB/min, CPU "
                     f"{la['cpu_percent']}%, concealed {la.get('concealed_fraction', 0):.1%}"
                     f"{more}", "slope < 1 MB/min"])
    return rows


def format_report(report: dict[str, Any]) -> str:
    """The figures as Markdown tables: a summary (what the README shows), then the details."""
    lines: list[str] = _table(["check", "load", "measured", "bound"], _summary(report))
    if "fuzz" in report:
        lines += ["", "Fuzzing (inputs per parser; undocumented = exceptions other than the "
                      "documented error type)", ""]
        lines += _table(
            ["parser", "engine", "inputs", "accepted", "undocumented", "crashes",
             "peak RSS MB", "s"],
            [[r["target"], r["engine"], f"{r['inputs']:,}",
              r["accepted"] if r["engine"] == "mutation" else f"cov {r['coverage']}",
              r["unexpected"], r["crashes"], round(r["peak_rss_mb"]), round(r["seconds"])]
             for r in report["fuzz"]])
    if "poison" in report:
        lines += ["", "State poisoning (bundled model; STOI of the speech after the bad input "
                      "minus a clean run's)", ""]
        lines += _table(
            ["side", "bad input", "s", "state finite", "peak abs(out)", "STOI clean",
             "STOI after", "delta"],
            [[r["side"], r["condition"], r["bad_seconds"], r["state_finite"], r["peak_abs"],
              r["stoi_clean"], r["stoi_after"], f"{r['stoi_delta']:+.4f}"]
             for r in report["poison"]])
    if "long-call" in report:
        lines += ["", "Long call (5% bursty loss, 30 ms mean delay with jitter, 2% reordered, "
                      "one outage in the middle; accelerated clock)", ""]
        lines += _table(
            ["codec", "call s", "outage s", "frames in/out", "concealed", "concealed outside "
             "outage", "resync s", "RSS growth MB", "x real time"],
            [[r["codec"], r["call_seconds"], r["outage_seconds"],
              f"{r['input_frames']}/{r['output_frames']}", r["concealed_fraction"],
              r["concealed_fraction_outside_outage"], r["resync_seconds"],
              r["rss_growth_mb"], r["speed_x_realtime"]] for r in report["long-call"]])
    if "signaling" in report:
        s = report["signaling"]
        lines += ["", f"Signaling under load ({s['idle_connections']} idle connections, "
                      f"{s['clients']} clients x {s['rounds']} rounds in {s['rooms']} rooms)",
                  ""]
        loop = s.get("loop_ms", {})
        lines += _table(["phase", "/health n", "p50 ms", "p95 ms", "p99 ms", "max ms",
                         "loop stall max ms", "server CPU in one stall, max ms",
                         "full GC max ms", "server RSS MB"],
                        [[k, v["n"], v["p50"], v.get("p95", "-"), v["p99"], v["max"],
                          loop.get(k, {}).get("stall", "-"), loop.get(k, {}).get("busy", "-"),
                          loop.get(k, {}).get("gc_full", "-") or "-",
                          round(s["server_rss_mb"].get("end" if k == "closing" else k, 0.0), 1)]
                         for k, v in s["health_ms"].items()])
        lines += ["", f"pairings {s['pairs_ok']}/{s['pairs_expected']}, room mixing "
                      f"{s['room_mixing']}", ""]
        lines += _table(["abuse", "tries", "rejected as documented", "error", "close"],
                        [[k, v["tries"], v["ok"], v["expected_code"], v["expected_close"]]
                         for k, v in s["abuse"].items()])
    for key, title in (("faults", "Faults in real aiortc calls"),
                       ("long-aiortc", "Long real aiortc call")):
        if key in report:
            lines += ["", title, ""]
            lines += _table(["figure", "value"],
                            [[k, _cell(k, v)] for k, v in report[key].items()
                             if k != "samples" or not _sample_table(v)])
    samples = report.get("long-aiortc", {}).get("samples", [])
    if _sample_table(samples):
        lines += ["", "Long real aiortc call, every 10 s (counters since the start; queue: "
                      "decoded audio waiting to be played, now and the most since the last "
                      "sample; drift: output frames x 20 ms minus the wall time)", ""]
        lines += _table(["t s", "RSS MB", "CPU s", "sent", "played", "concealed", "resyncs",
                         "queue ms", "queue max ms", "held frames", "drift ms"],
                        [[d["t"], d["rss_mb"], d["cpu_s"], d["sent"], d["played"],
                          d["concealed"], d["resyncs"], d["queue_ms"], d["queue_max_ms"],
                          d["held_frames"], d["output_drift_ms"]] for d in samples])
    lines += ["", "seconds per section: " + json.dumps(report.get("seconds", {}))]
    fails = report.get("failures", [])
    lines += ["", f"failures: {len(fails)}"] + [f"- {f}" for f in fails]
    return "\n".join(lines).lstrip("\n")
