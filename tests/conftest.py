import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """The real data folder: $FINEBENCH_DATA, else ../shared/datasets beside the checkout."""
    for candidate in (os.environ.get("FINEBENCH_DATA"), REPO.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "flowers17" / "jpg" / "image_0001.jpg").exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_root() -> Path | None:
    """The real data folder, or None where it is absent (for tests that fall back to generated inputs)."""
    return shared_data()


@pytest.fixture(scope="session")
def flowers_root() -> Path:
    root = shared_data()
    if root is None:
        pytest.skip("real data absent: set FINEBENCH_DATA to a folder with flowers17/ (../shared/datasets)")
    return root


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Image caches go to a per-session temp dir unless FINEBENCH_CACHE is set (CI may share one)."""
    if not os.environ.get("FINEBENCH_CACHE"):
        os.environ["FINEBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(autouse=True, scope="session")
def _method_catalogue():
    """Reports know methods through the catalogue the CLI installs; tests that call them directly get the same."""
    from finebench.methods.catalogue import MethodCatalogue
    from finebench.reports import catalogue

    catalogue.use(MethodCatalogue())
    yield
