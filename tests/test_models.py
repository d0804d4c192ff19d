"""zeroflow.models: adapters, AdaptedViT, create_backbone, the embedded tiny ViT (offline CPU)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.autograd.forward_ad as fwAD
from safetensors.torch import save_file

from zeroflow.errors import ConfigError, WeightsError
from zeroflow.models import (
    PAPER_BACKBONE,
    TINY_WEIGHTS,
    AdaptedViT,
    build_tiny_vit,
    create_backbone,
)
from zeroflow.models.backbone import TINY_VIT_CONFIG
from zeroflow.models.pretrain_tiny import digits_prototype_accuracy
from zeroflow.optim.forward_grad import dual_parameters


def _images(n: int, size: int = TINY_VIT_CONFIG["img_size"], seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _randomise(params, seed: int, std: float = 0.05) -> None:
    """Give adapters non-zero up-projections so that they (and their dropout) matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def tiny() -> AdaptedViT:
    return create_backbone("tiny")


@pytest.fixture
def fresh_tiny() -> AdaptedViT:
    return create_backbone("tiny")


def test_adapter_set_on_vit_b16_has_paper_parameter_count():
    with torch.random.fork_rng(devices=[]):
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    model = AdaptedViT(vit)
    k = model.add_adapter_set()
    assert k == 0 and len(model.adapter_sets[k]) == 12
    assert sum(p.numel() for p in model.adapter_sets[k].parameters()) == 1_189_632
    assert model.embed_dim == 768 and model.image_size == 224


def test_plain_features_match_timm_forward(tiny):
    x = _images(4)
    with torch.no_grad():
        assert torch.equal(tiny.features(x, None), tiny.backbone(x))


def test_fresh_adapter_set_leaves_ptm_features_unchanged(fresh_tiny):
    x = _images(8)
    k = fresh_tiny.add_adapter_set()
    with torch.no_grad():
        ptm = fresh_tiny.features(x, None)
        assert torch.equal(fresh_tiny.features(x, k), ptm)
        fresh_tiny.train()  # dropout active: zero up-projection still gives exactly zero
        assert torch.equal(fresh_tiny.features(x, k), ptm)
    up = fresh_tiny.adapter_sets[k][0].up
    assert not up.weight.any() and not up.bias.any()


def test_backbone_is_frozen_and_stays_in_eval_mode(fresh_tiny):
    k = fresh_tiny.add_adapter_set()
    fresh_tiny.train()
    assert fresh_tiny.training and fresh_tiny.adapter_sets[k].training
    assert not any(m.training for m in fresh_tiny.backbone.modules())
    assert not any(p.requires_grad for p in fresh_tiny.backbone.parameters())
    trainable = {id(p) for p in fresh_tiny.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in fresh_tiny.adapter_sets.parameters()}
    fresh_tiny.eval()
    assert not fresh_tiny.adapter_sets[k].training


def test_adapter_set_follows_backbone_dtype_and_leaves_global_rng_alone(fresh_tiny):
    fresh_tiny.to(torch.float64)
    state = torch.get_rng_state()
    k = fresh_tiny.add_adapter_set(bottleneck=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.dtype == torch.float64 for p in fresh_tiny.adapter_sets[k].parameters())
    assert fresh_tiny.features(_images(2).double(), k).dtype == torch.float64


def test_reseed_controls_dropout_masks(fresh_tiny):
    k = fresh_tiny.add_adapter_set()
    _randomise(fresh_tiny.adapter_sets[k].parameters(), seed=1)
    x = _images(8)
    fresh_tiny.train()
    with torch.no_grad():
        state = torch.get_rng_state()
        fresh_tiny.reseed(7)
        a = fresh_tiny.features(x, k)
        fresh_tiny.reseed(7)
        b = fresh_tiny.features(x, k)
        fresh_tiny.reseed(8)
        c = fresh_tiny.features(x, k)
        assert torch.equal(torch.get_rng_state(), state)  # no global RNG draws
        fresh_tiny.eval()
        d = fresh_tiny.features(x, k)
        fresh_tiny.reseed(9)
        e = fresh_tiny.features(x, k)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4
    assert torch.equal(d, e)  # eval: dropout is the identity
    assert (a - d).abs().max() > 1e-4


