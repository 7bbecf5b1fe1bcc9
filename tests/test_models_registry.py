"""The model layer: one registry of names, one load, one sliding window, weights I/O, one-way imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nucfast
from nucfast import models
from nucfast.models import Model, build_network, load, names, save_weights, sliding_window

PKG = Path(nucfast.__file__).resolve().parent


def test_names_and_tasks():
    seg = names("segmentation")
    for n in ("usenet", "usenet_lite", "usenet_se_resnet50", "attention", "attention_lite", "attention_paper",
              "baseline"):
        assert n in seg
    assert names() == sorted(names())


@pytest.mark.parametrize("name", ["usenet", "attention"])
def test_shipped_models_know_what_inference_needs(name):
    m = load(name)
    assert isinstance(m, Model) and m.name == name and m.task == "segmentation"
    assert m.mpp == 0.25 and m.halo == (128 if name == "usenet" else 160)
    assert m.path is not None and len(m.sha256) == 64
    assert load(name) is m  # loaded once per process
    assert nucfast.load_model(name) is m  # the deprecated alias is the same loader


def test_untrained_and_baseline():
    a = load("usenet", pretrained=False)
    b = load("usenet_lite")
    assert a.path is None and b.path is None and a.net is not b.net
    assert sum(p.numel() for p in a.net.parameters()) == sum(p.numel() for p in b.net.parameters())
    assert load("attention_paper").net.config["width"] == 64
    base = load("baseline")
    assert base.net is None and base.task == "segmentation"
    with pytest.raises(ValueError, match="no network to export"):
        nucfast.engines.load_model("baseline")


def test_unknown_name_is_one_error_listing_the_names():
    with pytest.raises(ValueError, match=r"unknown model 'nope': expected one of .*usenet") as e:
        load("nope")
    msg = str(e.value)
    assert all(n in msg for n in names())
    with pytest.raises(ValueError, match="unknown model 'nope': expected one of"):
        nucfast.slide.segmenters.get_segmenter("nope")


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "x.svs", "-o", "OUT", "--model", "nope"],
        ["export-onnx", "--model", "nope", "-o", "x.onnx"],
        ["evaluate", "--model", "nope", "--data", "."],
    ],
)
def test_every_subcommand_gives_the_same_unknown_model_error(argv, tmp_path, capsys):
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("x.", str(tmp_path / "x.")) for a in argv]
    if argv[0] == "segment":
        (tmp_path / "x.svs").write_bytes(b"")
    from nucfast.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:  # subcommands that validate in argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc not in (0, None)
    assert re.search(r"unknown (segmentation )?model 'nope': expected one of", err), err


def test_weights_round_trip_and_metadata(tmp_path):
    net = build_network("usenet", {"arch": "lite"})
    save_weights(tmp_path / "w.safetensors", net, metadata={"kind": "usenet", "config": net.config})
    m = load(tmp_path / "w.safetensors")
    assert m.kind == "usenet" and m.name == "usenet"
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(m.net(x), net.half().float().eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["usenet", "attention", "pathgan"])
def test_shipped_weights_load_exactly_without_random_init(name):
    """A weights file's network is built on the meta device uninitialised and takes the file's tensors
    (``assign=True``): every tensor equals the file's, on the CPU, trainable; pathgan, whose meta build
    differs (no spectral norm there), falls back to build-and-load with the same result."""
    from nucfast.models._weights import load_weights

    m = load(name)
    sd, _ = load_weights(models.WEIGHTS_DIR / models.spec(name).weights)
    got = m.net.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v.float() if v.is_floating_point() else v), k
    assert all(p.device.type == "cpu" and p.requires_grad for p in m.net.parameters())


def test_loading_a_model_does_not_import_dynamo():
    """Nothing on the path import nucfast -> load the default model pulls in torch._dynamo (a second of
    imports; meta-device ``normal_`` used to, through its Python decomposition)."""
    code = "import sys, nucfast.models as m; m.load('usenet'); print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", out


def test_absurd_configuration_is_refused_before_allocating(tmp_path):
    cfg = {"arch": "lite", "widths": [8192, 8192, 8192, 8192], "stem_width": 8192}
    with pytest.raises(ValueError, match="parameters .*refused"):
        build_network("usenet", cfg)
    # and through a weights file whose metadata asks for it
    small = build_network("usenet", {"arch": "lite"})
    save_weights(tmp_path / "big.safetensors", small, metadata={"kind": "usenet", "config": cfg})
    with pytest.raises(ValueError, match="refused"):
        load(tmp_path / "big.safetensors")


def test_damaged_weights_file_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read weights file"):
        load(p)
    with pytest.raises(ValueError, match="no pickles"):
        (tmp_path / "w.pt").write_bytes(b"x")
        load(tmp_path / "w.pt")


def test_sliding_window_equals_whole_image_for_a_local_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3,
                                                                                                  padding=1))
    x = torch.rand(3, 150, 97, dtype=torch.float64)
    net = net.double()
    with torch.no_grad():
        whole = net(x[None])[0]
        tiled = sliding_window(net, x, tile=48, overlap=8)
    torch.testing.assert_close(tiled, whole)
    with pytest.raises(ValueError, match=r"tile must be at least 24 px"):
        sliding_window(net, x, tile=23, overlap=8)  # (tile=17 would run 150 x 97 windows of 17 px)


def test_sliding_window_keeps_a_strided_network_on_its_grid():
    """A stride-4 network (pool, conv, upsample) is translation-equivariant by multiples of 4 only: windows
    starting on the 4-px grid reproduce the whole image exactly; windows off the grid would not."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.AvgPool2d(4), torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Upsample(scale_factor=4)
    ).double()
    x = torch.rand(3, 150, 98, dtype=torch.float64)
    with torch.no_grad():
        whole = sliding_window(net, x, tile=256, multiple=4)  # one window (padded to 152 x 100)
        tiled = sliding_window(net, x, tile=48, overlap=8, multiple=4)
        off_grid = net(x[None, :, 2:50, 2:50])[0]  # a window starting at (2, 2)
    torch.testing.assert_close(tiled, whole)
    assert (off_grid[:, 12:36, 12:36] - whole[:, 14:38, 14:38]).abs().max() > 1e-3


