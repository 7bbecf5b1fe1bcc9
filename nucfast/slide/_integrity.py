"""What a slide reader checks before it trusts a TIFF file and the pixels decoded from it.

Whole-slide readers are lenient: cuCIM opens truncated files and returns blank or stale pixels for tiles
whose JPEG data is corrupt (libjpeg's complaint goes to stderr, the read "succeeds"); OpenJPEG, behind all
three readers, decodes damaged JPEG 2000 tiles without a word. A segmentation of such pixels is a
successful run with missing nuclei. So every reader of :mod:`nucfast.slide.reader` goes through this
module, whichever library decodes:

1. **Structure, at open** (:func:`check_structure`): the TIFF header and every image directory (IFD) are
   walked by hand, independently of tifffile's lenient parser: each directory, each tag value stored out
   of line and each next-directory pointer must lie inside the file (a truncated copy fails here, with
   the byte it needed), the chain must not loop. Then, per page (:func:`check_pages`): the number of
   tile/strip offsets must match the image and tile size, every segment must lie inside the file after
   the header, tiled pages must have no empty tiles, and no two segments may partially overlap.
2. **Each segment, before its pixels are used** (:class:`SegmentVerifier`): the raw bytes of every tile
   (or strip) a read touches are checked once per reader by a decoder that reports errors:

   - JPEG: must start with SOI and end with EOI, and decode with libjpeg-turbo in strict mode
     (``simplejpeg.decode_jpeg(strict=True)``: libjpeg's "corrupt data" *warnings*, which cuCIM and
     tifffile ignore, are errors), to the tile's size. Measured on CMU-1-Small-Region.svs: every zeroed
     or randomised span and 156 of 162 single-bit flips inside one tile's entropy-coded data are
     detected; the other bit flips change a coefficient without desynchronising the Huffman code, which
     no decoder can tell from a real image (JPEG has no checksum).
   - JPEG 2000: the codestream must start with SOC + SIZ, its tile-part lengths (``Psot``) must chain to
     the EOC marker that ends it, and it must decode (OpenJPEG, through tifffile) to the tile's size.
     Damage confined to the packet data of one tile is *not* detectable (no checksum; OpenJPEG, hence
     every reader, decodes it silently); damage reaching a tile's header or its end is.
   - Anything else (deflate, LZW, zstd, ...): it must decode through tifffile to the segment's size
     (deflate carries an Adler-32 checksum).

   Verification costs about one extra decode of each tile (measured in docs/ROBUSTNESS.md); it is what
   turns "cuCIM returned grey pixels" into a :class:`SlideReadError` naming the file, level and tile.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import numpy as np

__all__ = ["check_structure", "check_pages", "SegmentVerifier", "CorruptSegment", "SlideReadError"]

# TIFF field types -> bytes per value (TIFF 6.0 + BigTIFF)
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_TYPE_SIZE.update({16: 8, 17: 8, 18: 8})
_MAX_IFDS = 100_000
_JPEG = 7
_JPEG2000 = (33003, 33004, 33005, 34712)
_NDPI_TAG = 65420  # Hamamatsu NDPI FileFormat
_BYTE_CODECS = (5, 8, 32946, 34925, 50000)  # LZW, deflate (x2), LZMA, zstd: byte streams, not images


class SlideReadError(OSError):
    """A slide file cannot be opened or read (missing, truncated, corrupt or unsupported)."""


class CorruptSegment(ValueError):
    """A tile/strip whose bytes do not decode (raised by :class:`SegmentVerifier`)."""


def _err(path: Path, msg: str) -> SlideReadError:
    return SlideReadError(f"{path}: {msg}")


def check_structure(path: Path, size: int) -> set[int]:
    """Walk the TIFF header and directory chain; every directory, out-of-line tag value and next pointer
    must lie inside the file's ``size`` bytes. Returns the tag ids of the first directory.

    Raises SlideReadError naming the file and the byte past the end (a truncated copy) or the loop."""
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 8:
            raise _err(path, f"truncated TIFF header ({len(head)} bytes)")
        bo = {b"II": "<", b"MM": ">"}.get(head[:2])
        if bo is None:
            raise _err(path, "not a TIFF file (bad byte-order mark)")
        magic = struct.unpack(bo + "H", head[2:4])[0]
        if magic == 42:
            big, first = False, struct.unpack(bo + "I", head[4:8])[0]
        elif magic == 43:
            if len(head) < 16:
                raise _err(path, "truncated BigTIFF header")
            big, first = True, struct.unpack(bo + "Q", head[8:16])[0]
        else:
            raise _err(path, f"not a TIFF file (version {magic})")
        cnt_fmt, ent_size, off_fmt, inline = ("Q", 20, "Q", 8) if big else ("H", 12, "I", 4)
        cnt_size, off_size = struct.calcsize(cnt_fmt), struct.calcsize(off_fmt)
        hdr = 16 if big else 8
        seen: set[int] = set()
        tags0: set[int] = set()
        off, n_ifd = first, 0
        if off == 0:
            raise _err(path, "TIFF has no image directories")
        while off:
            if off in seen:
                raise _err(path, f"corrupt file: the directory chain loops (directory {n_ifd} at byte {off})")
            seen.add(off)
            n_ifd += 1
            if n_ifd > _MAX_IFDS:
                raise _err(path, f"corrupt file: more than {_MAX_IFDS} image directories")
            if off < hdr or off + cnt_size > size:
                raise _err(
                    path,
                    f"truncated or corrupt file: directory {n_ifd - 1} starts at byte {off} but the file "
                    f"has {size} bytes",
                )
            f.seek(off)
            n = struct.unpack(bo + cnt_fmt, f.read(cnt_size))[0]
            end = off + cnt_size + n * ent_size + off_size
            if n == 0 or end > size:
                raise _err(
                    path,
                    f"truncated or corrupt file: directory {n_ifd - 1} at byte {off} has {n} entries "
                    f"ending at byte {end}; the file has {size} bytes",
                )
            raw = f.read(n * ent_size + off_size)
            for k in range(n):
                e = raw[k * ent_size : (k + 1) * ent_size]
                tag, typ = struct.unpack(bo + "HH", e[:4])
                if n_ifd == 1:
                    tags0.add(tag)
                    if tag == _NDPI_TAG:  # NDPI keeps 64-bit offsets' high bits elsewhere: not checked here
                        return tags0
                count = struct.unpack(bo + off_fmt, e[4 : 4 + off_size])[0]
                nbytes = _TYPE_SIZE.get(typ, 0) * count
                if nbytes > inline:
                    voff = struct.unpack(bo + off_fmt, e[4 + off_size : 4 + 2 * off_size])[0]
                    if voff + nbytes > size:
                        raise _err(
                            path,
                            f"truncated or corrupt file: tag {tag} of directory {n_ifd - 1} needs bytes "
                            f"{voff}..{voff + nbytes} but the file has {size} bytes",
                        )
            off = struct.unpack(bo + off_fmt, raw[n * ent_size :])[0]
    return tags0


def _segment_grid(page) -> tuple[int, int, int, int, int]:
    """(rows, cols) of segments per plane, segment (height, width), planes (separate samples)."""
    h, w = int(page.imagelength), int(page.imagewidth)
    planes = int(page.samplesperpixel) if int(page.planarconfig) == 2 else 1
    depth = int(getattr(page, "imagedepth", 1) or 1)
    if page.is_tiled:
        th, tw = int(page.tilelength), int(page.tilewidth)
        td = int(getattr(page, "tiledepth", 1) or 1)
        if th <= 0 or tw <= 0:
            raise ValueError(f"tile size {th}x{tw}")
        return -(-h // th), -(-w // tw), th, tw, planes * -(-depth // td)
    rps = int(page.rowsperstrip or h) or h
    rps = min(rps, h) if h else rps
    if rps <= 0:
        raise ValueError(f"rows per strip {rps}")
    return -(-h // rps), 1, rps, w, planes * depth


def check_pages(path: Path, pages, size: int) -> None:
    """Per-page checks of the tile/strip tables (tifffile pages): counts match the geometry, segments lie
    inside the file after the header, tiled pages have no empty tiles, no partial overlaps."""
    spans = []
    for i, p in enumerate(pages):
        offs = np.asarray(p.dataoffsets, dtype=np.int64)
        cnts = np.asarray(p.databytecounts, dtype=np.int64)
        try:
            nr, nc, _, _, planes = _segment_grid(p)
        except (TypeError, ValueError) as e:
            raise _err(path, f"corrupt file: page {i} has an invalid layout ({e})") from None
        need = nr * nc * planes
        if 0 in p.shape:
            raise _err(path, f"corrupt file: page {i} has an empty image size {tuple(p.shape)}")
        if offs.size != need or cnts.size != need:
            raise _err(
                path,
                f"corrupt file: page {i} ({p.imagewidth}x{p.imagelength} px) needs {need} "
                f"{'tiles' if p.is_tiled else 'strips'} but its directory lists {offs.size} offsets and "
                f"{cnts.size} byte counts",
            )
        if offs.size and int((offs + cnts).max()) > size:
            raise _err(
                path,
                f"truncated or corrupt file: image data of page {i} ends at byte {int((offs + cnts).max())} "
                f"but the file has {size} bytes",
            )
        if offs.size and ((offs < 8) & (cnts > 0)).any():
            raise _err(path, f"corrupt file: page {i} has image data inside the TIFF header")
        if offs.size and (cnts <= 0).any() and p.is_tiled:
            raise _err(path, f"corrupt file: page {i} has empty tiles")
        keep = cnts > 0
        spans.append(np.stack([offs[keep], cnts[keep]], axis=1))
    if spans:
        s = np.concatenate(spans)
        s = np.unique(s, axis=0)  # identical (offset, count) pairs: a writer sharing one blank tile
        if len(s) > 1:
            bad = s[:-1, 0] + s[:-1, 1] > s[1:, 0]
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise _err(
                    path,
                    f"corrupt file: image data segments overlap (bytes {s[k, 0]}..{s[k, 0] + s[k, 1]} and "
                    f"{s[k + 1, 0]}..{s[k + 1, 0] + s[k + 1, 1]})",
                )


def _check_j2k(data: bytes) -> None:
    """JPEG 2000 codestream structure: SOC SIZ ... (SOT tile-parts chained by Psot) ... EOC."""
    if len(data) < 4 or data[:4] != b"\xff\x4f\xff\x51":
        raise CorruptSegment("not a JPEG 2000 codestream (no SOC/SIZ marker at its start)")
    if data[-2:] != b"\xff\xd9":
        raise CorruptSegment("JPEG 2000 codestream does not end with EOC (truncated or overwritten)")
    pos = 2
    n = len(data)
    while pos + 4 <= n:  # main header: marker segments up to the first SOT
        marker = data[pos : pos + 2]
        if marker[0] != 0xFF:
            raise CorruptSegment(f"bad marker 0x{marker.hex()} in the JPEG 2000 main header at byte {pos}")
        if marker == b"\xff\x90":
            break
        seglen = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if seglen < 2:
            raise CorruptSegment(f"bad JPEG 2000 marker segment length {seglen} at byte {pos}")
        pos += 2 + seglen
    else:
        raise CorruptSegment("JPEG 2000 codestream has no tile-part (SOT)")
    while pos + 12 <= n and data[pos : pos + 2] == b"\xff\x90":
        psot = int.from_bytes(data[pos + 6 : pos + 10], "big")
        if psot == 0:  # the last tile-part runs to EOC
            return
        if psot < 14:
            raise CorruptSegment(f"bad JPEG 2000 tile-part length {psot} at byte {pos}")
        pos += psot
    if pos != n - 2:
        raise CorruptSegment(
            f"JPEG 2000 tile-part lengths end at byte {pos}, not at the EOC marker (byte {n - 2})"
        )


def _jpeg_stream(data: bytes, tables: bytes | None) -> bytes:
    """A standalone JPEG: the JPEGTables tag (SOI tables EOI) merged into an abbreviated tile stream."""
    if tables and len(tables) > 4 and tables[:2] == b"\xff\xd8" and tables[-2:] == b"\xff\xd9":
        return tables[:-2] + data[2:]
    return data


class SegmentVerifier:
    """Checks each tile/strip of the pages a reader decodes from, once, before its pixels are trusted.

    ``check(page, r0, c0, r1, c1)`` verifies the segments of page ``page`` covering pixel rows ``r0..r1``
    and columns ``c0..c1`` (raises :class:`CorruptSegment`); ``decode(page, i)`` returns the pixels of one
    verified segment with tifffile (the tifffile reader's decoder). Thread-safe (``os.pread``).
    """

    def __init__(self, path: Path, tiff):
        self.path = path
        self.tiff = tiff  # an open tifffile.TiffFile (owned by the caller)
        self._fd = os.open(path, os.O_RDONLY)
        self._pages = list(tiff.pages)
        self._ok: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        try:
            import simplejpeg  # optional: strict libjpeg-turbo (the slide extra installs it)

            self._sj = simplejpeg
        except ImportError:  # pragma: no cover - the slide extra pins it
            self._sj = None

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def page(self, index: int):
        return self._pages[index]

    def grid(self, index: int):
        return _segment_grid(self._pages[index])

    def raw(self, index: int, seg: int) -> bytes:
        p = self._pages[index]
        off, cnt = int(p.dataoffsets[seg]), int(p.databytecounts[seg])
        data = os.pread(self._fd, cnt, off)
        if len(data) != cnt:
            raise CorruptSegment(f"segment {seg} of page {index}: read {len(data)} of {cnt} bytes")
        return data

    def segments(self, index: int, r0: int, c0: int, r1: int, c1: int) -> list[int]:
        """Indices of the segments of page ``index`` covering rows r0..r1, cols c0..c1 (all planes)."""
        nr, nc, sh, sw, planes = self.grid(index)
        rows = range(max(r0, 0) // sh, min(max(r1 - 1, 0) // sh, nr - 1) + 1)
        cols = range(max(c0, 0) // sw, min(max(c1 - 1, 0) // sw, nc - 1) + 1)
        return [pl * nr * nc + r * nc + c for pl in range(planes) for r in rows for c in cols]

    def check(self, index: int, r0: int, c0: int, r1: int, c1: int) -> None:
        ok = self._ok.get(index)
        if ok is None:
            with self._lock:
                ok = self._ok.setdefault(index, np.zeros(len(self._pages[index].dataoffsets), bool))
        for s in self.segments(index, r0, c0, r1, c1):
            if not ok[s]:
                self.verify_segment(index, s)
                ok[s] = True

    def check_page(self, index: int) -> None:
        p = self._pages[index]
        self.check(index, 0, 0, int(p.imagelength), int(p.imagewidth))

    def _where(self, index: int, seg: int) -> str:
        nr, nc, sh, sw, _ = self.grid(index)
        r, c = divmod(seg % (nr * nc), nc)
        kind = "tile" if self._pages[index].is_tiled else "strip"
        return f"{kind} {seg} of page {index} (pixels from row {r * sh}, col {c * sw})"

    def verify_segment(self, index: int, seg: int, *, pixels: bool = False):
        """Check one segment's bytes (raises CorruptSegment naming the tile). With ``pixels``, returns
        its tifffile decode ``(array, index)`` (decoded once when the check decodes anyway)."""
        p = self._pages[index]
        out = None
        try:
            data = self.raw(index, seg)
            comp = int(p.compression)
            if comp == _JPEG:
                self._check_jpeg(p, data, seg)
            elif comp in _JPEG2000:
                _check_j2k(data)
                out = self._decode(p, seg, data)
            elif comp != 1:
                out = self._decode(p, seg, data)
            elif len(data) < self._nbytes(p, seg):
                need = self._nbytes(p, seg)
                raise CorruptSegment(f"uncompressed segment has {len(data)} bytes, needs {need}")
            if pixels and out is None:
                out = self._decode(p, seg, data)
        except CorruptSegment as e:
            raise CorruptSegment(f"corrupt {self._where(index, seg)}: {e}") from None
        except Exception as e:  # decoders raise their own types (Jpeg8Error, Jpeg2kError, zlib.error, ...)
            raise CorruptSegment(
                f"corrupt {self._where(index, seg)}: does not decode ({type(e).__name__}: {e})"
            ) from None
        return out

    @staticmethod
    def _nbytes(p, seg: int, full: bool = False) -> int:
        nr, nc, sh, sw, planes = _segment_grid(p)
        spp = 1 if int(p.planarconfig) == 2 else int(p.samplesperpixel)
        rows = sh
        if not p.is_tiled and not full:
            r = seg % (nr * nc)
            rows = min(sh, int(p.imagelength) - r * sh)
        return rows * sw * spp * int(p.bitspersample) // 8

    def _expected_shape(self, p, seg: int) -> tuple[int, int]:
        nr, nc, sh, sw, _ = _segment_grid(p)
        if p.is_tiled:
            return sh, sw
        r = seg % (nr * nc)
        return min(sh, int(p.imagelength) - r * sh), sw

    def _check_jpeg(self, p, data: bytes, seg: int) -> None:
        if data[:2] != b"\xff\xd8":
            raise CorruptSegment(f"not a JPEG stream (starts with 0x{data[:2].hex()}, not the SOI marker)")
        if data[-2:] != b"\xff\xd9":
            raise CorruptSegment("JPEG stream does not end with the EOI marker (truncated or overwritten)")
        if self._sj is None:  # pragma: no cover
            self._decode(p, seg, data)
            return
        stream = _jpeg_stream(data, p.jpegtables)
        h, w, cs, _ = self._sj.decode_jpeg_header(stream)
        eh, ew = self._expected_shape(p, seg)
        if (h, w) != (eh, ew) and not (not p.is_tiled and h >= eh and w == ew):
            raise CorruptSegment(f"JPEG frame is {h}x{w}, the {eh}x{ew} segment needs")
        ncomp = {"Gray": 1, "CMYK": 4, "YCCK": 4}.get(cs, 3)
        spp = 1 if int(p.planarconfig) == 2 else int(p.samplesperpixel)
        if ncomp != spp:
            raise CorruptSegment(f"JPEG frame has {ncomp} components, the page declares {spp} samples/pixel")
        cs_out = {"Gray": "GRAY", "CMYK": "CMYK", "YCCK": "CMYK"}.get(cs, "RGB")
        self._sj.decode_jpeg(stream, colorspace=cs_out, strict=True)  # libjpeg warnings are errors

    def _decode(self, p, seg: int, data: bytes):
        comp = int(p.compression)
        if comp in _BYTE_CODECS:  # lossless byte streams must decompress to exactly the segment's bytes
            from tifffile import TIFF

            raw = TIFF.DECOMPRESSORS[comp](data)
            need = self._nbytes(p, seg)
            full = self._nbytes(p, seg, full=True)
            if len(raw) not in (need, full):
                raise CorruptSegment(
                    f"decompresses to {len(raw)} bytes; the segment's geometry and samples need {need}"
                )
        a, idx, shape = p.decode(data, seg, jpegtables=p.jpegtables)
        if a is None:
            raise CorruptSegment("empty segment")
        eh, ew = self._expected_shape(p, seg)
        if a.shape[-3] < eh or a.shape[-2] < ew:
            raise CorruptSegment(f"decoded to {a.shape[-3]}x{a.shape[-2]}, the segment needs {eh}x{ew}")
        return a, idx

    def decode(self, index: int, seg: int):
        """(pixels (rows, cols, samples), (plane, row, col)) of a segment, verified first."""
        a, idx = self.verify_segment(index, seg, pixels=True)
        ok = self._ok.get(index)
        if ok is not None:
            ok[seg] = True
        a = a.reshape(a.shape[-3:]) if a.ndim > 3 else a
        return a, (int(idx[0]), int(idx[2]), int(idx[3]))
