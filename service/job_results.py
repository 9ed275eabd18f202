"""A finished job's masks in each result format, built once and served a part at a time.

The worker stores a zip of 8-bit PNG masks. mp4 (H.264 mask video) and npz (`masks`: uint8
T,H,W) are built from it on first request: the zip is copied to a local file, its PNGs are decoded
one at a time and written straight into the output file, which is then stored a part at a time.
So memory stays at a few masks and one part, whatever the clip's length.

Concurrent first requests for one format build it once: in this process they await the same task;
across replicas a store lock (`lock`/`renew_lock`) makes the others wait for the stored blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shutil
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import numpy as np

from .job_store import JobRecord, JobStore
from .video_writers import MaskVideoWriter

log = logging.getLogger("vsod.jobs")
FORMATS = ("zip", "mp4", "npz")
LOCK_S = 15.0  # a build lock lapses this long after its builder stops renewing it (died)
WAIT_POLL_S = 0.2


def zip_mask_names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return sorted(name for name in archive.namelist() if name.endswith(".png"))


def iter_zip_masks(zip_path: Path) -> Iterator[np.ndarray]:
    """The masks of a result zip in frame order, decoded one at a time."""
    with zipfile.ZipFile(zip_path) as archive:
        for name in sorted(n for n in archive.namelist() if n.endswith(".png")):
            mask = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_UNCHANGED)
            if mask is None or mask.ndim != 2:
                raise ValueError(f"result mask {name} is not an 8-bit gray PNG")
            yield mask


def write_npz(masks: Iterator[np.ndarray], count: int, out: Path) -> None:
    """`np.savez_compressed(out, masks=...)` without the array in memory: the .npy header (shape known
    from `count` and the first mask) and then each mask's bytes go into a deflated zip member."""
    first = next(masks, None)
    height, width = first.shape if first is not None else (0, 0)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (count if first is not None else 0, height, width)}
    with (zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive,
          archive.open("masks.npy", "w", force_zip64=True) as member):
        np.lib.format.write_array_header_2_0(member, header)
        if first is None:
            return
        written = 0
        for mask in itertools.chain([first], masks):
            if mask.shape != (height, width):  # a stream that changed size mid-clip
                mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
            member.write(np.ascontiguousarray(mask).tobytes())
            written += 1
        if written != count:
            raise ValueError(f"the result zip held {written} masks, not {count}")


def convert_result(zip_path: Path, fmt: str, fps: float | None, out: Path) -> None:
    """The result zip (on disk) -> `out` in `fmt` (npz or mp4), one mask in memory at a time."""
    if fmt == "npz":
        write_npz(iter_zip_masks(zip_path), len(zip_mask_names(zip_path)), out)
    elif fmt == "mp4":
        with MaskVideoWriter(out, fps) as writer:
            for mask in iter_zip_masks(zip_path):
                writer.write(mask)
    else:
        raise ValueError(f"unknown result format {fmt!r}")


class Results:
    """Serves results from the job store, building mp4 and npz once per job on first request."""

    def __init__(self, store: JobStore, spool: Path) -> None:
        self.store, self.spool = store, spool
        self._builds: dict[tuple[str, str], asyncio.Task[int | None]] = {}

    async def open(self, record: JobRecord, fmt: str) -> tuple[int, AsyncIterator[bytes]] | None:
        """(size in bytes, its parts) of the job's result in `fmt`; None when the result has expired."""
        size = await self.ensure(record, fmt)
        if size is None:
            return None
        return size, self.store.blob_parts(record.job_id, f"result:{fmt}")

    async def ensure(self, record: JobRecord, fmt: str) -> int | None:
        """The size of the stored result in `fmt`, building it first if needed (once, see the module doc)."""
        size = await self.store.blob_size(record.job_id, f"result:{fmt}")
        if size is not None or fmt == "zip":
            return size
        key = (record.job_id, fmt)
        task = self._builds.get(key)
        if task is None:
            task = asyncio.create_task(self._build(record, fmt), name=f"vsod-result-{record.job_id}-{fmt}")
            self._builds[key] = task
            task.add_done_callback(lambda _: self._builds.pop(key, None))
        return await asyncio.shield(task)  # a client that leaves does not cancel the others' build

    async def _build(self, record: JobRecord, fmt: str) -> int | None:
        kind, lock = f"result:{fmt}", f"build:{record.job_id}:{fmt}"
        while not await self.store.lock(lock, LOCK_S):  # another replica is building it: wait for it
            await asyncio.sleep(WAIT_POLL_S)
            if (size := await self.store.blob_size(record.job_id, kind)) is not None:
                return size
            if await self.store.get(record.job_id) is None:
                return None  # deleted meanwhile
        renew = asyncio.create_task(self._renew(lock))
        workdir = Path(tempfile.mkdtemp(prefix=f"result-{record.job_id}-", dir=self.spool))
        try:
            if (size := await self.store.blob_size(record.job_id, kind)) is not None:
                return size  # built by the replica that held the lock before us
            began = time.monotonic()
            zip_path, out = workdir / "masks.zip", workdir / f"masks.{fmt}"
            if not await self.store.blob_to_file(record.job_id, "result:zip", zip_path):
                return None
            await asyncio.to_thread(convert_result, zip_path, fmt, record.fps, out)
            zip_path.unlink()
            await self.store.put_blob(record.job_id, kind, out)
            if await self.store.get(record.job_id) is None:  # deleted while we built: leave nothing behind
                await self.store.delete_blob(record.job_id, kind)
                return None
            size = out.stat().st_size
            log.info("job %s: built its %s result (%d bytes) in %.1f s", record.job_id, fmt, size, time.monotonic() - began)
            return size
        finally:
            renew.cancel()
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(Exception):  # else it lapses after LOCK_S
                await self.store.unlock(lock)

    async def _renew(self, lock: str) -> None:
        while True:
            await asyncio.sleep(LOCK_S / 3)
            try:
                await self.store.renew_lock(lock, LOCK_S)
            except Exception as error:  # noqa: BLE001 - the store is briefly down: the lock may lapse; a build may repeat
                log.warning("renewing %s failed: %s", lock, error)