def test_segment_image_baseline_equals_the_baseline():
    from nucfast.baseline import haematoxylin_baseline
    from nucfast.synthetic import SyntheticSlide

    rgb, _ = SyntheticSlide((256, 256), seed=1, tissue_fraction=1.0).render(0, 0, 256, 256)
    got = nucfast.segment_image(rgb, "baseline")
    assert got.max() > 5
    np.testing.assert_array_equal(got, haematoxylin_baseline(rgb))


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                yield node, "relative"
            elif node.module and node.module.startswith("nucfast"):
                yield node, node.module
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("nucfast"):
                    yield node, a.name


def _resolve(path: Path, node) -> str:
    if not node.level:
        return node.module
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    base = parts[: len(parts) - node.level]
    return ".".join(base + ([node.module] if node.module else []))


def test_one_way_imports():
    """Nothing outside train/ and the CLI imports nucfast.train; engines never imports the facade
    (_segment, _evaluate, slide); models never imports engines, slide or the facade."""
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        tree = ast.parse(path.read_text())
        for node, _ in _imports(tree):
            target = _resolve(path, node)
            if not rel.startswith("train/") and rel != "cli.py":
                assert not target.startswith("nucfast.train"), f"{rel} imports {target}"
            if rel.startswith("engines/"):
                assert not re.match(r"nucfast\.(_segment|_evaluate|slide|cli)", target), (
                    f"{rel} imports {target}"
                )
            if rel.startswith("models/"):
                assert not re.match(r"nucfast\.(engines|slide|_segment|_evaluate|cli|train)", target), (
                    f"{rel} imports {target}"
                )


def test_import_nucfast_is_light():
    """``import nucfast`` pulls in neither scipy/scikit-image nor the training code."""
    code = (
        "import sys, nucfast; "
        "print(sorted(m for m in ('scipy', 'skimage', 'nucfast.train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_model_registry_is_the_only_name_table():
    assert set(nucfast.engines.MODELS) == {n for n in names() if n != "baseline"}
    assert set(nucfast.slide.segmenters.SEGMENTERS) == set(names("segmentation"))
    assert models.spec("usenet").weights == "usenet_lite.safetensors"


def _function_local_nucfast_imports():
    out = []
    for path in sorted(PKG.rglob("*.py")):
        src = path.read_text().splitlines()
        tree = ast.parse("\n".join(src))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                mod = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
                if isinstance(node, ast.ImportFrom) and (node.level or mod.startswith("nucfast")):
                    out.append((path.relative_to(PKG).as_posix(), node.lineno, src))
                elif isinstance(node, ast.Import) and any(a.name.startswith("nucfast") for a in node.names):
                    out.append((path.relative_to(PKG).as_posix(), node.lineno, src))
    return out


def test_few_function_local_imports_each_commented():
    """Imports of nucfast modules inside functions: at most 10, each for an optional heavy dependency and
    saying so in a comment (on the line or the line above)."""
    found = _function_local_nucfast_imports()
    assert len(found) <= 10, [f"{p}:{n}" for p, n, _ in found]
    for p, n, src in found:
        assert "#" in src[n - 1] or src[n - 2].strip().startswith("#") or '"""' in src[n - 2], f"{p}:{n}"
