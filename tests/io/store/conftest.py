"""Store fixtures: one conformance suite over a local directory, zarr's in-memory store and S3
served by a moto server on loopback (PITFALLS "Zarr v3": ThreadedMotoServer + s3fs)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import zarr

from pipeline import Imaging
from tests.io.store.support import masked


class StoreLocation(NamedTuple):
    """What the store API accepts: a location and, for URLs, its ``storage_options``."""

    kind: str
    location: str | Path | zarr.abc.store.Store
    storage_options: dict[str, Any] | None = None

    def open_zarr_group(self, mode: str = "r+") -> zarr.Group:
        """The root as a plain Zarr group, bypassing lenspipe's checks (to tamper with it)."""
        kwargs = {"storage_options": self.storage_options} if self.storage_options else {}
        return zarr.open_group(self.location, mode=mode, **kwargs)


@pytest.fixture(scope="module")
def moto_endpoint():
    """A moto S3 server on 127.0.0.1 (a free port), once per test module."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO: hundreds of lines per test in failure reports
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    werkzeug.setLevel(level)


def _close_async_s3_sessions() -> None:
    """Close the aiohttp sessions of the cached S3 filesystems, then empty the cache.

    zarr opens s3fs with ``asynchronous=True``; s3fs registers no finaliser for such instances,
    so once dropped from the instance cache their sessions would be left to the garbage collector,
    which reports ``ResourceWarning: Unclosed client session`` (an error in this suite). The
    sessions live on zarr's event loop, so they are closed there.
    """
    import s3fs
    from zarr.core.sync import sync

    for fs in list(s3fs.S3FileSystem._cache.values()):
        client = getattr(fs, "_s3", None)
        if fs.asynchronous and client is not None:
            sync(client.close())
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_location(moto_endpoint, monkeypatch) -> StoreLocation:
    """A fresh ``s3://`` store URL in a fresh bucket; the server is reset afterwards."""
    import boto3
    import requests

    # hermetic credentials: never pick up a developer's profile or real keys
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    bucket = "lenspipe-test"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    options = {"endpoint_url": moto_endpoint, "key": "testing", "secret": "testing", "anon": False}
    yield StoreLocation("s3", f"s3://{bucket}/survey-{uuid.uuid4().hex}.zarr", options)
    _close_async_s3_sessions()
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()


@pytest.fixture(params=["local", "memory", "s3"])
def store_location(request, tmp_path) -> StoreLocation:
    """Each kind of store the API accepts: a local directory path, a ``zarr.storage.MemoryStore``
    object, and an ``s3://`` URL with ``storage_options`` (moto server)."""
    if request.param == "local":
        return StoreLocation("local", tmp_path / "survey.zarr")
    if request.param == "memory":
        return StoreLocation("memory", zarr.storage.MemoryStore())
    return request.getfixturevalue("s3_location")


@pytest.fixture(params=["local", "memory"])
def quick_location(request, tmp_path) -> StoreLocation:
    """A local directory or a ``zarr.storage.MemoryStore``: the stores without a server, for
    the many small damage cases (S3 runs the representative ones)."""
    if request.param == "local":
        return StoreLocation("local", tmp_path / "survey.zarr")
    return StoreLocation("memory", zarr.storage.MemoryStore())


@pytest.fixture(scope="module")
def imaging() -> Imaging:
    return masked(seed=3, radius=1.0).apply_sparse_operator(batch_size=64, backend="numpy")


@pytest.fixture(scope="module")
def other_imaging() -> Imaging:
    """A different dataset (other mask, other PSF, no operator)."""
    return masked(seed=4, radius=0.8, psf_shape=(3, 3))
