"""The ``.fct`` token file: FocalCodec-Stream tokens of one recording, bit-packed.

Layout (all integers big-endian)::

    offset  size  field
    0       4     magic b"FCST"
    4       1     format version (1)
    5       1     bits per token (1..32; 11, 12 or 16 for the released models)
    6       2     reserved, zero
    8       4     input sample rate of the model (Hz, 16000)
    12      4     output sample rate of the model (Hz, 24000)
    16      4     number of tokens N
    20      8     number of samples of the original signal at the input rate
    28      8     model fingerprint (``FocalCodec.fingerprint()``: config + weight sample)
    36      1     length L of the model id (0..255)
    37      L     model id, UTF-8 (e.g. "lucadellalib/focalcodec_50hz_65k_causal")
    37+L    P     tokens, MSB-first, no padding between tokens, last byte zero-padded:
                  P = ceil(N * bits / 8)
    37+L+P  4     CRC-32 of every byte before it

A reader rejects a wrong magic or version, a truncated or over-long file and a CRC mismatch with
:class:`TokenFileError`; decoding with a model whose bits or fingerprint differ is refused.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bitpack import pack_tokens, unpack_tokens

__all__ = ["MAGIC", "TokenFile", "TokenFileError", "parse_token_file", "read_token_file",
           "write_token_file"]

MAGIC = b"FCST"
VERSION = 1
_FIXED = struct.Struct(">4sBBHIIIQ8sB")


class TokenFileError(ValueError):
    """A token file is malformed, truncated, corrupted or made by another model."""


@dataclass(frozen=True)
class TokenFile:
    """Contents of a token file."""

    tokens: np.ndarray
    """``(N,)`` int64 tokens."""
    bits: int
    input_sample_rate: int
    output_sample_rate: int
    num_samples: int
    """Length of the original signal at the input rate (to trim the decoded tail)."""
    fingerprint: bytes
    model_id: str


def write_token_file(path: str | Path, tf: TokenFile) -> None:
    """Serialise ``tf`` to ``path``."""
    model_id = tf.model_id.encode("utf-8")
    if len(model_id) > 255:
        raise TokenFileError("model id longer than 255 bytes")
    if len(tf.fingerprint) != 8:
        raise TokenFileError("fingerprint must be 8 bytes")
    head = _FIXED.pack(MAGIC, VERSION, tf.bits, 0, tf.input_sample_rate, tf.output_sample_rate,
                       len(tf.tokens), tf.num_samples, tf.fingerprint, len(model_id))
    body = head + model_id + pack_tokens(np.asarray(tf.tokens, dtype=np.int64), tf.bits)
    Path(path).write_bytes(body + struct.pack(">I", zlib.crc32(body)))


def read_token_file(path: str | Path) -> TokenFile:
    """Parse a token file.

    Raises:
        TokenFileError: what is wrong, naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise TokenFileError(f"{p}: no such file")
    return parse_token_file(p.read_bytes(), str(p))


def parse_token_file(data: bytes, name: str = "<bytes>") -> TokenFile:
    """Parse the bytes of a token file (what :func:`read_token_file` does after reading).

    Args:
        data: the whole file.
        name: what to call the file in error messages.

    Raises:
        TokenFileError: what is wrong, naming ``name``. No other exception escapes for any
            input bytes.
    """
    p = name
    if len(data) < 4 or data[:4] != MAGIC:
        raise TokenFileError(f"{p}: not a voip-codec token file (bad magic)")
    if len(data) < _FIXED.size:
        raise TokenFileError(f"{p}: truncated header ({len(data)} bytes)")
    magic, version, bits, _, rate_in, rate_out, n, samples, fp, id_len = _FIXED.unpack_from(data)
    if version != VERSION:
        raise TokenFileError(f"{p}: unsupported token file version {version} (expected "
                             f"{VERSION})")
    if not 1 <= bits <= 32:
        raise TokenFileError(f"{p}: invalid bits per token {bits}")
    start = _FIXED.size + id_len
    payload_len = (n * bits + 7) // 8
    expected = start + payload_len + 4
    if len(data) < expected:
        raise TokenFileError(f"{p}: truncated ({len(data)} bytes, header promises {expected})")
    if len(data) > expected:
        raise TokenFileError(f"{p}: {len(data) - expected} unexpected trailing bytes")
    (crc,) = struct.unpack_from(">I", data, expected - 4)
    if crc != zlib.crc32(data[:expected - 4]):
        raise TokenFileError(f"{p}: checksum mismatch (file corrupted)")
    try:
        model_id = data[_FIXED.size:start].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenFileError(f"{p}: model id is not UTF-8") from exc
    tokens = unpack_tokens(data[start:start + payload_len], bits, n)
    return TokenFile(np.asarray(tokens, dtype=np.int64), bits, rate_in, rate_out, samples, fp,
                     model_id)
