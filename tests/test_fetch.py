"""fetch: mirrors in order with retries, checksums, atomic writes, local mirror."""

import hashlib
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import FIXTURE_DIR, TINY_PARAMS
from pipeline import config
from pipeline.stages import fetch
from pipeline.runtime import StageError


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; paths under /flaky/ fail the first N requests with 503."""

    failures_left = 0

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/flaky/"):
            if type(self).failures_left > 0:
                type(self).failures_left -= 1
                self.send_error(503, "try later")
                return
            self.path = self.path.removeprefix("/flaky")
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.removeprefix("/truncated/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])  # connection drops mid-file
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """An HTTP mirror on 127.0.0.1 serving the tiny fixture."""
    _Handler.failures_left = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(FIXTURE_DIR)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _params(mirrors=(), mirror_dir=None, retries=2):
    params = config.load(TINY_PARAMS)
    ds = params.datasets["tiny"]
    import dataclasses
    ds = dataclasses.replace(ds, mirrors=tuple(mirrors))
    fetch_cfg = dataclasses.replace(params.fetch, mirror_dir=mirror_dir, retries=retries,
                                    backoff_s=0.01, timeout_s=5.0)
    return dataclasses.replace(params, datasets={"tiny": ds}, fetch=fetch_cfg)


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)


def test_downloads_from_the_first_working_mirror(server, tmp_path):
    params = _params([f"{server}/missing/", f"{server}/"])
    summary = fetch.run(params, tmp_path / "raw")
    for role in config.FILE_ROLES:
        name = params.dataset.file_name(role)
        assert fetch.sha256_of(tmp_path / "raw" / name) == params.dataset.sha256(role)
        assert summary[name]["source"] == f"{server}/{name}"
    assert not list((tmp_path / "raw").glob("*.part"))


def test_retries_a_flaky_mirror_with_backoff(server, tmp_path):
    _Handler.failures_left = 1
    params = _params([f"{server}/flaky/"], retries=2)
    fetch.run(params, tmp_path / "raw")
    assert len(list((tmp_path / "raw").iterdir())) == 4


def test_all_mirrors_failing_names_the_file(server, tmp_path):
    params = _params([f"{server}/nope/"], retries=2)
    with pytest.raises(StageError, match=r"train-images-idx3-ubyte.gz: every mirror failed \(2 attempts"):
        fetch.run(params, tmp_path / "raw")
    assert not any((tmp_path / "raw").iterdir())


def test_interrupted_download_leaves_no_partial_file(server, tmp_path):
    params = _params([f"{server}/truncated/"], retries=1)
    with pytest.raises(StageError):
        fetch.run(params, tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []


def test_local_mirror_is_used_instead_of_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv(config.MIRROR_ENV, str(FIXTURE_DIR))
    params = _params(["http://127.0.0.1:9/never-used/"])
    summary = fetch.run(params, tmp_path / "raw")
    assert all(str(FIXTURE_DIR) in s["source"] for s in summary.values())


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(FIXTURE_DIR, mirror)
    bad = mirror / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-3] + b"\x00\x00\x00")
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    out = tmp_path / "raw"
    out.mkdir()
    (out / "train-labels-idx1-ubyte.gz").write_bytes(b"previous good file")
    params = _params(mirror_dir=str(mirror))
    with pytest.raises(StageError) as err:
        fetch.run(params, out)
    msg = str(err.value)
    assert "train-labels-idx1-ubyte.gz" in msg and "checksum mismatch" in msg
    assert params.dataset.sha256("train_labels") in msg and actual in msg
    assert "\n" not in msg
    assert not list(out.glob("*.part"))


def test_missing_file_in_local_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(FIXTURE_DIR, mirror)
    (mirror / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(StageError, match=r"t10k-images-idx3-ubyte.gz: file is missing from the local mirror"):
        fetch.run(_params(mirror_dir=str(mirror)), tmp_path / "raw")


def test_missing_mirror_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="local mirror folder does not exist"):
        fetch.run(_params(mirror_dir=str(tmp_path / "nowhere")), tmp_path / "raw")


def _unpinned(mirror: Path):
    """The tiny dataset with no SHA-256 pinned: the mirror may change under it."""
    import dataclasses
    params = _params(mirror_dir=str(mirror))
    files = {role: (name, None) for role, (name, _) in params.dataset.files.items()}
    return dataclasses.replace(params, datasets={"tiny": dataclasses.replace(params.dataset,
                                                                             files=files)})


def test_an_unpinned_source_that_changed_is_fetched_again(tmp_path):
    mirror = Path(shutil.copytree(FIXTURE_DIR, tmp_path / "mirror"))
    params, out = _unpinned(mirror), tmp_path / "raw"
    first = fetch.run(params, out)
    assert not first["train-labels-idx1-ubyte.gz"]["pinned"]
    kept = (out / "train-images-idx3-ubyte.gz").stat().st_mtime_ns
    changed = mirror / "train-labels-idx1-ubyte.gz"
    changed.write_bytes(changed.read_bytes()[:-1] + b"\x01")
    again = fetch.run(params, out)
    assert again["train-labels-idx1-ubyte.gz"]["sha256"] == fetch.sha256_of(changed) != \
        first["train-labels-idx1-ubyte.gz"]["sha256"]
    assert (out / "train-labels-idx1-ubyte.gz").read_bytes() == changed.read_bytes()
    # an unchanged file is left as it was (DVC finds the same hash)
    assert again["train-images-idx3-ubyte.gz"]["source"].endswith(", unchanged")
    assert (out / "train-images-idx3-ubyte.gz").stat().st_mtime_ns == kept


def test_null_sha256_is_allowed_and_a_bad_one_is_named(tmp_path):
    pinned = config.load(TINY_PARAMS).dataset.sha256("test_labels")
    params = tmp_path / "params.yaml"
    shutil.copy(TINY_PARAMS, params)
    params.write_text(params.read_text().replace(pinned, "null"))
    assert config.load(params).dataset.sha256("test_labels") is None
    params.write_text(params.read_text().replace("t10k-labels-idx1-ubyte.gz, null",
                                                 "t10k-labels-idx1-ubyte.gz, abc"))
    with pytest.raises(config.ConfigError, match="datasets.tiny.files.test_labels"):
        config.load(params)


def test_the_fingerprint_of_a_source_changes_only_with_its_files(tmp_path, server):
    mirror = Path(shutil.copytree(FIXTURE_DIR, tmp_path / "mirror"))
    params = _params(mirror_dir=str(mirror))
    before = fetch.fingerprint(params)
    assert fetch.fingerprint(params) == before and before["source"] == str(mirror)
    (mirror / "t10k-images-idx3-ubyte.gz").write_bytes(b"new data")
    after = fetch.fingerprint(params)
    assert after != before and after["files"]["t10k-images-idx3-ubyte.gz"] == \
        hashlib.sha256(b"new data").hexdigest()
    # over HTTP: what the first mirror that answers says of each file, nothing downloaded
    served = fetch.fingerprint(_params([f"{server}/missing/", f"{server}/"]))
    assert served["source"] == f"{server}/"
    assert all(tag.endswith(str((FIXTURE_DIR / n).stat().st_size))
               for n, tag in served["files"].items())
    with pytest.raises(StageError, match="no mirror answered"):
        fetch.fingerprint(_params([f"{server}/missing/"]))
