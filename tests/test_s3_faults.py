"""The object store failing mid-request: a dropped upload, a dropped download, a server error.

Each command fails with one line, records nothing a row points to, and the same command run
again once the store is healthy succeeds. The S3 server is the test one, behind a proxy that
injects the failures.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from starlette.testclient import TestClient

from registry import Registry
from registry.store.manifests import load_manifest, manifest_files
from registry.store.materialize import materialize
from registry.store.s3_blobs import BlobStoreFailed
from registry.ui import create_app
from tests.conftest import Memo, memo_subprocess_env
from tests.support.cli import assert_one_line_error
from tests.support.faulty_proxy import FaultyProxy
from tests.support.s3_server import CREDENTIALS
from tests.support.snapshot import registry_state
from tests.support.task_vectors import base_with_tokenizer, register_random_task_vector


@pytest.fixture
def proxied(s3_server, monkeypatch, tmp_path):
    """A home whose blobs are in a bucket reached through the fault-injecting proxy."""
    with FaultyProxy(s3_server.endpoint) as proxy:
        for name, value in {**s3_server.environment(), "AWS_ENDPOINT_URL": proxy.endpoint}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MEMO_S3_RETRIES", "1")  # fail fast: the faults here do not go away by retrying
        url = s3_server.create_bucket()
        memo = Memo(tmp_path / "home", None, url)
        memo("init")
        yield memo, proxy


def _state(memo: Memo) -> dict:
    with Registry.open(memo.home) as reg:
        return registry_state(reg)


@pytest.mark.parametrize("mode", ["drop", "500"])
def test_a_failed_upload_records_nothing_and_the_rerun_succeeds(proxied, tiny_model, mode):
    memo, proxy = proxied
    before = _state(memo)
    proxy.fail("PUT", "/sha256/", mode)
    result = memo("base", "add", tiny_model, "--name", "tiny", ok=False)
    assert_one_line_error(result, "cannot store blob")
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in result.output
    assert _state(memo) == before, "nothing recorded, no referenced blob changed"
    proxy.heal()
    memo("base", "add", tiny_model, "--name", "tiny")
    with Registry.open(memo.home) as reg:
        assert [b.name for b in reg.list_bases()] == ["tiny"] and reg.verify().ok


def test_a_failed_download_leaves_no_output_and_the_rerun_succeeds(proxied, tiny_model, tmp_path):
    memo, proxy = proxied
    memo("base", "add", tiny_model, "--name", "tiny")
    proxy.fail("GET", "/sha256/", "drop")
    assert_one_line_error(memo("verify", ok=False), "cannot read blob")
    cache = tmp_path / "cache"
    with Registry.open(memo.home) as reg:
        base = reg.get_base("tiny")
        with pytest.raises(BlobStoreFailed, match="cannot read blob"):
            materialize(reg.store, base.manifest_sha256, cache)
        assert not (cache / base.manifest_sha256).exists(), "no cache entry from a cut download"
        proxy.heal()
        assert (materialize(reg.store, base.manifest_sha256, cache) / "config.json").is_file()
    memo("verify")


def test_a_missing_bucket_is_one_line(s3_server, monkeypatch, tmp_path):
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    result = Memo(home, None, "s3://no-such-bucket/memo")("init", ok=False)
    assert_one_line_error(result, "there is no bucket 'no-such-bucket'")
    assert not (home / "memo-home.json").exists(), "a home never records a store it cannot reach"
    good = s3_server.create_bucket()
    Memo(home, None, good)("init")  # so the same command with the right bucket just works
    assert json.loads((home / "memo-home.json").read_text())["blobs"] == good


def test_a_command_killed_mid_upload_leaves_nothing_a_row_points_to(proxied, tiny_model):
    memo, proxy = proxied
    fault = proxy.fail("PUT", "/sha256/", "hang")
    env = dict(memo_subprocess_env(memo.home), MEMO_S3_RETRIES="0")
    command = [sys.executable, "-m", "registry", "base", "add", str(tiny_model), "--name", "tiny"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while fault.hits == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert fault.hits >= 1, "the upload should have started"
    proc.send_signal(signal.SIGKILL)  # killed while its first blob is half sent
    proc.wait()
    proxy.heal()
    with Registry.open(memo.home) as reg:
        assert reg.list_bases() == [] and reg.verify().ok  # no row, and no row points at a missing blob
        assert reg.store.stale_temp_files(0) == []
    memo("base", "add", tiny_model, "--name", "tiny")  # the same command again just works
    with Registry.open(memo.home) as reg:
        assert [b.name for b in reg.list_bases()] == ["tiny"] and reg.verify().ok


def test_a_download_cut_mid_merge_resumes_where_it_stopped(proxied, tiny_model, docs, tmp_path):
    memo, proxy = proxied
    with Registry.open(memo.home) as reg:
        reg.add_base(base_with_tokenizer(tiny_model, tmp_path), name="tiny")
        for seed, name in enumerate(("atlas", "harbor")):
            register_random_task_vector(reg, name, docs, tmp_path, seed)
        shutil.rmtree(memo.home / "cache")  # a teammate's empty cache: the members come from the bucket
        tv = reg.list_task_vectors("atlas")[0].manifest_sha256
        sha = manifest_files(load_manifest(reg.store, tv))["model.safetensors"]
        fault, seen = proxy.fail("GET", sha, "drop", times=1), len(proxy.requests)
        reg.merge(["atlas", "harbor"], strategy="ties", progress=False, evaluate=False)
        # One GET streams the blob and is cut halfway; one ranged GET fetches the rest.
        assert fault.hits == 1 and [m for m, p in proxy.requests[seen:] if sha in p] == ["GET", "GET"]
        assert reg.verify().ok


def test_the_registry_stays_readable_while_the_bucket_is_away(proxied, tiny_model, docs, tmp_path):
    """Rows are in SQL: listings, show, log, the page and --json need no blob; what needs one is one line."""
    memo, proxy = proxied
    with Registry.open(memo.home) as reg:
        reg.add_base(base_with_tokenizer(tiny_model, tmp_path), name="tiny")
        register_random_task_vector(reg, "atlas", docs, tmp_path, 0)
        reg.merge(["atlas"], strategy="ties", channel="production", progress=False, evaluate=False)
    before = _state(memo)
    for method in ("GET", "HEAD", "PUT", "POST", "DELETE"):
        proxy.fail(method, "/", "500")  # the whole bucket answers errors from now on
    for args in (
        ("base", "list"),
        ("corpus", "list", "--json"),
        ("merge", "list", "--json"),
        ("merge", "show", "1"),
        ("log", "production"),
        ("channel", "list"),
    ):
        assert memo(*args).exit_code == 0
    with Registry.open(memo.home) as reg, TestClient(create_app(reg), base_url="http://localhost") as client:
        for page in ("/", "/merges", "/merges/1", "/corpora/atlas", "/channels/production", "/api/merges/1"):
            assert client.get(page).status_code == 200, page
    assert_one_line_error(memo("verify", ok=False), "cannot list the bucket", "server error")
    assert_one_line_error(memo("corpus", "add", "more", *docs, "--base", "tiny", ok=False), "cannot", "server error")
    proxy.heal()
    assert _state(memo) == before, "nothing was recorded"


def test_an_http_endpoint_works_as_the_aws_tools_take_it(s3_server, monkeypatch, tmp_path, tiny_model):
    """AWS_ENDPOINT_URL=http://... is plain HTTP, as boto3 and the AWS CLI read it: no AWS_ALLOW_HTTP needed."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    memo = Memo(tmp_path / "home", None, s3_server.create_bucket())
    memo("init")
    memo("base", "add", tiny_model, "--name", "tiny")
    assert memo("verify").exit_code == 0


def test_a_missing_bucket_and_a_refused_key_each_name_what_to_check(s3_server, monkeypatch, tmp_path):
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    missing = Memo(tmp_path / "a", None, "s3://no-such-bucket-here/memo")("init", ok=False)
    assert_one_line_error(missing, "no bucket", "AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MEMO_S3_RETRIES", "0")
    unreachable = Memo(tmp_path / "b", None, s3_server.create_bucket())("init", ok=False)
    assert_one_line_error(unreachable, "check that the endpoint answers (http://127.0.0.1:9")
    assert not (tmp_path / "b").exists() or not (tmp_path / "b" / "memo-home.json").exists()
