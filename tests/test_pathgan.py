"""PathologyGAN: the networks (paper's 224-px and the CPU-sized configuration), the loss, the tile API
(``sample_tiles``, ``embed_tiles``, resampling), the Fréchet distance, the trainers (smoke + resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import MONUSEG, write_tiny_dataset
from safetensors.torch import load_file

import nucfast
from nucfast import models
from nucfast._tiles import _windows, frechet_distance, tile_features
from nucfast.models import Model, save_weights
from nucfast.models.pathgan import SelfAttention, build_pathgan, n_parameters
from nucfast.train.pathgan import (
    EncoderConfig,
    PathganConfig,
    augment,
    build_tile_bank,
    gradient_penalty,
    heldout_names,
    organ_of,
    ragan_losses,
    train_pathgan,
    train_pathgan_encoder,
)

# parameter counts of the paper's networks (REFERENCE.md section 7) and of the CPU-sized ones
PAPER_PARAMS = {"generator": 27_763_424, "discriminator": 28_849_226, "encoder": 36_747_929}
CPU_PARAMS = {"generator": 3_152_720, "discriminator": 851_538, "encoder": 1_938_457}


@pytest.mark.parametrize("arch,counts", [("paper", PAPER_PARAMS), ("cpu", CPU_PARAMS)])
def test_parameter_counts_on_meta(arch, counts):
    for part, n in counts.items():
        with torch.device("meta"):
            net = build_pathgan(arch, part)
        assert n_parameters(net) == n, part


def test_registry_kinds_and_names():
    assert models.kinds()["pathgan-generator"].task == "tile-generator"
    assert models.kinds()["pathgan-encoder"].task == "tile-embedding"
    assert "pathgan" in models.names("tile-generator") and "pathgan_paper" in models.names("tile-generator")
    assert "pathgan_encoder" in models.names("tile-embedding")
    assert "pathgan" not in models.names("segmentation")
    # build_network counts on the meta device first, then builds
    assert n_parameters(models.build_network("pathgan-encoder", {"arch": "cpu"})) == CPU_PARAMS["encoder"]
    with pytest.raises(ValueError, match="size 60 must be start 7"):
        models.build_network("pathgan-generator", {"arch": "cpu", "size": 60})


def test_paper_configuration_shapes_and_one_training_step():
    """The paper's 224-px networks: shapes of G, D, E and one RaGAN + GP step of D and of G."""
    torch.manual_seed(0)
    G, D, E = (build_pathgan("paper", p) for p in ("generator", "discriminator", "encoder"))
    assert G.n_styles == 6 and isinstance(G.att[2], SelfAttention)  # attention at 28x28
    opt = torch.optim.Adam([*G.parameters(), *D.parameters()], lr=1e-4, betas=(0.5, 0.999))
    z, x_r = torch.randn(2, 200), torch.rand(2, 3, 224, 224)
    ws, _ = G.styles(z, mix_prob=1.0)
    x_f = G.synthesis(ws)
    assert x_f.shape == (2, 3, 224, 224) and 0 <= x_f.min() and x_f.max() <= 1
    assert E(x_f.detach()).shape == (2, 200)
    l_d, _ = ragan_losses(D(x_r), D(x_f.detach()))
    gp = gradient_penalty(D, x_r, x_f.detach(), torch.rand(2, 1, 1, 1))
    before = [p.detach().clone() for p in D.parameters()]
    (l_d + 0.65 * gp).backward()
    assert all(p.grad is None for p in G.parameters())
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, D.parameters(), strict=True))
    opt.zero_grad(set_to_none=True)
    _, l_g = ragan_losses(D(x_r).detach(), D(x_f))
    l_g.backward()
    assert all(p.grad is not None for p in G.mapping.parameters())
    assert torch.isfinite(l_d) and torch.isfinite(l_g)


def test_ragan_losses_match_the_formula():
    c_r, c_f = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.3, -1.0, 0.1])
    l_d, l_g = ragan_losses(c_r, c_f)
    sp = torch.nn.functional.softplus  # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    d_r, d_f = c_r - c_f.mean(), c_f - c_r.mean()
    torch.testing.assert_close(l_d, sp(-d_r).mean() + sp(d_f).mean())
    torch.testing.assert_close(l_g, sp(-d_f).mean() + sp(d_r).mean())


