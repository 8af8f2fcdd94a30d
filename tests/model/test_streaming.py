"""Streaming behaviour of our implementation on a seeded random tiny model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from voip_codec.codec import FocalCodec
from voip_codec.codec.layers import modules_as
from voip_codec.codec.streaming import StreamingDecoder, StreamingEncoder
from voip_codec.codec.wavlm import _Layer


def speechlike(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    env = 0.5 + 0.5 * torch.sin(2 * np.pi * 3 * t)
    return (0.3 * env * torch.sin(2 * np.pi * 180 * t) + 0.05 * torch.randn(n, generator=g))


@pytest.fixture(scope="module")
def sig() -> torch.Tensor:
    return speechlike(1280 * 40)  # 3.2 s = 160 frames, past the 64-frame window


def run_stream(model: FocalCodec, sig: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    enc, dec = StreamingEncoder(model), StreamingDecoder(model)
    toks, audio = [], []
    for i in range(0, len(sig), block):
        t = enc.push(sig[i:i + block])
        toks.append(t)
        audio.append(dec.push(t))
    t = enc.flush()
    toks.append(t)
    audio.append(dec.push(t))
    audio.append(dec.flush())
    return torch.cat(toks, 1), torch.cat(audio, 1)


def test_streaming_equals_offline(tiny_model: FocalCodec, sig: torch.Tensor) -> None:
    offline_toks = tiny_model.sig_to_toks(sig[None])
    offline_audio = tiny_model.toks_to_sig(offline_toks)
    toks, audio = run_stream(tiny_model, sig, 1280)
    assert torch.equal(toks, offline_toks)
    torch.testing.assert_close(audio, offline_audio, atol=1e-4, rtol=1e-4)
    assert audio.shape[1] == 480 * toks.shape[1]


@pytest.mark.parametrize("block", [160, 320, 441, 960, 1280, 2000, 3840], ids=lambda b: f"{b}smp")
def test_any_block_size_gives_the_same_tokens(tiny_model: FocalCodec, sig: torch.Tensor,
                                              block: int) -> None:
    ref, ref_audio = run_stream(tiny_model, sig, 1280)
    toks, audio = run_stream(tiny_model, sig, block)
    assert torch.equal(toks, ref)
    torch.testing.assert_close(audio, ref_audio, atol=1e-5, rtol=1e-5)


def test_features_match_offline_within_tolerance(tiny_model: FocalCodec, sig: torch.Tensor) -> None:
    taps_off: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        tiny_model.encode_step(sig[None], None, taps_off)
        state = None
        feats = []
        for i in range(0, len(sig), 1280):
            taps: dict[str, torch.Tensor] = {}
            _, state = tiny_model.encode_step(sig[None, i:i + 1280], state, taps)
            feats.append(taps["feats"])
    torch.testing.assert_close(torch.cat(feats, 1), taps_off["feats"], atol=1e-4, rtol=1e-4)


def test_clone_mid_stream_continues_identically(tiny_model: FocalCodec, sig: torch.Tensor) -> None:
    enc, dec = StreamingEncoder(tiny_model), StreamingDecoder(tiny_model)
    half = 1280 * 20 + 300  # mid-chunk, so the pending buffer is cloned too
    dec.push(enc.push(sig[:half]))
    enc2, dec2 = enc.clone(), dec.clone()
    a_toks = enc.push(sig[half:])
    a_audio = dec.push(a_toks)
    # mutate the original further; the clone must not notice
    enc.push(torch.zeros(5000))
    b_toks = enc2.push(sig[half:])
    b_audio = dec2.push(b_toks)
    assert torch.equal(a_toks, b_toks)
    assert torch.equal(a_audio, b_audio)


def test_two_streams_in_one_process_do_not_interfere(tiny_model: FocalCodec) -> None:
    x, y = speechlike(1280 * 12, seed=1), speechlike(1280 * 12, seed=2)
    alone_x, _ = run_stream(tiny_model, x, 1280)
    alone_y, _ = run_stream(tiny_model, y, 1280)
    ex, ey = StreamingEncoder(tiny_model), StreamingEncoder(tiny_model)
    tx, ty = [], []
    for i in range(0, len(x), 640):  # interleave the two streams
        tx.append(ex.push(x[i:i + 640]))
        ty.append(ey.push(y[i:i + 640]))
    assert torch.equal(torch.cat(tx, 1), alone_x)
    assert torch.equal(torch.cat(ty, 1), alone_y)


def test_reset_starts_a_new_stream(tiny_model: FocalCodec, sig: torch.Tensor) -> None:
    enc = StreamingEncoder(tiny_model)
    first = enc.push(sig[:12800])
    enc.push(sig[12800:20000])
    enc.reset()
    assert enc.pending_samples == 0
    assert torch.equal(enc.push(sig[:12800]), first)


def test_batched_streams_equal_single_streams(tiny_model: FocalCodec) -> None:
    x, y = speechlike(1280 * 8, seed=3), speechlike(1280 * 8, seed=4)
    batch = StreamingEncoder(tiny_model, batch_size=2)
    toks = batch.push(torch.stack([x, y]))
    assert torch.equal(toks[0:1], run_stream(tiny_model, x, 1280)[0])
    assert torch.equal(toks[1:2], run_stream(tiny_model, y, 1280)[0])


def test_decoder_accepts_any_token_count(tiny_model: FocalCodec, sig: torch.Tensor) -> None:
    toks = tiny_model.sig_to_toks(sig[None])[0]
    dec = StreamingDecoder(tiny_model)
    outs = []
    sizes = [1, 2, 3, 5, 7, 11]
    i = 0
    for k in sizes * 20:
        if i >= len(toks):
            break
        out = dec.push(toks[i:i + k])
        assert out.shape[1] % (4 * 480) == 0  # whole 4-token blocks only
        outs.append(out)
        i += k
    outs.append(dec.flush())
    audio = torch.cat(outs, 1)
    torch.testing.assert_close(audio, tiny_model.toks_to_sig(toks[None]), atol=1e-5, rtol=1e-5)
    assert dec.state.tokens_in == len(toks)


def test_state_is_explicit_and_small(tiny_model: FocalCodec, sig: torch.Tensor) -> None:
    enc = StreamingEncoder(tiny_model)
    enc.push(sig)
    st = enc.state
    assert st.model is not None
    # K/V cache holds window - block = 60 frames per layer, no more
    assert all(k.shape[2] == 60 for k in st.model.encoder.keys)
    assert int(st.model.encoder.frames[0]) == len(sig) // 320
    assert int(st.model.encoder.cached[0]) == 60
    # no module buffers carry stream state: only the quantizer's constant bit weights
    assert [n for n, _ in tiny_model.named_buffers()] == ["quantizer.weights"]


def test_bad_inputs_raise_clear_errors(tiny_model: FocalCodec) -> None:
    enc, dec = StreamingEncoder(tiny_model), StreamingDecoder(tiny_model)
    with pytest.raises(ValueError, match="pcm must be"):
        enc.push(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="tokens must lie in"):
        dec.push(torch.tensor([4096]))
    with pytest.raises(ValueError, match="tokens must lie in"):
        tiny_model.toks_to_codes(torch.tensor([[-1]]))


def test_codec_contract_properties(tiny_model: FocalCodec) -> None:
    assert tiny_model.sample_rate_input == 16000
    assert tiny_model.sample_rate_output == 24000
    assert tiny_model.chunk_size == 1280
    assert tiny_model.latency_ms == 80.0
    assert tiny_model.bitrate == 600.0
    assert tiny_model.causal


def test_causality(tiny_model: FocalCodec, sig: torch.Tensor) -> None:
    """Changing the future never changes earlier chunks' tokens."""
    a = tiny_model.sig_to_toks(sig[None])
    tampered = sig.clone()
    tampered[1280 * 20:] = 0.5 * torch.randn(len(sig) - 1280 * 20)
    b = tiny_model.sig_to_toks(tampered[None])
    assert torch.equal(a[:, :80], b[:, :80])
    assert not torch.equal(a[:, 80:], b[:, 80:])


