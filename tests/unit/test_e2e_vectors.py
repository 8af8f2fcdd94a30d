"""The known-answer vectors the browser's encryption is checked against
(tests/unit/golden/e2e_vectors.json, examples/browser/test/secure.test.mjs): the committed file
is what secure.py computes today, and its datagrams open on the other end."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from tests.unit.golden.make_e2e_vectors import OUT, build
from voip_codec.transport.link import CallbackLink
from voip_codec.transport.secure import SecureLink, derive_keys


def test_committed_vectors_are_what_secure_py_computes() -> None:
    assert json.loads(OUT.read_text()) == build()


def test_vector_datagrams_open_with_the_receiving_keys() -> None:
    """The answerer's SecureLink accepts the offerer's vector datagrams in order and gives the
    plaintexts back (so the vectors are real traffic, not just bytes)."""
    vectors = json.loads(OUT.read_text())
    private = X25519PrivateKey.from_private_bytes(bytes.fromhex(vectors["answerer_private"]))
    offerer_public = bytes.fromhex(vectors["offerer_public"])
    shared = private.exchange(X25519PublicKey.from_public_bytes(offerer_public))
    keys = derive_keys(shared, offerer_public, bytes.fromhex(vectors["answerer_public"]),
                       "answerer")
    assert keys.sas == vectors["answerer"]["sas"] == vectors["offerer"]["sas"]
    stream = vectors["streams"][1]
    got: list[bytes] = []
    inner = CallbackLink(lambda data: None)
    link = SecureLink(inner, keys, counter_bytes=stream["counter_bytes"],
                      rekey_interval=stream["rekey_interval"])
    link.set_receiver(got.append)
    for datagram in stream["datagrams"]:  # the first counter (65533) is restored as it is
        inner._receive(bytes.fromhex(datagram))
    assert [g.hex() for g in got] == stream["plaintexts"]
    assert link.stats.forged == 0
