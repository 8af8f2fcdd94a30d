"""The project's own CPU kernels for batch-1 streaming steps (x86-64, AVX-512 VNNI / AMX).

At batch 1 a streaming step reads every weight once per 80 ms chunk and does little arithmetic
with it, and each layer costs a dozen operator calls around its product. oneDNN's and fbgemm's
batch-1 int8 products read the weights at about half the memory's rate on a 2-core AMX Xeon
guest (13-14 GB/s at 2 threads against a 27-33 GB/s read), and oneDNN's depthwise convolution
spends 50-75 us on 4 frames of 1024 channels. ``kernels.cpp`` holds:

* ``vc_linear``: one int8 layer in one call: quantise the activations (per tensor, uint8; the
  token path's split rule or fbgemm's plain rule), stream the packed weights through AMX tiles
  (or AVX-512 VNNI) with software prefetch, scale back, merge the split rows, add the bias.
  Its outputs equal oneDNN's split product and fbgemm's plain product (same roundings, same
  float order; fbgemm rounds a few activations of long inputs the other way).
* ``vc_q4_linear``: the same for 4-bit weights with one scale per output column and group of
  inputs (int4 mode's decoder side): two weights per byte, unpacked by a table lookup into
  VNNI registers; half the bytes of the int8 product for the same activations.
* ``vc_half_linear``: fp16 weights, fp32 activations and sums (the layers int8 mode keeps in
  floating point), equal to fbgemm's fp16 product.
* ``vc_depthwise``, ``vc_grouped``: fp32 depthwise and grouped stride-1 convolutions of
  channels-last sequences (the focal levels, the vocoder, the positional convolution).
* ``vc_bf16x3_windows``: a strided convolution as three bf16 AMX products with fp32 sums (the
  int8 front end: about 5e-6 relative error against fp32's 1e-6, at bf16 tile speed).

The int8, 4-bit and depthwise kernels can end with the exact GELU on their outputs (erf to
1.5e-7; about 1e-7 |x| from torch's), which saves an operator call per GELU: at batch 1 those
cost 25-40 us each inside a streaming step.

The source ships with the package and is compiled on first use with the system's C++ compiler
(``$CXX``, else ``g++``/``c++``/``clang++``; about a second, no torch headers) into
``$VOIP_CODEC_CACHE`` or ``~/.cache/voip-codec/kernels/<hash>/`` (the temporary folder where
that cannot be written), then loaded with ctypes. It links OpenMP by soname, so it shares the
libgomp that torch loaded and its thread pool; each call takes ``torch.get_num_threads()``
threads.

Where they cannot run, :func:`library` returns None and the model keeps torch's kernels, with the
reason in :func:`unavailable_reason`: not x86-64 Linux, a CPU without AVX-512 VNNI, no compiler, a
failed build, a torch whose OpenMP is not libgomp, or ``VOIP_CODEC_KERNELS=0`` in the environment.
The AMX kernels also need the CPU's AMX (int8 and bf16) and the Linux kernel's permission to use
its tiles; without them the int8 product runs on VNNI and the front end on oneDNN's fp32
convolution.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..cache import cache_home

__all__ = ["KernelLibrary", "cpu_flags", "library", "unavailable_reason"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.cpp")
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-mavx512f", "-mavx512bw",
         "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mavx512bf16", "-mf16c", "-mamx-tile",
         "-mamx-int8", "-mamx-bf16", "-mfma")
"""Compiler flags: the instruction sets are chosen at run time (AMX only where the CPU and the
kernel allow it), the code is never run on a CPU without AVX-512 VNNI."""

ENV_SWITCH = "VOIP_CODEC_KERNELS"
"""``0`` turns the kernels off (torch's kernels run instead)."""

_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES: dict[str, tuple[type | None, list[type]]] = {
    "vc_amx_permit": (_I32, []),
    "vc_packed_bytes": (_I64, [_I64, _I64]),
    "vc_pack": (None, [_P, _I64, _I64, _P, _P]),
    "vc_linear": (_I32, [_P, _I64, _I64, _I32, _P, _P, _P, _P, _P, _I64, _I32, _I32, _I32]),
    "vc_q4_bytes": (_I64, [_I64, _I64, _I64]),
    "vc_q4_pack": (None, [_P, _I64, _I64, _I64, _P]),
    "vc_q4_linear": (_I32, [_P, _I64, _I64, _I32, _I64, _P, _P, _P, _P, _P, _I64, _I32,
                             _I32]),
    "vc_half_bytes": (_I64, [_I64, _I64]),
    "vc_half_pack": (None, [_P, _I64, _I64, _P]),
    "vc_half_linear": (None, [_P, _I64, _I64, _P, _P, _P, _I64, _I32]),
    "vc_depthwise_bytes": (_I64, [_I64, _I64]),
    "vc_depthwise_pack": (None, [_P, _I64, _I64, _P]),
    "vc_depthwise": (None, [_P, _I64, _I64, _I64, _P, _I64, _P, _P, _I32, _I32]),
    "vc_grouped_bytes": (_I64, [_I64, _I64, _I64, _I64, _I32]),
    "vc_grouped_pack": (None, [_P, _I64, _I64, _I64, _I64, _I32, _P]),
    "vc_grouped": (None, [_P, _I64, _I64, _I64, _P, _I64, _I64, _I64, _I32, _P, _P, _I32]),
    "vc_bf16x3_bytes": (_I64, [_I64, _I64]),
    "vc_bf16x3_pack": (None, [_P, _I64, _I64, _P]),
    "vc_bf16x3_windows": (None, [_P, _I64, _I64, _I64, _I64, _I64, _P, _P, _P, _I64, _I32]),
}
"""Result and argument types of every function ``kernels.cpp`` exports."""

_reason: list[str] = []


def _ptr(t: Tensor | None) -> int | None:
    """The data pointer of an optional tensor (NULL for None)."""
    return None if t is None else t.data_ptr()


def _rows_and_out(x: Tensor, n_out: int) -> tuple[Tensor, int, int, Tensor]:
    """A product's input ``(..., K)`` made contiguous, ``K``, its row count and the empty
    ``(..., n_out)`` output."""
    x = x.contiguous()
    k = x.shape[-1]
    return x, k, x.numel() // k if k else 0, torch.empty(*x.shape[:-1], n_out)


@dataclass(frozen=True)
class KernelLibrary:
    """The loaded kernel and what this CPU lets it use."""

    lib: ctypes.CDLL
    amx: bool
    """AMX tiles (else AVX-512 VNNI)."""

    @property
    def isa(self) -> str:
        return "amx" if self.amx else "avx512-vnni"

    def pack(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """int8 weight rows ``(N, K)`` -> (packed weight bytes, int32 column sums ``(N,)``)."""
        w = rows.detach().to(torch.int8).contiguous()
        n, k = w.shape
        packed = torch.empty(int(self.lib.vc_packed_bytes(n, k)), dtype=torch.int8)
        colsum = torch.empty(n, dtype=torch.int32)
        self.lib.vc_pack(w.data_ptr(), n, k, packed.data_ptr(), colsum.data_ptr())
        return packed, colsum

    def linear(self, x: Tensor, split: bool, packed: Tensor, colsum: Tensor, scale: Tensor,
               bias: Tensor | None, amx: bool | None = None, gelu: bool = False
               ) -> Tensor | None:
        """``x`` ``(..., K)`` float32 through the int8 product (then the exact GELU, about 1e-7
        from torch's, with ``gelu``); None when ``x`` holds NaN/inf (the caller falls back to
        the float product, which passes them on)."""
        x, k, rows, out = _rows_and_out(x, colsum.shape[0])
        rc = self.lib.vc_linear(
            x.data_ptr(), rows, k, int(split), packed.data_ptr(), colsum.data_ptr(),
            scale.data_ptr(), _ptr(bias), out.data_ptr(), out.shape[-1],
            torch.get_num_threads(), int(self.amx if amx is None else amx and self.amx),
            int(gelu))
        return None if rc else out

    def pack_q4(self, values: Tensor, scale: Tensor, group: int) -> tuple[Tensor, Tensor, Tensor]:
        """4-bit weight rows ``(N, K)`` (int8 values in [-8, 7]) with their ``(N, ceil(K /
        group))`` fp32 scales -> (packed nibbles, scales packed per block of 16 columns, fp32
        column terms ``sum_g scale_g * sum(values in g)`` for the activation zero point)."""
        q = values.detach().to(torch.int8).contiguous()
        n, k = q.shape
        packed = torch.empty(int(self.lib.vc_q4_bytes(n, k, group)), dtype=torch.uint8)
        self.lib.vc_q4_pack(q.data_ptr(), n, k, group, packed.data_ptr())
        groups = -(-k // group)
        padded = torch.zeros(-(-n // 16) * 16, groups)
        padded[:n] = scale.float()
        blocks = padded.view(-1, 16, groups).transpose(1, 2).contiguous()
        sums = torch.nn.functional.pad(q.float(), (0, groups * group - k)).view(n, groups, group)
        colterm = (sums.sum(-1) * scale.float()).sum(-1).contiguous()
        return packed, blocks, colterm

    def q4_linear(self, x: Tensor, split: bool, group: int, packed: Tensor, scales: Tensor,
                  colterm: Tensor, bias: Tensor | None, gelu: bool = False) -> Tensor | None:
        """``x`` ``(..., K)`` float32 through the 4-bit product (:meth:`pack_q4`'s weights;
        then GELU as in :meth:`linear`); None when ``x`` holds NaN/inf."""
        x, k, rows, out = _rows_and_out(x, colterm.shape[0])
        rc = self.lib.vc_q4_linear(
            x.data_ptr(), rows, k, int(split), group, packed.data_ptr(), scales.data_ptr(),
            colterm.data_ptr(), _ptr(bias), out.data_ptr(), out.shape[-1], torch.get_num_threads(),
            int(gelu))
        return None if rc else out

    def pack_half(self, rows: Tensor) -> Tensor:
        """fp32 weight rows ``(N, K)`` as fp16 (round to nearest) packed for :meth:`half_linear`."""
        w = rows.detach().float().contiguous()
        n, k = w.shape
        packed = torch.empty(int(self.lib.vc_half_bytes(n, k)) // 2, dtype=torch.int16)
        self.lib.vc_half_pack(w.data_ptr(), n, k, packed.data_ptr())
        return packed

    def half_linear(self, x: Tensor, packed: Tensor, n_out: int, bias: Tensor | None) -> Tensor:
        """``x`` ``(..., K)`` float32 times fp16 weights (:meth:`pack_half`), fp32 sums."""
        x, k, rows, out = _rows_and_out(x, n_out)
        self.lib.vc_half_linear(x.data_ptr(), rows, k, packed.data_ptr(), _ptr(bias),
                                out.data_ptr(), n_out, torch.get_num_threads())
        return out

    def pack_grouped(self, weight: Tensor, groups: int, half: bool = False) -> Tensor:
        """A Conv1d weight ``(c_out, c_in / groups, kernel)`` packed for :meth:`grouped`, in
        fp32 or (``half``) fp16 (round to nearest)."""
        w = weight.detach().float().contiguous()
        c_out, cin_g, k = w.shape
        size = int(self.lib.vc_grouped_bytes(c_out, cin_g, k, groups, int(half)))
        packed = torch.empty(size // 2, dtype=torch.int16) if half else torch.empty(size // 4)
        self.lib.vc_grouped_pack(w.data_ptr(), c_out, cin_g, k, groups, int(half),
                                 packed.data_ptr())
        return packed

    def grouped(self, extended: Tensor, packed: Tensor, shape: tuple[int, int, int], groups: int,
                bias: Tensor | None) -> Tensor:
        """Grouped stride-1 convolution of ``extended`` ``(batch, length, c_in)`` float32 with a
        weight of ``shape`` ``(c_out, c_in / groups, kernel)`` (:meth:`pack_grouped`; fp16
        when ``packed`` is int16), fp32 sums: ``(batch, length - kernel + 1, c_out)``."""
        x = extended.contiguous()
        b, length, c_in = x.shape
        c_out, _, k = shape
        out = torch.empty(b, max(length - k + 1, 0), c_out)
        self.lib.vc_grouped(x.data_ptr(), b, length, c_in, packed.data_ptr(), k, groups, c_out,
                            int(packed.dtype == torch.int16),
                            _ptr(bias), out.data_ptr(),
                            torch.get_num_threads())
        return out

    def pack_bf16x3(self, weight: Tensor) -> Tensor:
        """A Conv1d weight ``(c_out, c_in, kernel)`` as window-order rows, packed in bf16 high
        and low parts for :meth:`bf16x3_conv` (AMX only)."""
        w = weight.detach().float().permute(0, 2, 1).reshape(weight.shape[0], -1).contiguous()
        n, k = w.shape
        packed = torch.empty(int(self.lib.vc_bf16x3_bytes(n, k)) // 2, dtype=torch.int16)
        self.lib.vc_bf16x3_pack(w.data_ptr(), n, k, packed.data_ptr())
        return packed

    def bf16x3_conv(self, extended: Tensor, packed: Tensor, shape: tuple[int, int, int],
                    stride: int, bias: Tensor | None) -> Tensor:
        """Dense strided convolution of ``extended`` ``(batch, length, c_in)`` float32 with a
        weight of ``shape`` ``(c_out, c_in, kernel)`` (:meth:`pack_bf16x3`), in three bf16
        AMX products with fp32 sums: ``(batch, (length - kernel) // stride + 1, c_out)``."""
        x = extended.contiguous()
        b, length, c_in = x.shape
        c_out, _, k = shape
        out = torch.empty(b, max((length - k) // stride + 1, 0) if length >= k else 0, c_out)
        self.lib.vc_bf16x3_windows(x.data_ptr(), b, length, c_in, k, stride, packed.data_ptr(),
                                   _ptr(bias), out.data_ptr(),
                                   c_out, torch.get_num_threads())
        return out

    def pack_depthwise(self, weight: Tensor) -> Tensor:
        """A depthwise Conv1d weight ``(channels, 1, kernel)`` packed for :meth:`depthwise`."""
        w = weight.detach().float().contiguous()
        c, _, k = w.shape
        taps = torch.empty(int(self.lib.vc_depthwise_bytes(c, k)) // 4)
        self.lib.vc_depthwise_pack(w.data_ptr(), c, k, taps.data_ptr())
        return taps

    def depthwise(self, extended: Tensor, taps: Tensor, kernel: int, bias: Tensor | None,
                  gelu: bool = False) -> Tensor:
        """Depthwise stride-1 convolution of ``extended`` ``(batch, length, channels)`` float32
        with ``taps`` (:meth:`pack_depthwise`): ``(batch, length - kernel + 1, channels)``,
        then GELU as in :meth:`linear` with ``gelu``."""
        x = extended.contiguous()
        b, length, c = x.shape
        out = torch.empty(b, max(length - kernel + 1, 0), c)
        self.lib.vc_depthwise(x.data_ptr(), b, length, c, taps.data_ptr(), kernel,
                              _ptr(bias), out.data_ptr(), torch.get_num_threads(), int(gelu))
        return out


def unavailable_reason() -> str | None:
    """Why :func:`library` returned None (None when it loaded or was not tried yet)."""
    return _reason[0] if _reason else None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _compiler() -> str | None:
    env = os.environ.get("CXX")
    if env:
        return shutil.which(env)
    return next((p for c in ("g++", "c++", "clang++") if (p := shutil.which(c))), None)


def _cache_dir() -> Path:
    override = os.environ.get("VOIP_CODEC_CACHE")
    return (Path(override) if override else cache_home()) / "kernels"


def _build(cxx: str) -> Path:
    """The compiled library for this source, flags and compiler (built once, atomically)."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                             timeout=60).stdout.splitlines()[:1]
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join((cxx, *FLAGS, *version)).encode())
    name = key.hexdigest()[:16]
    folder = _cache_dir() / name
    target = folder / "libvoipcodec_kernels.so"
    if target.exists():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable cache (a read-only home): this user's temporary folder
        folder = Path(tempfile.gettempdir()) / f"voip-codec-kernels-{os.getuid()}" / name
        target = folder / target.name
        if target.exists():
            return target
        folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        built = Path(tmp) / target.name
        proc = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", str(built)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["no output"]
            first = next((line for line in lines if "error" in line), lines[-1])
            raise RuntimeError(f"{Path(cxx).name} failed: {first.strip()}")
        os.replace(built, target)
    return target


def _gomp_files() -> set[str]:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in maps.splitlines()
            if "libgomp" in line or "libiomp" in line or "libomp" in line}


@functools.lru_cache(maxsize=1)
def library() -> KernelLibrary | None:
    """The kernel for this process, built and loaded on first call; None where it cannot run
    (see :func:`unavailable_reason`)."""
    def off(reason: str) -> None:
        _reason[:] = [reason]
        log.info("own CPU kernels off: %s", reason)

    if os.environ.get(ENV_SWITCH, "1").strip() in ("0", "off", "false", "no"):
        off(f"{ENV_SWITCH}=0")
        return None
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        off(f"needs x86-64 Linux, not {platform.system()} {platform.machine()}")
        return None
    flags = cpu_flags()
    if "avx512_vnni" not in flags or "avx512bw" not in flags:
        off("the CPU has no AVX-512 VNNI")
        return None
    cxx = _compiler()
    if cxx is None:
        off("no C++ compiler (set CXX, or install g++)")
        return None
    before = _gomp_files()
    try:
        path = _build(cxx)
        lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        off(f"build failed: {exc}")
        return None
    if before and _gomp_files() != before:
        # a second OpenMP runtime would run its own thread pool beside torch's
        off(f"torch's OpenMP runtime is not the libgomp the kernel links ({sorted(before)})")
        return None
    for name, (result, arguments) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype = result
        function.argtypes = arguments
    amx = (all(f in flags for f in ("amx_tile", "amx_int8", "amx_bf16"))
           and bool(lib.vc_amx_permit()))
    _reason.clear()
    return KernelLibrary(lib, amx)