def test_stream_batch_join_and_leave_match_single_streams(tiny_model: FocalCodec) -> None:
    from voip_codec.codec.batch import StreamBatch

    sigs = {name: speechlike(1280 * 10, seed=10 + i) for i, name in enumerate("abc")}
    alone = {k: run_stream(tiny_model, v, 1280) for k, v in sigs.items()}
    batch = StreamBatch(tiny_model)
    got_t: dict[str, list] = {k: [] for k in sigs}
    got_a: dict[str, list] = {k: [] for k in sigs}
    # a joins at tick 0, b at tick 3, c at tick 5; b leaves after tick 7
    for tick in range(10):
        active = [k for k, start in (("a", 0), ("b", 3), ("c", 5)) if tick >= start]
        if tick > 7:
            active.remove("b")
            batch.leave("b")
        pcm = {}
        for k in active:
            start = {"a": 0, "b": 3, "c": 5}[k]
            i = tick - start
            pcm[k] = sigs[k][i * 1280:(i + 1) * 1280]
        toks, _ = batch.step(pcm=pcm)
        _, audio = batch.step(tokens=toks)
        for k in active:
            got_t[k].append(toks[k])
            got_a[k].append(audio[k])
    assert batch.encoding == ["a", "c"]
    for k in sigs:
        t = np.concatenate(got_t[k])
        ref_t = alone[k][0][0, :len(t)].numpy()
        assert (t == ref_t).all(), k
        a = np.concatenate(got_a[k])
        np.testing.assert_allclose(a, alone[k][1][0, :len(a)].numpy(), atol=1e-4, rtol=1e-4)


