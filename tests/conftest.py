"""Shared fixtures: a module-scoped local Ray, generated catalogs, a trained tiny artifact."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def skip_or_fail(reason: str) -> None:
    """Skips a test whose outside dependency is missing on a developer's machine; under CI=true the
    same absence fails it, so CI can never go green by skipping what it was meant to check."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray with 2 CPUs, shut down after the module (ray's data tests do the same)."""
    import ray

    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def color_artifact(tmp_path_factory):
    from tests.factories import make_artifact

    return make_artifact(str(tmp_path_factory.mktemp("artifact") / "custom_cnn"), ["blue", "green", "red"])


@pytest.fixture
def color_catalog(tmp_path):
    from tests.factories import make_tree_catalog

    return make_tree_catalog(str(tmp_path / "catalog"), {"red": 6, "green": 6, "blue": 6})


# The discard port on loopback: nothing listens, so a download through this proxy is refused at once.
UNREACHABLE_PROXY = "http://127.0.0.1:9"


@pytest.fixture
def offline_keras(tmp_path, monkeypatch):
    """Keras with an empty weights cache and every HTTP(S) download sent to a proxy that refuses it:
    the ImageNet download really runs, and really fails, whatever this machine has cached. Ray
    workers are unaffected; the driver resolves the weights before any of them starts."""
    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))  # read at import otherwise
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, UNREACHABLE_PROXY)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "keras_home"
