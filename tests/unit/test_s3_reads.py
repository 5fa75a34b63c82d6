"""Whole-object S3 reads (every image fetch) go through obstore with botocore's credentials."""

from __future__ import annotations

import os

import pytest

from pipeline import storage
from pipeline.images import ImageError, fetch_all
from tests.s3_server import KEY_ID, SECRET, moto_s3


def test_an_s3_read_returns_the_object_and_a_missing_key_is_a_missing_row():
    with moto_s3("reads") as s3:
        s3.put("images/a.png", b"first")
        s3.put("images/b.png", b"second")
        assert storage.read_bytes("s3://reads/images/a.png") == b"first"
        with pytest.raises(FileNotFoundError):
            storage.read_bytes("s3://reads/images/nothing.png")
        fetched = fetch_all(["s3://reads/images/b.png", "s3://reads/images/gone.png", "s3://reads/images/a.png"])
    assert fetched[0] == b"second" and fetched[2] == b"first"
    assert isinstance(fetched[1], ImageError) and str(fetched[1]).startswith("missing:")


def test_s3_reads_take_credentials_from_botocores_chain_such_as_a_named_profile(tmp_path, monkeypatch):
    """A user whose keys live in a profile (not in AWS_* variables) reads images as that user:
    the same chain s3fs uses for listing and writing."""
    import botocore.session

    credentials = tmp_path / "credentials"
    credentials.write_text(f"[catalog]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_PROFILE", "catalog")
    given = storage.BotocoreCredentials(botocore.session.get_session())()
    assert (given["access_key_id"], given["secret_access_key"]) == (KEY_ID, SECRET)
    assert given["expires_at"] is not None  # re-read, so refreshed role credentials reach obstore
