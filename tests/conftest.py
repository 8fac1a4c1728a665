"""Shared fixtures: the real data subset in ../shared/data and small seeds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# CI clones the repository with shared/ beside it; QMLNB_SHARED_DATA overrides
SHARED_DATA = Path(os.environ.get("QMLNB_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the real Fashion-MNIST and CIFAR-10 subsets, or skip."""
    if not (SHARED_DATA / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real data subset not found at {SHARED_DATA} (set QMLNB_SHARED_DATA to its folder)")
    return SHARED_DATA
