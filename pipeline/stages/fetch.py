"""Stage ``fetch``: get the dataset's four IDX ``.gz`` files, verified.

Params: ``fetch`` (dataset, mirror_dir, retries, backoff_s, timeout_s) and the
chosen entry of ``datasets`` (mirrors, file names, SHA-256 sums or null).
Env: ``DATA_MIRROR_DIR`` (a local mirror folder; wins over ``fetch.mirror_dir``).
Output: ``data/raw/`` holding the four files under their published names.

Public mirrors come and go (LeCun's own site now often answers 403), so the
stage tries a list of them in order, retrying each with exponential back-off.
Every file is written to a ``.part`` file, checked against its published
SHA-256 and only then renamed into place: the next stage never reads a
partial or unverified file. A machine without internet points the stage at a
local mirror folder instead; the checksums make both paths give identical bytes.

A file whose SHA-256 is null is not pinned: its source may change (new data
arriving), so it is fetched every time and replaces the old one only when its
bytes differ; DVC's hash of ``data/raw`` then decides what reruns downstream.
The Airflow task reruns this stage on every run to see such a change, and the
``retrain_watch`` DAG asks ``fingerprint`` whether the source changed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path

import requests
from tqdm import tqdm

from pipeline import config
from pipeline import runtime
from pipeline.runtime import StageError

log = logging.getLogger("pipeline.stages.fetch")
CHUNK = 1 << 16


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str, shown_as: str | None = None) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise StageError(f"{shown_as or path}: checksum mismatch: expected sha256 "
                         f"{expected}, got {actual}")


def _download(url: str, dest: Path, timeout_s: float) -> None:
    with requests.get(url, stream=True, timeout=timeout_s) as resp:
        resp.raise_for_status()
        total = int(resp.headers.get("content-length", 0)) or None
        with open(dest, "wb") as fh, tqdm(total=total, unit="B", unit_scale=True,
                                          desc=dest.name.removesuffix(".part"),
                                          mininterval=1.0) as bar:
            for block in resp.iter_content(CHUNK):
                fh.write(block)
                bar.update(len(block))


def _from_mirrors(name: str, part: Path, cfg: config.FetchConfig,
                  mirrors: tuple[str, ...]) -> str:
    """Download ``name`` into ``part``; return the URL that worked."""
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        wait = cfg.backoff_s
        for attempt in range(1, cfg.retries + 1):
            try:
                _download(url, part, cfg.timeout_s)
                return url
            except requests.RequestException as exc:
                failures.append(f"{url}: {exc}")
                log.warning("fetch: %s attempt %d/%d failed: %s", url, attempt, cfg.retries, exc)
                if attempt < cfg.retries:
                    time.sleep(wait)
                    wait *= 2
    raise StageError(f"{name}: every mirror failed ({len(failures)} attempts; "
                     f"last: {failures[-1] if failures else 'no mirrors configured'})")


def fetch_file(name: str, sha256: str | None, out_dir: Path, cfg: config.FetchConfig,
               mirrors: tuple[str, ...], mirror_dir: Path | None) -> str:
    """Put a verified (or, with ``sha256`` None, the source's latest) ``out_dir/name`` in
    place; return where it came from."""
    final = out_dir / name
    if sha256 and final.exists() and sha256_of(final) == sha256:
        return "already present"
    part = out_dir / f".{name}.part"
    try:
        if mirror_dir is not None:
            src = mirror_dir / name
            if not src.is_file():
                raise StageError(f"{src}: file is missing from the local mirror")
            shutil.copyfile(src, part)
            source = str(src)
        else:
            source = _from_mirrors(name, part, cfg, mirrors)
        if sha256:
            verify(part, sha256, shown_as=f"{name} (from {source})")
        elif final.exists() and sha256_of(final) == sha256_of(part):
            return f"{source}, unchanged"
        part.replace(final)
        return source
    finally:
        part.unlink(missing_ok=True)


def run(params: config.Params, out_dir: Path = config.RAW_DIR) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, mirror_dir = params.dataset, params.mirror_dir()
    if mirror_dir is not None and not mirror_dir.is_dir():
        raise StageError(f"{mirror_dir}: local mirror folder does not exist "
                         f"(set by {config.MIRROR_ENV} or fetch.mirror_dir)")
    summary = {}
    for role in config.FILE_ROLES:
        name, sha = dataset.file_name(role), dataset.sha256(role)
        source = fetch_file(name, sha, out_dir, params.fetch, dataset.mirrors, mirror_dir)
        got = sha or sha256_of(out_dir / name)
        log.info("fetch: %s %s (%s)", name, "verified" if sha else f"not pinned, sha256 {got}",
                 source)
        summary[name] = {"source": source, "sha256": got, "pinned": bool(sha)}
    return summary


def fingerprint(params: config.Params) -> dict:
    """What the dataset's source serves now, without downloading it: each file's SHA-256 in
    a local mirror, else its ETag, Last-Modified and size from the first mirror that answers."""
    dataset, mirror_dir = params.dataset, params.mirror_dir()
    names = [dataset.file_name(role) for role in config.FILE_ROLES]
    if mirror_dir is not None:
        return {"source": str(mirror_dir), "files": {
            n: sha256_of(mirror_dir / n) if (mirror_dir / n).is_file() else "missing"
            for n in names}}
    failures = []
    for base in dataset.mirrors:
        try:
            heads = {n: requests.head(base.rstrip("/") + "/" + n, allow_redirects=True,
                                      timeout=params.fetch.timeout_s) for n in names}
            for resp in heads.values():
                resp.raise_for_status()
        except requests.RequestException as exc:
            failures.append(f"{base}: {exc}")
            continue
        return {"source": base, "files": {n: " ".join(r.headers.get(h, "") for h in (
            "ETag", "Last-Modified", "Content-Length")).strip() for n, r in heads.items()}}
    raise StageError(f"{params.fetch.dataset}: no mirror answered "
                     f"({failures[-1] if failures else 'no mirrors configured'})")


def main() -> None:
    runtime.stage_main("fetch", lambda: run(config.load()))


if __name__ == "__main__":
    main()