def test_stream_batch_rejects_missing_streams(tiny_model: FocalCodec) -> None:
    from voip_codec.codec.batch import StreamBatch

    batch = StreamBatch(tiny_model)
    batch.step(pcm={"a": np.zeros(1280, dtype=np.float32)})
    with pytest.raises(ValueError, match="supplied nothing"):
        batch.step(pcm={"b": np.zeros(1280, dtype=np.float32)})
    with pytest.raises(ValueError, match="shape"):
        batch.step(pcm={"a": np.zeros(100, dtype=np.float32)})


@torch.inference_mode()
@pytest.mark.parametrize(("bad", "stands_for"), [(float("nan"), 0.0), (float("inf"), 1.0),
                                                 (float("-inf"), -1.0), (7.5, 1.0)])
def test_non_finite_chunk_does_not_poison_the_stream(tiny_model: FocalCodec, bad: float,
                                                     stands_for: float) -> None:
    """One 80 ms chunk of NaN/inf mid-stream: the state stays finite and every later token is
    the token of a stream whose chunk held silence / full scale instead (measured before this
    guard on the default model: 0 % of the next 10 s of tokens matched a clean run)."""
    g = torch.Generator().manual_seed(3)
    x = 0.1 * torch.randn(1, 1280 * 40, generator=g)
    poisoned, reference = x.clone(), x.clone()
    poisoned[:, 1280 * 10:1280 * 11] = bad
    reference[:, 1280 * 10:1280 * 11] = stands_for

    def run(sig: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        state, toks = None, []
        for i in range(0, sig.shape[1], 1280):
            t, state = tiny_model.encode_step(sig[:, i:i + 1280], state)
            toks.append(t)
        assert state is not None
        tensors: list[torch.Tensor] = []

        def keep(v: torch.Tensor) -> torch.Tensor:
            tensors.append(v)
            return v

        state._map(keep)
        return torch.cat(toks, 1), tensors

    toks, tensors = run(poisoned)
    ref, _ = run(reference)
    assert all(bool(torch.isfinite(v.float()).all()) for v in tensors if v.is_floating_point())
    assert torch.equal(toks, ref)
    audio = tiny_model.decode_step(toks)[0]
    assert bool(torch.isfinite(audio).all()) and float(audio.abs().max()) <= 1.0


def test_attention_mask_gives_finite_gradients(tiny_model: FocalCodec) -> None:
    """The window mask is folded into the bias once per call (gate * -inf) only without
    gradients: in training, masked_fill keeps the masked scores' gradients at 0, where the
    product's would be NaN (a training run stopped at step 1 with a non-finite loss)."""
    model = copy.deepcopy(tiny_model)
    sig = speechlike(1280 * 12, seed=4)[None]  # 48 frames: causal blocks mask keys
    feats, _ = model.encoder(sig)
    feats.square().mean().backward()
    grads = {n: p.grad for n, p in model.encoder.named_parameters() if p.grad is not None}
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads.values())
    table_grad = model.encoder.encoder.relative_embedding.weight.grad
    assert table_grad is not None and float(table_grad.abs().sum()) > 0


def test_negative_gate_constant_keeps_the_window_mask(tiny_model: FocalCodec, sig: torch.Tensor
                                                      ) -> None:
    """A gate constant below 0 can make the gate negative, which would turn a folded -inf into
    +inf; such layers mask after the product, and streaming still equals offline."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for layer in modules_as(model.encoder.encoder.layers, _Layer):
            layer.attention.gru_rel_pos_const.fill_(-6.0)
    with torch.inference_mode():
        offline = model.sig_to_toks(sig[None])
        toks, _ = run_stream(model, sig, 1280)
        feats, _ = model.encoder(sig[None, :1280 * 8])
    assert torch.equal(toks, offline)
    assert bool(torch.isfinite(feats).all())
    assert not torch.equal(offline, tiny_model.sig_to_toks(sig[None]))  # the gates did change
