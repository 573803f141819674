"""Shared fixtures: tiny offline models, a small synthetic sample, one local Ray instance, and one
headless Chromium for the session (tests/browser.py: one Playwright per process, so it lives here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import CONF_DIR, VOCAB_PATH
from core.vocab import load_vocab, vocabulary_words
from datagen.synthetic import make_sample
from training.tiny_models import build_tiny_blip, build_tiny_siglip

from .browser import browser, page  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def vocab() -> dict[str, list[str]]:
    return load_vocab(VOCAB_PATH)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, vocab) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    words = vocabulary_words(vocab)
    return {"siglip": build_tiny_siglip(root / "siglip", words), "blip": build_tiny_blip(root / "blip", words)}


@pytest.fixture(scope="session")
def sample(tmp_path_factory, vocab):
    return make_sample(tmp_path_factory.mktemp("sample"), n_garments=8, n_scenes=24, seed=1, vocab=vocab)


@pytest.fixture(scope="session")
def model_overrides(tiny_models, tmp_path_factory) -> list[str]:
    """Command-line overrides that point the demo config at the session's tiny models."""
    return [
        str(CONF_DIR / "demo.yaml"),
        f"embedder.model.spec={tiny_models['siglip']}",
        f"captioner.model.spec={tiny_models['blip']}",
        "progress=false",
        f"storage.allowed_local_roots=[{tmp_path_factory.getbasetemp()}]",  # the samples, inputs and outputs
        f"index.local_cache={tmp_path_factory.getbasetemp() / 'index-cache'}",  # copies of remote index shards
    ]


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray instance for the session. Its workers inherit the test S3 server's dummy
    credentials from this process (on a cluster they come from the instance role)."""
    import ray

    from .s3_server import CREDENTIALS

    for name, value in {**CREDENTIALS, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ.setdefault(name, value)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=400 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()
