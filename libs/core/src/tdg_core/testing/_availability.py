"""What to do when a dependency is neither given, nor provisioned, nor available through Docker."""

from __future__ import annotations

import functools
import importlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tdg_core.devstack import find_repo_root


def unavailable(message: str) -> NoReturn:
    """Fail in CI, where the stack must be there; skip on a laptop, saying how to get it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@functools.cache
def docker_available() -> bool:
    """Whether a Docker daemon answers a ping (a `docker` client on PATH proves nothing)."""
    try:
        # Imported by name: the docker SDK (a testcontainers dependency) has no type stubs,
        # and tdg-core does not depend on it.
        docker: Any = importlib.import_module("docker")
        client = docker.from_env(timeout=3)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def repo_root(config: pytest.Config) -> Path | None:
    """The tdg workspace holding the tests (pytest rootdir), else the one holding this file."""
    return find_repo_root(config.rootpath) or find_repo_root()


def wait_http_ok(url: str, timeout: float) -> None:
    """Poll `url` until it answers 200 (for containers, whose processes we do not own)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")
        time.sleep(0.2)