def test_forward_ad_tangent_matches_backward(fresh_tiny):
    """The Forward-Grad optimizer's protocol: swap each adapter tensor with a dual tensor."""
    k = fresh_tiny.add_adapter_set()
    params = list(fresh_tiny.adapter_sets[k].parameters())
    _randomise(params, seed=2)
    g = torch.Generator().manual_seed(3)
    tangents = [torch.randn(p.shape, generator=g) for p in params]
    x = _images(6, seed=4)
    weights = torch.randn(fresh_tiny.embed_dim, generator=g)
    fresh_tiny.train()

    def losses():
        f = fresh_tiny.features(x, k)
        return f.sum(), (f * weights).sum()

    fused = [blk.attn.fused_attn for blk in fresh_tiny.backbone.blocks]
    fresh_tiny.reseed(11)
    with torch.no_grad(), fwAD.dual_level():
        with dual_parameters(params, tangents):  # the optimizer's own mechanism
            outs = losses()
        jvps = [fwAD.unpack_dual(o).tangent for o in outs]
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in params)
    assert [blk.attn.fused_attn for blk in fresh_tiny.backbone.blocks] == fused  # restored

    for i, jvp in enumerate(jvps):  # same dropout masks (reseed) in the backward pass
        fresh_tiny.reseed(11)
        grads = torch.autograd.grad(losses()[i], params)
        directional = float(sum((gr * v).sum() for gr, v in zip(grads, tangents)))
        # float32: tolerance relative to the magnitude of the summed terms, not their sum
        scale = float(sum((gr * v).abs().sum() for gr, v in zip(grads, tangents)))
        assert jvp is not None and abs(directional) > 1e-3
        assert abs(float(jvp) - directional) <= 1e-5 * scale, (float(jvp), directional, scale)


def test_features_under_no_grad_match_grad_mode(fresh_tiny):
    k = fresh_tiny.add_adapter_set()
    _randomise(fresh_tiny.adapter_sets[k].parameters(), seed=5)
    x = _images(4)
    for train in (False, True):
        fresh_tiny.train(train)
        fresh_tiny.reseed(3)
        with_grad = fresh_tiny.features(x, k)
        assert with_grad.requires_grad
        fresh_tiny.reseed(3)
        with torch.no_grad():
            without = fresh_tiny.features(x, k)
        assert not without.requires_grad
        assert torch.equal(without, with_grad.detach())


def test_missing_adapter_set_index_raises(tiny):
    with pytest.raises(IndexError, match="add_adapter_set"):
        tiny.features(_images(1), 5)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_path_roundtrip(tmp_path, suffix):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / f"vit_tiny{suffix}"
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = create_backbone("vit_tiny_patch16_224", weights=str(path))
    loaded = model.backbone.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    x = _images(2, size=224)
    with torch.no_grad():
        assert torch.equal(model.features(x, None), vit.eval()(x))


def test_missing_weights_path_raises_weights_error(tmp_path):
    missing = tmp_path / "nope.safetensors"
    for name in ("tiny", "vit_tiny_patch16_224"):
        with pytest.raises(WeightsError, match="nope.safetensors") as info:
            create_backbone(name, weights=missing)
        assert "\n" not in str(info.value) and "weights=PATH" in str(info.value)


def test_offline_without_cache_fails_fast_with_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError, match="could not be downloaded") as info:
        create_backbone(PAPER_BACKBONE)
    message = str(info.value)
    assert "\n" not in message and "weights=PATH" in message and PAPER_BACKBONE in message


def test_offline_with_cached_download_loads_it(tmp_path, monkeypatch):
    """An earlier hub download in the HF cache is used directly, without touching the network."""
    import huggingface_hub.constants as hf_constants

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    repo = tmp_path / "hf" / "models--timm--vit_tiny_patch16_224.augreg_in21k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(vit.state_dict(), str(repo / "snapshots" / "0123abcd" / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    model = create_backbone("vit_tiny_patch16_224.augreg_in21k")
    assert torch.equal(model.backbone.pos_embed, vit.pos_embed)
    assert model.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", ["not_a_backbone", "resnet18", "vit_base_patch16_224.no_such_tag"])
def test_unknown_or_non_vit_name_raises_config_error(name):
    with pytest.raises(ConfigError) as info:
        create_backbone(name)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_tiny_weights_file_is_small_and_loads(tiny):
    assert TINY_WEIGHTS.is_file() and TINY_WEIGHTS.stat().st_size <= 2_000_000
    assert tiny.image_size == 16 and tiny.embed_dim == 64
    assert all(p.dtype == torch.float32 for p in tiny.parameters())
    assert tiny.mean == (0.0, 0.0, 0.0) and tiny.std == (1.0, 1.0, 1.0)
    with torch.no_grad():
        f = tiny.features(_images(64), None)
    assert f.shape == (64, 64) and torch.isfinite(f).all()


def test_pretrained_tiny_beats_random_init_on_digits(tiny):
    pretrained = digits_prototype_accuracy(tiny)
    random_init = digits_prototype_accuracy(AdaptedViT(build_tiny_vit(seed=0)))
    assert pretrained > random_init + 0.2, (pretrained, random_init)