def test_gradient_penalty_of_a_linear_critic():
    """C(x) = <a, x>: the gradient is a everywhere, so the penalty is (|a| - 1)^2 for every sample."""
    a = torch.randn(3, 4, 4, dtype=torch.float64)

    def critic(x):
        return (x * a).flatten(1).sum(1)

    x_r, x_f = torch.rand(5, 3, 4, 4, dtype=torch.float64), torch.rand(5, 3, 4, 4, dtype=torch.float64)
    gp = gradient_penalty(critic, x_r, x_f, torch.rand(5, 1, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(gp, (a.norm() - 1) ** 2)


def test_style_mixing_cuts_the_slots():
    torch.manual_seed(0)
    G = build_pathgan("cpu", "generator")
    ws, mixed = G.styles(torch.randn(3, 200), mix_prob=1.0)
    assert mixed and ws.shape == (3, G.n_styles, 200)
    first = ws[:, 0]
    same = [bool(torch.equal(ws[:, k], first)) for k in range(G.n_styles)]
    cut = same.index(False)
    assert (
        all(same[:cut])
        and not any(same[cut:])
        and all(torch.equal(ws[:, k], ws[:, cut]) for k in range(cut, 4))
    )
    ws0, mixed0 = G.styles(torch.randn(3, 200), mix_prob=0.0)
    assert not mixed0 and all(torch.equal(ws0[:, k], ws0[:, 0]) for k in range(G.n_styles))


def test_spectral_norm_and_attention_init():
    torch.manual_seed(0)
    D = build_pathgan("cpu", "discriminator")
    x = torch.rand(4, 3, 56, 56)
    for _ in range(30):  # power iterations run in training mode
        D(x)
    w = D.dense1.weight  # the normalised weight
    assert abs(float(torch.linalg.matrix_norm(w.detach(), ord=2)) - 1) < 0.05
    att = SelfAttention(16)
    y = torch.rand(2, 16, 7, 7)
    torch.testing.assert_close(att(y), y)  # gamma = 0: the identity at initialisation


def test_generator_noise_and_determinism():
    torch.manual_seed(0)
    G = build_pathgan("cpu", "generator").eval()
    for m in G.modules():  # noise weights start at 0: give them a value so the noise matters
        if hasattr(m, "weight") and isinstance(m.weight, torch.nn.Parameter) and m.weight.ndim == 1:
            torch.nn.init.constant_(m.weight, 0.5)
    w = G.mapping(torch.randn(2, 200))
    noise = [torch.randn(s) for s in G.noise_shapes(2)]
    with torch.no_grad():
        a, b, c = G.synthesis(w, noise=noise), G.synthesis(w, noise=noise), G.synthesis(w)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-4


def _tiny_models(tmp_path):
    """Untrained CPU-sized G and E as weights files (the shipped ones may not exist in every checkout)."""
    torch.manual_seed(0)
    G, E = build_pathgan("cpu", "generator"), build_pathgan("cpu", "encoder")
    gp, ep = tmp_path / "g.safetensors", tmp_path / "e.safetensors"
    save_weights(gp, G, metadata={"kind": "pathgan-generator", "config": G.config, "mpp": 0.5})
    save_weights(ep, E, metadata={"kind": "pathgan-encoder", "config": E.config, "mpp": 0.5})
    return gp, ep


def test_sample_tiles_and_embed_tiles(tmp_path):
    gp, ep = _tiny_models(tmp_path)
    tiles, mpp = nucfast.sample_tiles(5, seed=3, model=gp)
    assert tiles.shape == (5, 56, 56, 3) and tiles.dtype == np.uint8 and mpp == 0.5
    np.testing.assert_array_equal(tiles, nucfast.sample_tiles(5, seed=3, model=gp)[0])
    assert not np.array_equal(tiles, nucfast.sample_tiles(5, seed=4, model=gp)[0])
    z = nucfast.embed_tiles(tiles, mpp=0.5, model=ep)
    assert z.shape == (5, 200) and z.dtype == np.float32
    net = models.load(ep).net
    with torch.no_grad():
        ref = net(torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255).numpy()
    np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-5)
    # the same tissue at 0.25 um/px (2x the pixels) is resampled to the encoder's 0.5 um/px
    big = tiles.repeat(2, 1).repeat(2, 2)
    np.testing.assert_allclose(nucfast.embed_tiles(big, mpp=0.25, model=ep), ref, rtol=1e-4, atol=1e-4)
    # a list of tiles of different sizes; larger = mean over windows, smaller = reflect-padded
    two = np.concatenate([tiles[0], tiles[1]], axis=1)  # 56 x 112: two windows
    got = nucfast.embed_tiles([two, tiles[2][:30, :40]], mpp=0.5, model=ep)
    np.testing.assert_allclose(got[0], ref[:2].mean(0), rtol=1e-4, atol=1e-4)
    assert got.shape == (2, 200) and np.isfinite(got).all()
    assert nucfast.embed_tiles(np.zeros((0, 56, 56, 3), np.uint8), mpp=0.5, model=ep).shape == (0, 200)


def test_windows_cover_and_skip_glass():
    x = torch.ones(3, 100, 130)  # all glass
    x[:, :, :56] = 0.5  # tissue on the left
    w, tf = _windows(x, 56)
    assert w.shape == (6, 3, 56, 56)  # 2 x 3 windows on an even grid
    assert tf[0] == 1.0 and tf[2] == 0.0
    w1, _ = _windows(torch.rand(3, 1, 5), 56)  # a 1-px side: replicate
    assert w1.shape == (1, 3, 56, 56)


def test_tile_api_errors(tmp_path):
    gp, ep = _tiny_models(tmp_path)
    t = np.zeros((2, 56, 56, 3), np.uint8)
    with pytest.raises(ValueError, match="mpp must be a positive"):
        nucfast.embed_tiles(t, mpp=0, model=ep)
    with pytest.raises(ValueError, match=r"tiles\[0\] must be a uint8"):
        nucfast.embed_tiles(t.astype(np.float32), mpp=0.5, model=ep)
    with pytest.raises(ValueError, match="got one image"):
        nucfast.embed_tiles(t[0], mpp=0.5, model=ep)
    with pytest.raises(ValueError, match="is a tile-generator model, expected a tile-embedding"):
        nucfast.embed_tiles(t, mpp=0.5, model=gp)
    with pytest.raises(ValueError, match="is a segmentation model, expected a tile-generator"):
        nucfast.sample_tiles(2, model="usenet_lite")
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        nucfast.sample_tiles(-1, model=gp)


def test_frechet_distance_against_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 5)), rng.normal(0.3, 1.5, size=(150, 5)) @ rng.normal(size=(5, 5))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * scipy.linalg.sqrtm(sa @ sb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(a, b[:, :3])


def test_tile_features_against_skimage():
    from skimage.color import rgb2hed

    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, size=(3, 20, 24, 3), dtype=np.uint8)
    f = tile_features(tiles)
    assert f.shape == (3, len(nucfast._tiles.TILE_FEATURE_NAMES))
    np.testing.assert_allclose(f[:, :3], tiles.mean((1, 2)) / 255, rtol=1e-5)
    hed = np.stack([rgb2hed(t) for t in tiles])
    np.testing.assert_allclose(f[:, 6:8], np.clip(hed, 0, None)[..., :2].mean((1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(f[:, -8:].sum(1), 1, rtol=1e-6)


def test_augment_is_rotations_and_flips():
    rng = np.random.default_rng(0)
    t = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    x = augment(t, rng)
    orig = torch.from_numpy(t).permute(0, 3, 1, 2).float() / 255
    for i in range(2):
        cands = [torch.rot90(o, k, (1, 2)) for o in (orig[i], orig[i].flip(-1)) for k in range(4)]
        assert any(torch.equal(x[i], c) for c in cands)


def test_organs_and_heldout_split():
    assert organ_of("TCGA-A7-A13E-01Z-00-DX1") == "breast" and organ_of("img0") == "unknown"
    if MONUSEG.is_dir():
        names = sorted(p.name[:-9] for p in MONUSEG.glob("*_inst.tif"))
        held = heldout_names(names)
        assert len(held) == 7 and len({organ_of(n) for n in held}) == 7


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("pgdata"), size=224, n=30, count=3)


def test_tile_bank_from_images_and_a_real_slide(tiny_data, tmp_path):
    bank = build_tile_bank(str(tiny_data), None, size=56, mpp=0.5)
    # 224 px at 0.25 um/px = 112 px at 0.5: tiles of 56 at stride 28 -> 3 x 3 per image
    assert bank.tiles.shape == (27, 56, 56, 3) and bank.heldout.sum() == 9  # one image of "unknown" held out
    slides = MONUSEG.parent / "slides"
    if slides.is_dir():
        d = tmp_path / "one"
        d.mkdir()
        (d / "CMU-1-Small-Region.svs").symlink_to(slides / "CMU-1-Small-Region.svs")
        b = build_tile_bank(None, str(d), size=56, mpp=0.5, max_per_slide=40)
        assert len(b.tiles) == 40 and b.heldout.sum() == 10
        assert (nucfast._tiles.tissue_fraction(b.tiles) >= 0.7).all()


def _gan_cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), steps=4, batch=2, g_every=2, val_every=2, n_eval=8,
                ckpt_every=1, log_every=1)  # fmt: skip
    base.update(kw)
    return PathganConfig(**base)


