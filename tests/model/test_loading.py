"""Checkpoint resolution and strict loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests._shared import conformance_dir
from voip_codec.codec import FocalCodec, FocalCodecConfig
from voip_codec.codec.config import ConfigError, full_size_config, tiny_config
from voip_codec.codec.loading import CheckpointError, from_pretrained, save_pretrained


@pytest.fixture()
def ckpt(tmp_path: Path, tiny_model: FocalCodec) -> Path:
    return save_pretrained(tiny_model, tmp_path / "ckpt")


def same_weights(a: FocalCodec, b: FocalCodec) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_directory_json_and_stem_sources(ckpt: Path, tiny_model: FocalCodec) -> None:
    assert same_weights(from_pretrained(ckpt), tiny_model)
    # official local layout: <name>.json with <name>.safetensors beside it
    shutil.copy(ckpt / "config.json", ckpt / "mymodel.json")
    shutil.copy(ckpt / "model.safetensors", ckpt / "mymodel.safetensors")
    assert same_weights(from_pretrained(ckpt / "mymodel.json"), tiny_model)
    assert same_weights(from_pretrained(str(ckpt / "mymodel")), tiny_model)


def test_conformance_checkpoint_loads_both_ways() -> None:
    d = conformance_dir()
    a = from_pretrained(d)
    b = from_pretrained(d / "model.json")
    assert same_weights(a, b)
    assert a.num_parameters() == 2_091_522
    assert len(a.state_dict()) == 227


def test_hub_id_from_local_cache(ckpt: Path, tmp_path: Path, tiny_model: FocalCodec,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    snap = cache / "models--lucadellalib--focalcodec_50hz_4k_causal" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    shutil.copy(ckpt / "config.json", snap / "config.json")
    shutil.copy(ckpt / "model.safetensors", snap / "model.safetensors")
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    model = from_pretrained("lucadellalib/focalcodec_50hz_4k_causal")
    assert same_weights(model, tiny_model)
    assert model.model_id == "lucadellalib/focalcodec_50hz_4k_causal"
    assert same_weights(from_pretrained("focalcodec-4k"), tiny_model)  # short name


def test_missing_weights_error_says_where_and_how(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError) as err:
        from_pretrained("lucadellalib/focalcodec_50hz_65k_causal")
    msg = str(err.value)
    assert "empty-cache" in msg and "never downloads" in msg
    assert "voip-codec models pull focalcodec-65k" in msg
    with pytest.raises(CheckpointError, match="huggingface-cli download someone/other"):
        from_pretrained("someone/other")
    with pytest.raises(CheckpointError, match="no FocalCodec checkpoint"):
        from_pretrained(tmp_path / "nothing-here")


def test_config_without_weights(tmp_path: Path) -> None:
    tiny_config().to_json(tmp_path / "m.json")
    with pytest.raises(CheckpointError, match="no weights beside it"):
        from_pretrained(tmp_path / "m.json")


def test_hub_config_omitting_defaults_loads(tmp_path: Path) -> None:
    """Arguments left out of a hub config take the constructor defaults."""
    full = full_size_config(4096).to_dict()
    sparse = json.loads(json.dumps(full))
    for slot in ("encoder", "compressor", "decompressor", "decoder"):
        defaults = FocalCodecConfig().to_dict()[f"{slot}_config"]
        cfg = sparse[f"{slot}_config"]
        for key in list(cfg):
            if cfg[key] == defaults[key] and key != "causal":
                del cfg[key]
    assert len(sparse["encoder_config"]) < 5  # most were defaults
    assert FocalCodecConfig.from_dict(sparse) == FocalCodecConfig.from_dict(full)


def test_unknown_and_noncausal_configs_are_rejected() -> None:
    base = tiny_config().to_dict()
    bad = json.loads(json.dumps(base))
    bad["encoder_config"]["flux_capacitor"] = 1
    with pytest.raises(ConfigError, match="flux_capacitor"):
        FocalCodecConfig.from_dict(bad)
    bad = json.loads(json.dumps(base))
    bad["decoder_name"] = "Vocos"
    with pytest.raises(ConfigError, match="non-causal"):
        FocalCodecConfig.from_dict(bad)
    bad = json.loads(json.dumps(base))
    bad["compressor_config"]["causal"] = False
    with pytest.raises(ConfigError, match="causal"):
        FocalCodecConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="unknown top-level"):
        FocalCodecConfig.from_dict({**base, "extra": {}})


def test_strict_loading_names_the_problem(ckpt: Path) -> None:
    state = load_file(str(ckpt / "model.safetensors"))
    missing = dict(state)
    del missing["encoder.encoder.relative_embedding.weight"]
    save_file(missing, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing key.*relative_embedding"):
        from_pretrained(ckpt)
    extra = dict(state)
    extra["decoder.head.proj.scale"] = torch.zeros(1)
    save_file(extra, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected key.*head.proj.scale"):
        from_pretrained(ckpt)
    shaped = dict(state)
    shaped["decoder.head.proj.bias"] = torch.zeros(7)
    save_file(shaped, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="shape mismatch.*head.proj.bias"):
        from_pretrained(ckpt)


def test_legacy_separate_qkv_is_remapped(ckpt: Path, tiny_model: FocalCodec) -> None:
    state = load_file(str(ckpt / "model.safetensors"))
    legacy = {}
    for k, v in state.items():
        if ".qkv_proj." in k:
            q, kk, vv = v.chunk(3, dim=0)
            for name, part in (("q", q), ("k", kk), ("v", vv)):
                legacy[k.replace("qkv_proj", f"{name}_proj")] = part.clone()
        else:
            legacy[k] = v
    save_file(legacy, str(ckpt / "model.safetensors"))
    assert same_weights(from_pretrained(ckpt), tiny_model)


def test_pickled_state_dict_fallback(ckpt: Path, tiny_model: FocalCodec) -> None:
    state = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(state, ckpt / "model.pt")
    assert same_weights(from_pretrained(ckpt), tiny_model)


# Defects found by `voip-codec bench robustness` fuzzing: each malformed file must raise the
# documented error (CheckpointError / ConfigError), never a bare library exception.
@pytest.mark.parametrize("data", [b"", b"garbage!", (10**12).to_bytes(8, "little") + b"{}",
                                  (4).to_bytes(8, "little") + b"[[[["],
                         ids=["empty", "garbage", "huge-header", "json-array-header"])
def test_malformed_safetensors_is_checkpoint_error(tmp_path: Path, data: bytes) -> None:
    from voip_codec.codec.loading import read_weights

    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        read_weights(path)


@pytest.mark.parametrize("data, match", [
    (b'{"encoder_name": "WavLM"\xff}', "not valid UTF-8 JSON"),
    (b"[" * 100_000, "not valid UTF-8 JSON"),
    (b'{"quantizer_name": {"a": 1}}', "not a known module"),
    (b'{"encoder_name": ["WavLM"]}', "not a known module"),
    (b'{"encoder_config": {"dim": "x"}}', "encoder_config.dim must be an integer"),
    (b'{"encoder_config": {"num_heads": -1}}', "encoder_config.num_heads must be an integer"),
    (b'{"encoder_config": {"causal": 1}}', "encoder_config.causal must be a boolean"),
    (b'{"encoder_config": {"strides": [2, "x"]}}', "encoder_config.strides must be a list of integers"),
    (b'{"decoder_config": {"layerscale_init": "a"}}', "must be a finite number or null"),
    (b'{"encoder_config": {"dropout": Infinity}}', "encoder_config.dropout must be a finite number"),
], ids=["bad-utf8", "deep-nesting", "dict-name", "list-name", "str-int", "negative-int",
        "int-bool", "str-in-tuple", "str-optional-float", "inf-float"])
def test_malformed_config_is_config_error(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=match):
        FocalCodecConfig.from_json(path)


def test_zero_heads_is_config_error() -> None:
    data = tiny_config().to_dict()
    data["encoder_config"]["num_heads"] = 0
    with pytest.raises(ConfigError, match="num_heads and conv_pos_groups must be at least 1"):
        FocalCodecConfig.from_dict(data)


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x80\x02}q\x00.", b"\x80\x02]q\x00.",
                                  b"q\xc4", b"PK\x03\x04garbage"],
                         ids=["empty", "garbage", "bare-pickle-dict", "bare-pickle-list", "bad-opcode",
                              "bad-zip"])
def test_malformed_pt_is_checkpoint_error(tmp_path: Path, data: bytes) -> None:
    # torch's restricted unpickler raises IndexError, KeyError, struct.error, ... on malformed
    # files (found by fuzzing); a legacy .pt that is not a dict of tensors is refused too
    from voip_codec.codec.loading import read_weights

    path = tmp_path / "model.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="not a readable PyTorch state dict"):
        read_weights(path)


def test_pt_with_non_tensor_values_is_checkpoint_error(tmp_path: Path) -> None:
    from voip_codec.codec.loading import read_weights

    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "step": 3}, path)
    with pytest.raises(CheckpointError, match="names -> tensors"):
        read_weights(path)
