"""SAESet.from_release: pretrained SAEs through sae_lens's ``SAE.from_pretrained`` (faked)."""

from __future__ import annotations

import re

import pytest
import sae_lens
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.saes import SAESet

D_IN, D_SAE = 16, 40
RELEASE = "gemma-scope-2b-pt-res-canonical"
IDS = {5: "layer_5/width_16k/canonical", 1: "layer_1/width_16k/canonical"}


class FakeHub:
    """Stands in for ``SAE.from_pretrained``: builds a tiny JumpReLU SAE, records each call."""

    def __init__(self, d_sae=None, raises: Exception | None = None, **cfg) -> None:
        self.calls: list[dict] = []
        self.d_sae = d_sae or {}
        self.raises = raises
        self.cfg = cfg

    def __call__(self, release, sae_id, device="cpu", dtype="float32", **kwargs):
        self.calls.append(
            {"release": release, "sae_id": sae_id, "device": device, "dtype": dtype, **kwargs}
        )
        if self.raises is not None:
            raise self.raises
        layer = int(re.match(r"layer_(\d+)/", sae_id).group(1))
        torch.manual_seed(layer)
        cfg = JumpReLUSAEConfig(
            d_in=D_IN,
            d_sae=self.d_sae.get(layer, D_SAE),
            dtype=dtype,
            device=device,
            **self.cfg,
        )
        cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
        sae = JumpReLUSAE(cfg)
        with torch.no_grad():
            sae.W_enc.normal_()
            sae.W_dec.normal_()
        return sae.train()  # from_release must put it in eval mode


@pytest.fixture
def hub(monkeypatch) -> FakeHub:
    fake = FakeHub(d_sae={1: 24})
    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", fake)
    return fake


def test_release_and_ids_passed_per_layer(hub):
    saes = SAESet.from_release(RELEASE, IDS)
    assert [(c["release"], c["sae_id"]) for c in hub.calls] == [
        (RELEASE, IDS[1]),
        (RELEASE, IDS[5]),
    ]
    assert saes.layers == [1, 5]
    assert saes.sources == {1: f"{RELEASE}:{IDS[1]}", 5: f"{RELEASE}:{IDS[5]}"}


def test_each_layer_gets_its_own_sae(hub):
    saes = SAESet.from_release(RELEASE, IDS)
    assert saes.d_sae(1) == 24 and saes.d_sae(5) == D_SAE
    assert saes.saes[1].cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert saes.saes[5].cfg.metadata.hook_name == "blocks.5.hook_resid_post"
    saes.check(n_layers=6, d_model=D_IN)


def test_defaults_are_cpu_float32(hub):
    saes = SAESet.from_release(RELEASE, {1: IDS[1]})
    assert (hub.calls[0]["device"], hub.calls[0]["dtype"]) == ("cpu", "float32")
    assert saes.saes[1].W_enc.dtype == torch.float32


def test_dtype_and_device_are_passed_through(hub):
    """The SAEs come back in the dtype and on the device asked for (meta: no CUDA here)."""
    saes = SAESet.from_release(RELEASE, IDS, device="meta", dtype="bfloat16")
    assert {(c["device"], c["dtype"]) for c in hub.calls} == {("meta", "bfloat16")}
    for sae in saes.saes.values():
        for p in sae.parameters():
            assert p.dtype == torch.bfloat16 and p.device.type == "meta"


def test_layer_keys_become_ints(hub):
    """Layer keys read from a config file may be strings; the set is keyed by int."""
    saes = SAESet.from_release(RELEASE, {"5": IDS[5]})
    assert saes.layers == [5] and 5 in saes.saes and 5 in saes.sources


def test_released_saes_are_frozen_and_in_eval_mode(hub):
    saes = SAESet.from_release(RELEASE, IDS)
    for sae in saes.saes.values():
        assert not sae.training
        assert not any(p.requires_grad for p in sae.parameters())


@pytest.mark.parametrize(
    "error",
    [
        ValueError("Release nope not found in pretrained SAEs directory"),
        KeyError("layer_99/width_16k/canonical"),
        OSError("couldn't connect to huggingface.co"),
    ],
)
def test_loader_errors_become_refusalscope_errors(monkeypatch, error):
    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", FakeHub(raises=error))
    with pytest.raises(RefusalScopeError) as info:
        SAESet.from_release("nope", {3: "layer_3/width_16k/canonical"})
    msg = str(info.value)
    assert "nope:layer_3/width_16k/canonical" in msg and "layer 3" in msg
    assert str(error.args[0]) in msg
    assert info.value.__cause__ is error


def test_error_names_the_failing_layer(monkeypatch):
    """The first layer loads, the second fails: the message names the second."""
    good = FakeHub()

    def flaky(release, sae_id, **kw):
        if sae_id == IDS[5]:
            raise ValueError("no such id")
        return good(release, sae_id, **kw)

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", flaky)
    with pytest.raises(RefusalScopeError, match=rf"{re.escape(IDS[5])} for layer 5: no such id"):
        SAESet.from_release(RELEASE, IDS)
    assert [c["sae_id"] for c in good.calls] == [IDS[1]]


def test_no_ids_is_an_error(hub):
    with pytest.raises(RefusalScopeError, match="no SAEs"):
        SAESet.from_release(RELEASE, {})
    assert hub.calls == []


def test_non_affine_release_sae_is_rejected(monkeypatch):
    monkeypatch.setattr(
        sae_lens.SAE, "from_pretrained", FakeHub(normalize_activations="layer_norm")
    )
    with pytest.raises(RefusalScopeError, match=rf"{RELEASE}:{re.escape(IDS[1])}.*layer_norm"):
        SAESet.from_release(RELEASE, {1: IDS[1]})
