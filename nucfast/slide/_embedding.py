"""Embeddings in the slide pass (issues 12 and 13): a Nuc2Vec vector (and optionally a subtype) for every
nucleus a tile owns, and one PathologyGAN encoder latent per tissue tile, computed by the segmentation
worker on the tile it already holds, so a slide is read once.

- Nucleus embeddings: :func:`nucfast.embed_nuclei` on the tile (core + halo: the 16 um window of a nucleus
  near the core's edge is complete) with the tile's owned nuclei only; stored in the tile table as the
  column ``nuc2vec`` (fixed-size list of float32), then in ``nuclei.parquet`` and as
  ``obsm["X_nuc2vec"]`` of ``nuclei.h5ad``.
- Subtypes: the k-nearest-neighbour vote of :func:`nucfast.subtypes.assign_subtypes` in a reference written
  by ``nucfast subtypes fit``; column ``subtype`` (int32), the GeoJSON ``classification`` (a colour per
  subtype, as QuPath shows classes) and a categorical ``obs["subtype"]``.
- Tile latents: :func:`nucfast.embed_tiles` on the tile core (resampled to the encoder's scale; the core is
  covered by encoder windows whose latents are averaged over the windows with >= 70 % tissue), stored in
  the tile table's metadata (a tile without nuclei has a latent too), then ``tiles.parquet`` and
  ``tiles.h5ad`` (obs = tile index, position, size, nucleus count; ``obsm["X_pathgan"]``;
  ``obsm["spatial"]`` = tile centre in um).

Memory stays bounded: a tile's vectors are computed and committed with the tile; the final files are
streamed tile by tile.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import models
from .._embed import embed_nuclei
from .._tiles import embed_tiles
from ..models._weights import file_sha256
from ..subtypes import PALETTE, assign_subtypes, load_reference

__all__ = ["Embedders", "TILE_LATENT_KEY", "subtype_class", "tile_latent"]

#: key of the tile latent (JSON list of floats) in a tile table's parquet metadata
TILE_LATENT_KEY = b"nucfast_tile_latent"


def subtype_class(k: int) -> dict:
    """The GeoJSON ``classification`` of subtype ``k``: its colour is that of the subtype's gallery."""
    return {"name": f"Subtype {int(k)}", "color": list(PALETTE[int(k) % len(PALETTE)])}


@dataclass
class Embedders:
    """The embedding models of a slide run (each optional)."""

    nucleus: object | None = None  # nucfast.models.Model, task nucleus-embedding
    subtypes: object | None = None  # nucfast.subtypes.SubtypeReference
    subtypes_path: str | None = None
    tile: object | None = None  # nucfast.models.Model, task tile-embedding
    device: str | None = None

    @classmethod
    def resolve(cls, embed, subtypes, tile_embed, *, device=None) -> Embedders:
        """``embed``: False, True (= ``"nuc2vec"``) or a nucleus-embedding model; ``subtypes``: None or a
        reference file (needs ``embed``); ``tile_embed``: False, True (= ``"pathgan_encoder"``) or a
        tile-embedding model."""
        e = cls(device=device)
        if subtypes is not None and not embed:
            raise ValueError("subtypes= needs embed=True: subtypes are assigned from the nucleus embeddings")
        if embed:
            e.nucleus = models.load("nuc2vec" if embed is True else embed)
            if e.nucleus.task != "nucleus-embedding":
                raise ValueError(
                    f"embed: model {e.nucleus.name!r} is a {e.nucleus.task} model, not a "
                    "nucleus-embedding model"
                )
        if subtypes is not None:
            if not Path(subtypes).is_file():
                raise FileNotFoundError(f"subtypes: no such reference file {subtypes}")
            e.subtypes, e.subtypes_path = load_reference(subtypes), str(subtypes)
            d_ref, d = e.subtypes.embeddings.shape[1], e.nucleus.net.dim
            if d_ref != d:
                raise ValueError(
                    f"subtype reference {subtypes} holds {d_ref}-d embeddings but model "
                    f"{e.nucleus.name!r} makes {d}-d ones"
                )
        if tile_embed:
            e.tile = models.load("pathgan_encoder" if tile_embed is True else tile_embed)
            if e.tile.task != "tile-embedding":
                raise ValueError(
                    f"tile_embed: model {e.tile.name!r} is a {e.tile.task} model, not a tile-embedding model"
                )
        return e

    @property
    def dim(self) -> int:
        return int(self.nucleus.net.dim)

    def config(self) -> dict:
        """What a resumed run must match (absent keys: the run had no embeddings)."""
        c = {}
        if self.nucleus is not None:
            c["embed"] = {"model": self.nucleus.name, "weights_sha256": self.nucleus.sha256}
        if self.subtypes is not None:
            c["subtypes"] = {"reference": self.subtypes_path, "sha256": file_sha256(self.subtypes_path)}
        if self.tile is not None:
            c["tile_embed"] = {"model": self.tile.name, "weights_sha256": self.tile.sha256}
        return c

    def arrow_fields(self) -> list:
        import pyarrow as pa

        f = []
        if self.nucleus is not None:
            f.append(pa.field("nuc2vec", pa.list_(pa.float32(), self.dim)))
        if self.subtypes is not None:
            f.append(pa.field("subtype", pa.int32()))
        return f

    def __call__(self, nuc, rgb: np.ndarray, origin, tile, working_mpp: float, timer) -> None:
        """Add the embeddings (and subtypes, tile latent) of one measured tile to ``nuc`` in place."""
        if self.nucleus is not None:
            t0 = time.perf_counter()
            m = len(nuc)
            if m:
                r0, c0 = origin
                pr, pc, local = nuc.patch
                owned = np.zeros(rgb.shape[:2], np.int32)  # the owned nuclei only, ids 1..m in owner order
                owned[pr - r0 : pr - r0 + local.shape[0], pc - c0 : pc - c0 + local.shape[1]] = local
                ids, emb = embed_nuclei(
                    rgb,
                    owned,
                    model=self.nucleus,
                    mpp=working_mpp,
                    device=self.device,
                    ids=np.arange(1, m + 1),
                )
                if len(ids) != m:
                    raise RuntimeError(f"tile {tile.index}: {m} owned nuclei but {len(ids)} embeddings")
            else:
                emb = np.zeros((0, self.dim), np.float32)
            nuc.embedding = np.ascontiguousarray(emb, np.float32)
            if self.subtypes is not None:
                nuc.cols["subtype"] = (
                    assign_subtypes(self.subtypes, emb).astype(np.int32) if m else np.zeros(0, np.int32)
                )
            timer.add("embed", time.perf_counter() - t0)
        if self.tile is not None:
            t0 = time.perf_counter()
            r0, c0 = origin
            r, c = tile.row - r0, tile.col - c0
            core = np.ascontiguousarray(rgb[r : r + tile.height, c : c + tile.width, :3])
            nuc.tile_latent = embed_tiles([core], mpp=working_mpp, model=self.tile)[0]
            timer.add("tile_embed", time.perf_counter() - t0)


def tile_latent(metadata: dict | None) -> np.ndarray | None:
    """The tile latent stored in a tile table's parquet metadata (None when absent or unreadable)."""
    if not metadata or TILE_LATENT_KEY not in metadata:
        return None
    try:
        v = np.asarray(json.loads(metadata[TILE_LATENT_KEY]), np.float32)
    except (ValueError, TypeError):
        return None
    return v if v.ndim == 1 and np.isfinite(v).all() else None
