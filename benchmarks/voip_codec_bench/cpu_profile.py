"""Which CPU a speed figure came from, and where one streaming chunk's time goes.

Speed figures of the same model differ by 1.5-1.8x between machines of the same kind (issue 14:
bf16/int8 on an AMX Xeon vs the machine the README figures came from), so every ``bench speed``
run prints the CPU model, the instruction-set features that decide oneDNN's and fbgemm's kernel
choice, and the capability torch itself dispatches to.

The per-stage profile times one stream of 80 ms chunks with forward hooks on the model's
modules (the streaming path calls each module once per chunk):

* ``front-end convs``: the WavLM convolutional feature extractor (7 strided convs);
* ``positional conv``: the grouped positional convolution;
* ``attention``: the rest of the transformer (norms, QKV, relative-position attention, output
  projection), i.e. the encoder's time minus the three named parts;
* ``encoder FFNs``: the transformer's feed-forward blocks;
* ``compressor``, ``decompressor``: the focal-modulation stacks (the refiner included);
* ``vocoder``: the WaveNeXt decoder;
* ``other``: the quantiser, token packing and everything between the modules.

Hooks add a few microseconds per module call; the stage sum is compared against the unhooked
chunk time of the same run in the report.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voip_codec.codec import kernels
from voip_codec.codec.model import FocalCodec
from voip_codec.codec.precision import Int8Linear

__all__ = ["CpuInfo", "StageProfile", "cpu_info", "format_cpu_info", "format_stage_profile",
           "int8_layer_gbps", "profile_stages", "read_bandwidth_gbps"]

_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f",
          "avx_vnni", "avx2", "fma")
"""The /proc/cpuinfo flags that decide which oneDNN / fbgemm kernels run."""


@dataclass
class CpuInfo:
    """The machine a speed run measured."""

    model: str
    logical_cpus: int
    flags: dict[str, bool]
    torch_capability: str
    """``torch.backends.cpu.get_cpu_capability()``: the vector ISA torch's own kernels use."""
    onednn_max_isa: str
    """``ONEDNN_MAX_CPU_ISA`` if set (it caps oneDNN's kernels, e.g. to turn AMX off)."""
    torch_version: str
    threads: int
    read_gbps: dict[int, float] = field(default_factory=dict)
    """Threads -> GB/s of one streaming read of a buffer larger than the caches
    (:func:`read_bandwidth_gbps`): what a batch-1 step that reads every weight once can reach."""
    layer_gbps: dict[int, float] = field(default_factory=dict)
    """Threads -> GB/s of int8 weights read by the model's own int8 layer at 4 rows, weights
    out of cache (:func:`int8_layer_gbps`): what the int8 products of a step actually reach."""
    own_kernels: str = ""
    """The project's own CPU kernels here (:mod:`voip_codec.codec.kernels`): ``"amx"``,
    ``"avx512-vnni"``, or ``"off (<reason>)"``."""


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """Read the CPU model and its ISA flags (Linux; elsewhere the flags read as unknown/False)."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(),
                                                          platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        capability = "unknown"
    lib = kernels.library()
    own = lib.isa if lib is not None else f"off ({kernels.unavailable_reason()})"
    return CpuInfo(model=model, logical_cpus=os.cpu_count() or 0,
                   flags={f: f in flags for f in _FLAGS}, torch_capability=capability,
                   onednn_max_isa=os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
                   torch_version=torch.__version__, threads=torch.get_num_threads(),
                   own_kernels=own)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """``threads`` torch threads inside the block; the previous count is restored after it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    """The shortest of ``repeats`` timed calls of ``run``, after one untimed call."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def read_bandwidth_gbps(threads: int, megabytes: int = 512, repeats: int = 5) -> float:
    """GB/s of summing a ``megabytes`` float32 buffer with ``threads`` torch threads (best of
    ``repeats``, after one untimed pass). 512 MB is past the last-level cache share of the
    machines measured (a 2-core KVM guest read 64 MB at about 24 GB/s and 256 MB and more at
    11-12 GB/s on one thread), so this is the rate at which a step that reads every weight once
    per chunk can at best go."""
    with _torch_threads(threads):
        buf = torch.ones(megabytes * (1 << 20) // 4)
        return megabytes * (1 << 20) / _best_seconds(buf.sum, repeats) / 1e9


def int8_layer_gbps(threads: int, megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of int8 weights read by :class:`~voip_codec.codec.precision.Int8Linear` (a
    token-path layer: split activations, on the own kernel where it loads, else oneDNN's
    product where the CPU has VNNI/AMX, else fbgemm's) for one 80 ms chunk's 4 rows: best of
    ``repeats`` passes over 1024 -> 4096 layers holding ``megabytes`` of weights together, past
    the cache share, each called once per pass as a step calls it, per-call quantisation
    included. Against :func:`read_bandwidth_gbps` it shows how far the batch-1 products are
    from the read rate. On a 2-core AMX Xeon guest (torch 2.13): the own AMX kernel 10-11 GB/s
    at 1 thread and 19-20 GB/s at 2; oneDNN's split layer 8.4 and 13-14 GB/s; a 512 MB sum
    16.5 and 27-33 GB/s. With 64 MB of layers (a share of the L3) the own kernel reads 29 GB/s
    at 2 threads."""
    with _torch_threads(threads), torch.inference_mode():
        first = Int8Linear.from_float(torch.nn.Linear(1024, 4096), split=True)
        layers = [first] + [copy.deepcopy(first) for _ in range(max(megabytes // 4, 2) - 1)]
        x = torch.randn(1, 4, 1024)

        def step() -> None:  # the untimed call packs each copy
            for layer in layers:
                layer(x)

        return len(layers) * 1024 * 4096 / _best_seconds(step, repeats) / 1e9


def format_cpu_info(c: CpuInfo) -> str:
    """One line: model, CPUs, ISA features present, torch's dispatch level, read bandwidth."""
    have = [f for f, on in c.flags.items() if on]
    isa = f", ONEDNN_MAX_CPU_ISA={c.onednn_max_isa}" if c.onednn_max_isa else ""
    read = "; memory read " + ", ".join(
        f"{gbps:.1f} GB/s at {n} thread{'s' if n > 1 else ''}"
        for n, gbps in sorted(c.read_gbps.items())) if c.read_gbps else ""
    layer = "; int8 layer reads " + ", ".join(
        f"{gbps:.1f} GB/s at {n} thread{'s' if n > 1 else ''}"
        for n, gbps in sorted(c.layer_gbps.items())) if c.layer_gbps else ""
    own = f"; own kernels: {c.own_kernels}" if c.own_kernels else ""
    return (f"cpu: {c.model}, {c.logical_cpus} logical CPUs; ISA: {' '.join(have) or 'none found'}; "
            f"torch {c.torch_version} dispatches {c.torch_capability}{isa}{own}{read}{layer}")


@dataclass
class StageProfile:
    """Per-chunk milliseconds of each stage of one streaming encode + decode."""

    precision: str
    chunks: int
    chunk_ms_p50: float
    """Median chunk time with the hooks in place."""
    stages_ms: dict[str, float] = field(default_factory=dict)
    """Mean milliseconds per chunk of each stage (they add up to the mean chunk time)."""
    chunk_ms_mean: float = 0.0


@contextmanager
def _timed(modules: dict[str, list[torch.nn.Module]],
           totals: dict[str, float]) -> Iterator[None]:
    handles: list[Any] = []
    starts: dict[int, float] = {}

    def pre(key: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, *_: Any) -> None:
            starts[id(module)] = time.perf_counter()
        return hook

    def post(key: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, *_: Any) -> None:
            totals[key] += time.perf_counter() - starts.pop(id(module))
        return hook

    for key, mods in modules.items():
        for m in mods:
            handles.append(m.register_forward_pre_hook(pre(key)))
            handles.append(m.register_forward_hook(post(key)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def profile_stages(model: FocalCodec, sig: torch.Tensor, warmup_chunks: int = 3) -> StageProfile:
    """Stream ``sig`` (``(1, samples)`` at 16 kHz) chunk by chunk with per-stage timers."""
    enc = model.encoder
    transformer: Any = enc.encoder
    mods: dict[str, list[torch.nn.Module]] = {
        "encoder": [enc],
        "front-end convs": list(enc.feature_extractor.layers),
        "positional conv": [transformer.positional_embedding],
        "encoder FFNs": [layer.feed_forward for layer in transformer.layers],
        "compressor": [model.compressor],
        "decompressor": [model.decompressor],
        "vocoder": [model.decoder],
    }
    chunk = model.chunk_size
    n = sig.shape[-1] - sig.shape[-1] % chunk
    es = ds = None
    for i in range(warmup_chunks):
        toks, es = model.encode_step(sig[:, i * chunk:(i + 1) * chunk], es)
        _, ds = model.decode_step(toks, ds)
    totals: dict[str, float] = defaultdict(float)
    times = []
    es = ds = None
    with _timed(mods, totals):
        for i in range(0, n, chunk):
            t0 = time.perf_counter()
            toks, es = model.encode_step(sig[:, i:i + chunk], es)
            _, ds = model.decode_step(toks, ds)
            times.append(time.perf_counter() - t0)
    chunks = len(times)
    ms = {k: v * 1e3 / chunks for k, v in totals.items()}
    named = ms["front-end convs"] + ms["positional conv"] + ms["encoder FFNs"]
    stages = {
        "front-end convs": ms["front-end convs"],
        "positional conv": ms["positional conv"],
        "attention": max(0.0, ms["encoder"] - named),
        "encoder FFNs": ms["encoder FFNs"],
        "compressor": ms["compressor"],
        "decompressor": ms["decompressor"],
        "vocoder": ms["vocoder"],
    }
    mean = float(np.mean(times) * 1e3)
    stages["other"] = max(0.0, mean - sum(stages.values()))
    return StageProfile(precision=model.precision, chunks=chunks,
                        chunk_ms_p50=float(np.percentile(times, 50) * 1e3), stages_ms=stages,
                        chunk_ms_mean=mean)


def format_stage_profile(profiles: list[StageProfile]) -> str:
    """A Markdown table: one column per precision, ms per chunk and share of the chunk."""
    if not profiles:
        return ""
    head = "| stage | " + " | ".join(f"{p.precision} ms (share)" for p in profiles) + " |"
    rows = [head, "|---|" + "---:|" * len(profiles)]
    for stage in profiles[0].stages_ms:
        cells = [f"{p.stages_ms[stage]:.2f} ({100 * p.stages_ms[stage] / p.chunk_ms_mean:.0f}%)"
                 for p in profiles]
        rows.append(f"| {stage} | " + " | ".join(cells) + " |")
    rows.append("| chunk mean (hooked) | " + " | ".join(f"{p.chunk_ms_mean:.2f}"
                                                         for p in profiles) + " |")
    return "\n".join(rows)
