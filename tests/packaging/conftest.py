import pytest

from .wheel_build import build_from_clean_clone, make_venv


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(sdist, wheel) from a clean clone of HEAD."""
    return build_from_clean_clone(tmp_path_factory.mktemp("ops-wheel"))


@pytest.fixture(scope="session")
def wheel_venv(built, tmp_path_factory):
    """bin/ of a fresh venv holding the wheel (and its dependencies from the index)."""
    return make_venv(tmp_path_factory.mktemp("ops-venv") / "venv", built[1])