def test_train_pathgan_resume_is_identical_and_encoder(tiny_data, tmp_path):
    a = train_pathgan(_gan_cfg(tiny_data, tmp_path / "a"))
    assert a["step"] == 4 and len(a["history"]) == 2
    b1 = train_pathgan(_gan_cfg(tiny_data, tmp_path / "b"), stop_at_step=3)
    assert b1["step"] == 3
    b2 = train_pathgan(_gan_cfg(tiny_data, tmp_path / "b"))
    assert b2["step"] == 4
    ta, tb = (
        load_file(str(tmp_path / "a" / "last.safetensors")),
        load_file(str(tmp_path / "b" / "last.safetensors")),
    )
    assert ta.keys() == tb.keys() and any(k.startswith("optim.") for k in ta)
    for k in ta:
        if k != "rng.torch":
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0, msg=k)
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" for r in log)
    with pytest.raises(ValueError, match="resume: --batch=4"):
        train_pathgan(_gan_cfg(tiny_data, tmp_path / "b", batch=4, steps=6))
    c = train_pathgan(_gan_cfg(tiny_data, tmp_path / "c", steps=1, init=str(tmp_path / "a")), stop_at_step=1)
    log_c = json.loads((tmp_path / "c" / "log.jsonl").read_text().splitlines()[0])
    assert c["step"] == 1 and log_c["init"]["generator"].endswith("best.safetensors")
    g = models.load(tmp_path / "a" / "best.safetensors")
    assert g.kind == "pathgan-generator" and g.mpp == 0.5 and g.meta["step"] in (2, 4)
    # the encoder on that generator's images
    ecfg = EncoderConfig(data="", out=str(tmp_path / "e"), generator=str(tmp_path / "a" / "best.safetensors"),
                         steps=3, batch=2, val_every=3, n_eval=4, ckpt_every=1, log_every=1)  # fmt: skip
    r = train_pathgan_encoder(ecfg)
    assert r["step"] == 3 and np.isfinite(r["best_mse"])
    e = models.load(tmp_path / "e" / "best.safetensors")
    assert e.task == "tile-embedding"
    assert nucfast.embed_tiles(nucfast.sample_tiles(2, model=g)[0], mpp=0.5, model=e).shape == (2, 200)


