"""The ``nucfast`` command line and the Dask cohort runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile

from nucfast import cli
from nucfast.slide import segment_slide
from nucfast.synthetic import SyntheticSlide, write_synthetic_slide

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return [
        write_synthetic_slide(
            d / f"s{seed}.tif", (512, 512), seed=seed, ground_truth=False, tissue_fraction=1.0
        )["path"]
        for seed in (1, 2)
    ]


def test_segment_command(slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["segment", *map(str, slides), "-o", str(out), "--tile", "256", "-q"]) == 0
    text = capsys.readouterr().out
    for s in slides:
        d = out / s.stem
        assert (
            (d / "nuclei.parquet").exists()
            and (d / "nuclei.geojson").exists()
            and (d / "overlay.png").exists()
        )
        n = pq.ParquetFile(d / "nuclei.parquet").metadata.num_rows
        assert n > 20 and f"{s.name}: {n} nuclei" in text
    assert "MP/s end to end" in text and "per stage: open" in text
    for stage in ("tissue", "fit", "decode", "segment.infer", "measure", "write", "table", "geojson", "h5ad"):
        assert f"{stage} " in text.split("per stage:")[1]
    assert "cut nuclei 0, duplicates dropped" in text
    # rerun: everything resumed
    assert cli.main(["segment", str(slides[0]), "-o", str(out / slides[0].stem), "--tile", "256", "-q"]) == 0
    assert "(4 resumed)" in capsys.readouterr().out


def test_segment_command_errors(tmp_path, capsys):
    assert cli.main(["segment", str(tmp_path / "none.svs"), "-o", str(tmp_path / "o")]) == 1
    assert "nucfast: error: slide file not found" in capsys.readouterr().err
    rgb, _ = SyntheticSlide((128, 128), seed=1, tissue_fraction=1.0).render(0, 0, 128, 128)
    p = tmp_path / "nompp.tif"
    tifffile.imwrite(p, rgb, tile=(64, 64), photometric="rgb")
    assert cli.main(["segment", str(p), "-o", str(tmp_path / "o")]) == 1
    assert "no physical pixel size" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "segment",
                str(p),
                "-o",
                str(tmp_path / "o"),
                "--mpp",
                "0.25",
                "--no-tissue",
                "-q",
                "--tile",
                "128",
                "--outputs",
                "table",
            ]
        )
        == 0
    )
    with pytest.raises(SystemExit):
        cli.main(["segment"])  # SLIDE is required
    with pytest.raises(SystemExit):
        cli.main(["segment", str(p), "-o", str(tmp_path / "o"), "--outputs", "table,pdf"])
    err = capsys.readouterr().err
    assert "unknown output(s) pdf; valid: table, geojson, geojson.gz, zarr, h5ad, overlay" in err
    assert cli.main([]) == 2


def test_demo_command(tmp_path, capsys):
    assert cli.main(["demo", "-o", str(tmp_path), "--size", "768", "--tile", "384", "-q", "--seed", "7"]) == 0
    text = capsys.readouterr().out
    assert "known nuclei" in text and "detection (IoU>0.5)" in text and "AJI" in text
    f1 = float(text.split(" F1 ")[1].split(";")[0])
    assert f1 > 0.75
    assert (tmp_path / "results" / "nuclei.geojson").exists()
    gj = json.loads((tmp_path / "results" / "nuclei.geojson").read_text())
    assert len(gj["features"]) > 50


def test_subcommand_hook(capsys):
    def register(sub):
        p = sub.add_parser("hello", help="test plug-in")
        p.add_argument("--name", default="world")
        p.set_defaults(func=lambda a: print(f"hello {a.name}") or 0)

    cli.register_subcommand(register)
    try:
        assert cli.main(["hello", "--name", "nuclei"]) == 0
        assert "hello nuclei" in capsys.readouterr().out
    finally:
        cli.SUBCOMMAND_REGISTRARS.remove(register)


def test_python_dash_m():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run(
        [sys.executable, "-m", "nucfast", "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0 and "segment" in p.stdout and "demo" in p.stdout


def test_segment_slide_default_out_dir(slides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = segment_slide(slides[0], tile=512, outputs=())
    assert res.out_dir == tmp_path / (slides[0].stem + ".nucfast") and res.n_nuclei > 20
    assert np.isfinite(res.mp_per_s)
