"""Training images for Nuc2Vec from whole slides: the nuclei nucfast itself finds (issue 12).

Runs ``segment_slide`` (default model) on each slide, then writes every tissue tile core with nuclei as
``<slide>_<tile>.png`` (RGB at the working resolution, 0.25 um/px) + ``<slide>_<tile>_inst.tif`` (its
instance labels from labels.zarr, relabelled 1..n), the layout ``nucfast train nuc2vec --extra-data DIR``
reads. Slides without a microns-per-pixel value are skipped (their scale is unknown).

    PYTHONPATH=. python scripts/slide_nuclei.py --out /work/runs/slide_nuclei ../shared/data/slides/*.svs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile


def main(argv=None) -> int:
    from PIL import Image

    from nucfast.slide import MissingMPPError, segment_slide
    from nucfast.slide._labels import read_label_array
    from nucfast.slide.engine import WorkingGrid
    from nucfast.slide.reader import open_slide

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slides", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--min-nuclei", type=int, default=20)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for s in map(Path, args.slides):
        try:
            res = segment_slide(s, out / f"{s.stem}.nucfast", tile=args.tile, outputs=())
        except MissingMPPError as e:
            print(f"skip {s.name}: {e}")
            continue
        labels = read_label_array(res.paths["labels"])
        reader = open_slide(s)
        grid = WorkingGrid(reader, res.scale)
        H, W = grid.shape
        n_tiles = n_nuc = 0
        for r in range(0, H, args.tile):
            for c in range(0, W, args.tile):
                h, w = min(args.tile, H - r), min(args.tile, W - c)
                if min(h, w) < 128:
                    continue
                lab = np.asarray(labels[r : r + h, c : c + w])
                ids, inv = np.unique(lab, return_inverse=True)
                n = int(len(ids) - (ids[0] == 0))
                if n < args.min_nuclei:
                    continue
                inst = (inv.reshape(lab.shape) + (ids[0] != 0)).astype(np.uint16 if n < 65535 else np.int32)
                name = f"{s.stem}_{r}_{c}"
                rgb = np.ascontiguousarray(grid.read(r, c, h, w)[..., :3])
                Image.fromarray(rgb).save(out / f"{name}.png")
                tifffile.imwrite(out / f"{name}_inst.tif", inst)
                n_tiles += 1
                n_nuc += n
        reader.close()
        summary[s.name] = {"tiles": n_tiles, "nuclei": n_nuc, "working_mpp": res.working_mpp}
        print(json.dumps({s.name: summary[s.name]}))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
