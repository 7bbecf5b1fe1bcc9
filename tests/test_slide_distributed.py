"""Cohorts on a Dask distributed LocalCluster (processes, loopback) give the same results as serially."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from nucfast import cli
from nucfast.slide.distributed import segment_slides
from nucfast.synthetic import write_synthetic_slide


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    return [
        write_synthetic_slide(
            d / f"s{seed}.tif", (512, 512), seed=seed, ground_truth=False, tissue_fraction=1.0
        )["path"]
        for seed in (1, 2)
    ]


@pytest.mark.slow  # worker processes import torch: ~40-120 s on this shared machine
def test_dask_local_cluster_equals_serial(slides, tmp_path):
    distributed = pytest.importorskip("distributed")
    kw = dict(tile=256, outputs=("table",), model="baseline")
    serial = segment_slides(slides, [tmp_path / "s" / p.stem for p in slides], **kw)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="2GiB",
        ) as lc,
        distributed.Client(lc) as c,
    ):
        par = segment_slides(slides, [tmp_path / "d" / p.stem for p in slides], client=c, **kw)
        # the CLI's --scheduler runs the same tasks on the cluster at ADDRESS
        rc = cli.main(["segment", *map(str, slides), "-o", str(tmp_path / "cli"), "--tile", "256",
                       "--outputs", "table", "--model", "baseline",
                       "--scheduler", lc.scheduler_address])  # fmt: skip
        assert rc == 0
    assert [r.slide.name for r in par] == [p.name for p in slides]
    for a, b in zip(serial, par, strict=True):
        assert a.n_nuclei == b.n_nuclei > 20
        assert a.table.equals(b.table)
        assert pq.read_table(tmp_path / "cli" / a.slide.stem / "nuclei.parquet").equals(a.table)
    with pytest.raises(ValueError, match="distinct"):
        segment_slides(slides, [tmp_path / "x", tmp_path / "x"])