def test_model_wraps_an_in_memory_generator():
    G = build_pathgan("cpu", "generator")
    tiles, mpp = nucfast.sample_tiles(1, model=Model(G, {"mpp": 0.5}, "pathgan-generator"))
    assert tiles.shape == (1, 56, 56, 3) and mpp == 0.5


def test_sample_tiles_cli_writes_grid_and_strip(tmp_path):
    from PIL import Image

    from nucfast.cli import main

    gp, _ = _tiny_models(tmp_path)
    g, s = tmp_path / "grid.png", tmp_path / "strip.png"
    rc = main(["sample-tiles", str(g), "--model", str(gp), "-n", "6", "--cols", "3", "--zoom", "1",
               "--strip", str(s), "--steps", "5", "--pairs", "2"])  # fmt: skip
    assert rc == 0
    assert np.asarray(Image.open(g)).shape == (2 * 58 + 2, 3 * 58 + 2, 3)
    assert np.asarray(Image.open(s)).shape == (2 * 58 + 2, 5 * 58 + 2, 3)
    strips = nucfast._tiles.interpolate_latents(4, model=gp, mapping=False)
    assert strips.shape == (1, 4, 56, 56, 3)


def test_onnx_export_of_encoder_and_generator():
    import onnxruntime as ort

    from nucfast.engines import export_tile_onnx
    from nucfast.models.pathgan import without_spectral_norm

    torch.manual_seed(0)
    E, G = build_pathgan("cpu", "encoder").eval(), build_pathgan("cpu", "generator").eval()
    x, w = torch.rand(3, 3, 56, 56), torch.randn(2, 200)
    with torch.no_grad():
        e_ref, g_ref = E(x).numpy(), G.synthesis(w).numpy()  # noise weights are 0 at init: deterministic
        torch.testing.assert_close(without_spectral_norm(G).synthesis(w), G.synthesis(w))
    se = ort.InferenceSession(export_tile_onnx(E), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(se.run(None, {"image": x.numpy()})[0], e_ref, atol=1e-4)
    sg = ort.InferenceSession(export_tile_onnx(G), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sg.run(None, {"w": w.numpy()})[0], g_ref, atol=1e-4)
    assert G.synthesis(w).shape == (2, 3, 56, 56)  # the original keeps its spectral norm
    with pytest.raises(ValueError, match="exports PathologyGAN encoders / generators"):
        export_tile_onnx(build_pathgan("cpu", "discriminator"))


def test_fused_upsampling_is_nearest_then_conv():
    """The fused 3x3 stride-2 transposed conv equals nearest x2 upsampling followed by a 3x3 convolution
    (with the transposed-conv weight flipped): every output pixel sees the same number of taps."""
    from nucfast.models.pathgan import FusedUpConv

    torch.manual_seed(0)
    u = FusedUpConv(4, 3).eval()
    x = torch.rand(2, 4, 7, 9)
    with torch.no_grad():
        w = u.conv.weight
        up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        ref = torch.nn.functional.conv2d(up, w.flip(2, 3).transpose(0, 1), u.conv.bias, padding=1)
        torch.testing.assert_close(u(x), ref, rtol=1e-5, atol=1e-6)


def test_export_onnx_cli_routes_tile_models(tmp_path, capsys):
    from nucfast.cli import main

    _, ep = _tiny_models(tmp_path)
    rc = main(["export-onnx", "--model", str(ep), "-o", str(tmp_path / "e.onnx"), "--no-validate"])
    assert rc == 0 and (tmp_path / "e.onnx").stat().st_size > 1000


@pytest.mark.skipif(not MONUSEG.is_dir(), reason="MoNuSeg data not available")
def test_tissue_characteristics_follow_the_annotated_nuclei():
    """Per-tile nucleus density from the USE-Net mosaics tracks the annotated nuclei of the same tiles."""
    from conftest import load_monuseg_labels

    from nucfast.datasets import read_rgb
    from nucfast.train.pathgan_eval import TC_FEATURES, tissue_characteristics

    name = "TCGA-A7-A13E-01Z-00-DX1"
    rgb, lab = read_rgb(MONUSEG / f"{name}.png"), load_monuseg_labels(name)
    boxes = [(r, c) for r in range(0, 1000 - 112, 224) for c in range(0, 1000 - 112, 224)]
    # tiles at 0.5 um/px: 112 px of the 0.25 um/px image, area-averaged 2x
    tiles = np.stack([rgb[r : r + 112, c : c + 112].reshape(56, 2, 56, 2, 3).mean((1, 3)) for r, c in boxes])
    tc = tissue_characteristics(tiles.round().astype(np.uint8), 0.5)
    assert tc.shape == (len(boxes), len(TC_FEATURES))
    gt = np.array([len(np.unique(lab[r : r + 112, c : c + 112])) - 1 for r, c in boxes]) / (28 * 28) * 1000
    assert np.corrcoef(tc[:, 0], gt)[0, 1] > 0.5
    assert 0.3 < tc[:, 0].mean() / gt.mean() < 1.5
    blank = tissue_characteristics(np.full((2, 56, 56, 3), 245, np.uint8), 0.5)
    np.testing.assert_array_equal(blank, 0)


def test_shipped_pathgan_models_load_through_the_registry():
    g, d = models.load("pathgan"), models.load("pathgan_discriminator")
    assert g.task == "tile-generator" and g.mpp == 0.5 and g.meta["step"] > 0 and len(g.sha256) == 64
    assert d.task == "tile-discriminator"
    tiles, mpp = nucfast.sample_tiles(8, seed=0)
    assert tiles.shape == (8, 56, 56, 3) and mpp == 0.5
    # generated tiles are tissue-coloured: mostly not glass, haematoxylin / eosin present
    assert nucfast._tiles.tissue_fraction(tiles).mean() > 0.7
    e = models.load("pathgan_encoder")
    assert e.task == "tile-embedding" and e.meta["generator_sha256"] == g.sha256
    z = nucfast.embed_tiles(tiles, mpp=0.5)
    assert z.shape == (8, 200) and np.isfinite(z).all()
