"""Memory under a large artifact: upload and download a generated stream.

The stream is made on the fly from one random block, so the benchmark never
holds it either, and hashed on both sides of the trip. While bytes flow, a
thread samples the resident set of the server's processes (the main one and
any workers; the store is reported apart) from /proc.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from procs import reset_peak_rss, status_kib

BLOCK_BYTES = 1024 * 1024
SAMPLE_EVERY_S = 0.02
TRANSFER_TIMEOUT_S = 900.0


class RssSampler:
    """Peak of the summed VmRSS of some processes, sampled in a thread."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_kib = 0

    def current_kib(self) -> int:
        """The summed VmRSS right now."""
        return sum(status_kib(pid, "VmRSS") for pid in self._pids())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.current_kib())
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> RssSampler:
        self.peak_kib = self.current_kib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


async def _generated(size: int, digest: Any) -> AsyncIterator[bytes]:
    block = os.urandom(BLOCK_BYTES)
    sent = 0
    while sent < size:
        length = min(BLOCK_BYTES, size - sent)
        # A counter at the front of each block keeps the chunks distinct.
        chunk = (sent.to_bytes(8, "little") + block[8:length])[:length]
        digest.update(chunk)
        sent += length
        yield chunk


async def upload(
    session: aiohttp.ClientSession, url: str, size: int
) -> tuple[int, str]:
    """POST a generated file of ``size`` bytes; the new id and its sha256."""
    digest = hashlib.sha256()
    with aiohttp.MultipartWriter("form-data") as form:
        name = form.append("big.bin")
        name.set_content_disposition("form-data", name="name")
        data = form.append(_generated(size, digest))
        data.set_content_disposition("form-data", name="file", filename="big.bin")
    timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT_S)
    async with session.post(url, data=form, timeout=timeout) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"upload failed: {response.status} {body}")
    return int(body["resource_id"]), digest.hexdigest()


async def download(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    """GET the bytes; their count, their sha256 and the ETag sent."""
    digest = hashlib.sha256()
    size = 0
    timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT_S)
    async with session.get(url, timeout=timeout) as response:
        if response.status != 200:
            raise RuntimeError(f"download failed: {response.status}")
        async for chunk in response.content.iter_chunked(BLOCK_BYTES):
            digest.update(chunk)
            size += len(chunk)
        etag = response.headers.get("ETag", "").strip('"')
    return size, digest.hexdigest(), etag


async def measure(
    base_url: str,
    experiment_id: int,
    size: int,
    server_pids: Callable[[], list[int]],
    store_pids: Callable[[], list[int]],
) -> dict[str, Any]:
    """Upload then download ``size`` bytes; the RSS each trip added."""
    async with aiohttp.ClientSession() as session:
        upload_url = f"{base_url}/resource/experiment/{experiment_id}"
        up = await _trip(server_pids, store_pids, upload(session, upload_url, size))
        resource_id, sent_hash = up.pop("result")

        data_url = f"{base_url}/resource/{resource_id}/data"
        down = await _trip(server_pids, store_pids, download(session, data_url))
        got_size, got_hash, etag = down.pop("result")

    return {
        "bytes": size,
        "upload": up,
        "download": down,
        "round_trip_intact": got_size == size and got_hash == sent_hash == etag,
    }


async def _trip(
    server_pids: Callable[[], list[int]],
    store_pids: Callable[[], list[int]],
    transfer: Any,
) -> dict[str, Any]:
    reset = all([reset_peak_rss(pid) for pid in server_pids()])
    with RssSampler(server_pids) as server, RssSampler(store_pids) as store:
        before, store_before = server.peak_kib, store.peak_kib
        started = time.perf_counter()
        result = await transfer
        elapsed = time.perf_counter() - started
    hwm = sum(status_kib(pid, "VmHWM") for pid in server_pids())
    return {
        "result": result,
        "seconds": round(elapsed, 1),
        "rss_before_mib": round(before / 1024, 1),
        "rss_peak_mib": round(server.peak_kib / 1024, 1),
        "rss_delta_mib": round((server.peak_kib - before) / 1024, 1),
        # The kernel's own high-water marks since the reset, summed: an upper
        # bound that no sampling gap can miss.
        "hwm_delta_mib": round((hwm - before) / 1024, 1) if reset else None,
        "store_rss_delta_mib": round((store.peak_kib - store_before) / 1024, 1),
    }
