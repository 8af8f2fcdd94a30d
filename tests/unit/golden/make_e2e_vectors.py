"""Known-answer vectors of the end-to-end encryption (voip_codec/transport/secure.py) for the
browser's port (examples/browser/src/secure.js), written to ``tests/unit/golden/e2e_vectors.json``.

From fixed X25519 private keys: both public keys, the shared secret, the keys of each direction
(with and without a pre-shared secret), the SAS, epoch keys, nonces, and datagrams a
:class:`~voip_codec.transport.secure.SecureLink` sends (2- and 1-byte counters, a key epoch
change, a counter wrap). ``tests/unit/test_e2e_vectors.py`` checks that the file is what this
module builds now; ``examples/browser/test/secure.test.mjs`` checks the JS port against it.

Usage: ``python tests/unit/golden/make_e2e_vectors.py`` (only when the format changes on purpose).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from voip_codec.transport.link import LinkBase
from voip_codec.transport.secure import DirectionKeys, E2EKeys, SecureLink, derive_keys

OUT = Path(__file__).resolve().parent / "e2e_vectors.json"

OFFERER_PRIVATE = bytes(range(1, 33))
ANSWERER_PRIVATE = bytes(range(0x80, 0xA0))
PSK = b"correct horse battery staple"
PLAINTEXTS = [b"", b"\x80\x00\x10\x01\x5a\xa5", bytes(range(40))]


class _Tape(LinkBase):
    """A link that keeps what is sent."""

    def __init__(self) -> None:
        super().__init__("tape", 1200)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def _public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _direction(d: DirectionKeys) -> dict[str, Any]:
    return {"base_key": d.base_key.hex(), "nonce_salt": d.nonce_salt.hex(),
            "direction": d.direction, "epoch_keys": [d.epoch_key(e).hex() for e in (0, 1, 7)],
            "nonces": {str(c): d.nonce(c).hex() for c in (0, 1, 65535, 1 << 40)}}


def _keys(k: E2EKeys) -> dict[str, Any]:
    return {"send": _direction(k.send), "receive": _direction(k.receive), "sas": k.sas}


def _datagrams(keys: E2EKeys, counter_bytes: int, rekey_interval: int, first_counter: int,
               count: int) -> dict[str, Any]:
    tape = _Tape()
    link = SecureLink(tape, keys, counter_bytes=counter_bytes, rekey_interval=rekey_interval,
                      first_counter=first_counter)
    plain = [PLAINTEXTS[i % len(PLAINTEXTS)] for i in range(count)]
    for data in plain:
        link.send(data)
    return {"counter_bytes": counter_bytes, "rekey_interval": rekey_interval,
            "first_counter": first_counter, "plaintexts": [p.hex() for p in plain],
            "datagrams": [d.hex() for d in tape.sent]}


def build() -> dict[str, Any]:
    """The vectors as a JSON-ready dict."""
    a_pub, b_pub = _public(OFFERER_PRIVATE), _public(ANSWERER_PRIVATE)
    shared = X25519PrivateKey.from_private_bytes(OFFERER_PRIVATE).exchange(
        X25519PrivateKey.from_private_bytes(ANSWERER_PRIVATE).public_key())
    offerer = derive_keys(shared, a_pub, b_pub, "offerer")
    answerer = derive_keys(shared, a_pub, b_pub, "answerer")
    offerer_psk = derive_keys(shared, a_pub, b_pub, "offerer", PSK)
    return {
        "offerer_private": OFFERER_PRIVATE.hex(), "answerer_private": ANSWERER_PRIVATE.hex(),
        "offerer_public": a_pub.hex(), "answerer_public": b_pub.hex(), "shared": shared.hex(),
        "psk": PSK.hex(),
        "offerer": _keys(offerer), "answerer": _keys(answerer), "offerer_psk": _keys(offerer_psk),
        # offerer -> answerer: 2-byte counters from 0, and from near the 16-bit wrap with a key
        # epoch change inside; answerer -> offerer: 1-byte counters across their wrap
        "streams": [
            dict(_datagrams(offerer, 2, 1 << 24, 0, 4), sender="offerer"),
            dict(_datagrams(offerer, 2, 65536, 65533, 5), sender="offerer"),
            dict(_datagrams(answerer, 1, 300, 254, 4), sender="answerer"),
        ],
    }


def main() -> None:
    """Write the vectors file."""
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
