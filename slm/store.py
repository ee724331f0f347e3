"""One store for runs, datasets, checkpoints and champions: a local directory or `s3://bucket/prefix`.

Keys are '/'-separated paths below the store's root. Multi-file artifacts (checkpoints, models,
datasets) are written as a *tree*: every file first, then `_COMPLETE.json` (names, sizes, sha256)
last. Readers only trust trees with that marker, so a half-uploaded checkpoint is never used.

S3 goes through boto3, which takes the endpoint and credentials from the standard AWS environment
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, profiles).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from slm.errors import UserError, redact_url
from slm.log import log

COMPLETE = "_COMPLETE.json"


class TransferProgress:
    """Bytes and MB/s of a tree transfer: a line every PERIOD seconds while it runs and one at the end,
    for transfers of at least MIN_BYTES (markers, records and small JSON stay quiet). boto3 calls it
    from its transfer threads with the bytes each chunk moved, hence the lock."""

    PERIOD = 10.0
    MIN_BYTES = 8 << 20

    def __init__(self, verb: str, what: str, total: int):
        self.verb, self.what, self.total = verb, what, total
        self.done, self.start = 0, time.perf_counter()
        self.shown = self.start
        self.lock = threading.Lock()

    def __call__(self, moved: int) -> None:
        with self.lock:
            self.done += moved
            now = time.perf_counter()
            if self.total >= self.MIN_BYTES and now - self.shown >= self.PERIOD:
                self.shown = now
                log(
                    f"[store] {self.verb} {self.what}: {self.done / 1e6:,.0f} / {self.total / 1e6:,.0f} MB "
                    f"({self.done / max(self.total, 1):.0%}), {self.rate():,.1f} MB/s"
                )

    def rate(self) -> float:
        return self.done / 1e6 / max(time.perf_counter() - self.start, 1e-9)

    def finish(self) -> None:
        if self.total >= self.MIN_BYTES:
            log(
                f"[store] {self.verb} {self.what}: {self.done / 1e6:,.1f} MB in "
                f"{time.perf_counter() - self.start:.1f}s ({self.rate():,.1f} MB/s)"
            )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def safe_key(key: str) -> str:
    """A key stays below the store's root: no `..` segment, whatever joined it."""
    if any(part == ".." for part in key.split("/")):
        raise UserError(f"store key {key!r} would leave the store (a '..' segment)")
    return key.strip("/")


class Store:
    """Base class; use `Store.open(uri)`."""

    uri: str

    @staticmethod
    def open(uri: str) -> Store:
        if uri.startswith("s3://"):
            if "@" in uri[len("s3://") :].split("/", 1)[0]:
                raise UserError(
                    f"store {redact_url(uri)}: credentials in an s3:// URL are refused (they would end up in logs "
                    f"and records); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                )
            bucket, _, prefix = uri[len("s3://") :].partition("/")
            if ".." in prefix.split("/") or "." in prefix.split("/"):
                raise UserError(
                    f"store {redact_url(uri)}: an S3 key prefix has no '.' or '..' segments (keys are not paths)"
                )
            return S3Store(uri)
        if "://" in uri:
            raise UserError(f"store {uri!r}: only local directories and s3:// are supported")
        return LocalStore(uri)

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key.strip('/')}"

    def check_writable(self) -> None:
        """One small write, read back and delete, before work that would otherwise fail at its first save."""
        import uuid

        key = f".write-probe-{uuid.uuid4().hex}"
        try:
            self.write_bytes(key, b"probe")
            if self.read_bytes(key) != b"probe":
                raise UserError(f"store {self.uri}: a probe written to {self.url(key)} read back different")
        except UserError:
            raise
        except Exception as exc:  # PermissionError, S3 AccessDenied, a read-only bucket: the store is not usable
            raise UserError(
                f"store {self.uri} does not take writes ({type(exc).__name__}: "
                f"{redact_url(str(exc).splitlines()[0] if str(exc) else '')})"
            ) from None
        finally:
            try:
                self.delete_prefix(key)
            except Exception:
                pass

    # --- primitives each backend implements -------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    # `progress`, when given, is called with the bytes moved as they move (TransferProgress).
    def upload_file(self, local: Path, key: str, progress: Callable[[int], None] | None = None) -> None:
        raise NotImplementedError

    def download_file(self, key: str, local: Path, progress: Callable[[int], None] | None = None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError  # one object; absent is fine

    def list(self, prefix: str) -> list[str]:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def etag(self, key: str) -> str:
        raise NotImplementedError  # changes when the object does

    def delete_prefix(self, prefix: str) -> None:
        raise NotImplementedError

    # Two writers of one key (two promotions at once, a promotion and a rollback) must not both succeed
    # unseen: a version is claimed by creating its key only if absent, and a pointer moves only from the
    # content its writer read (compare-and-swap). `tag` is opaque: None for an absent key.
    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist; False (nothing written) when it does."""
        raise NotImplementedError

    def read_tagged(self, key: str) -> tuple[bytes | None, str | None]:
        """(content, tag) of `key`, (None, None) when absent; the tag goes to write_if."""
        raise NotImplementedError

    def write_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Write `key` only if it is still what read_tagged saw (`tag`; None: still absent); False when
        another writer got there first (nothing written)."""
        raise NotImplementedError

    # --- built on the primitives ------------------------------------------------------------
    def read_json(self, key: str):
        try:
            return json.loads(self.read_bytes(key))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{self.url(key)}: not valid JSON ({exc}); the store holds a damaged file") from None

    def write_json(self, key: str, obj) -> None:
        self.write_bytes(key, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    def children(self, prefix: str) -> list[str]:
        """Names directly below `prefix` (files and sub-directories)."""
        prefix = prefix.strip("/") + "/"
        names = {k[len(prefix) :].split("/", 1)[0] for k in self.list(prefix)}
        return sorted(n for n in names if n)

    def is_complete(self, prefix: str) -> bool:
        return self.exists(_join(prefix, COMPLETE))

    def verify_in_place(self, prefix: str, include=None) -> None:
        """The tree's files as they are in the store against the checksums its marker recorded (a file
        changed after the tree was written is one line naming it). A remote store's files are checked
        when they are fetched (get_tree), so only a store with files of its own (local) reads them here."""

    def local_path(self, key: str) -> Path | None:
        """Where a key's files lie on this machine, for a store that has files of its own (local)."""
        return None

    def tree_manifest(self, prefix: str) -> dict:
        if not self.is_complete(prefix):
            raise UserError(f"{self.url(prefix)} is missing or incomplete (no {COMPLETE})")
        return self.read_json(_join(prefix, COMPLETE))

    def upload_files(self, local_dir: Path, prefix: str, exclude: Iterable[str] = (), summary: bool = True) -> dict:
        """Upload every file below local_dir (no marker). Returns {relative path: {sha256, size}}.
        summary=False: no closing size-and-rate line (the caller logs its own, as checkpoints do)."""
        local_dir = Path(local_dir)
        excluded = tuple(exclude)
        paths = [
            p
            for p in sorted(local_dir.rglob("*"))
            if p.is_file()
            and (rel := p.relative_to(local_dir).as_posix()) != COMPLETE
            and not any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in excluded)
        ]
        progress = TransferProgress("↑", self.url(prefix), sum(p.stat().st_size for p in paths))
        files = {}
        for path in paths:
            rel = path.relative_to(local_dir).as_posix()
            self.upload_file(path, _join(prefix, rel), progress)
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        if summary:
            progress.finish()
        return files

    def mark_complete(self, prefix: str, files: dict, meta: dict | None = None) -> dict:
        """Write the completion marker, last: from now on readers trust the tree."""
        manifest = {"files": files, **(meta or {})}
        self.write_json(_join(prefix, COMPLETE), manifest)
        return manifest

    def put_tree(self, local_dir: Path, prefix: str, exclude: Iterable[str] = (), meta: dict | None = None) -> dict:
        """Upload every file below local_dir, then the completion marker. Returns the manifest.

        A tree written by several nodes (a multi-node checkpoint) calls `upload_files` on each node
        and `mark_complete` once with every node's files."""
        files = self.upload_files(local_dir, prefix, exclude)
        if not files:
            raise UserError(f"nothing to upload from {local_dir}")
        return self.mark_complete(prefix, files, meta)

    def get_tree(self, prefix: str, local_dir: Path, include=None) -> dict:
        """Download a complete tree (optionally only files whose name passes `include`), verifying sha256."""
        manifest = self.tree_manifest(prefix)
        local_dir = Path(local_dir)
        wanted = []
        for rel, info in manifest["files"].items():
            if include is not None and not include(rel):
                continue
            dest = local_dir / rel
            if dest.is_file() and dest.stat().st_size == info["size"] and sha256_file(dest) == info["sha256"]:
                continue
            wanted.append((rel, info, dest))
        progress = TransferProgress("↓", self.url(prefix), sum(info["size"] for _, info, _ in wanted))
        for rel, info, dest in wanted:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.download_file(_join(prefix, rel), dest, progress)
            if sha256_file(dest) != info["sha256"]:
                raise UserError(f"checksum mismatch for {self.url(_join(prefix, rel))}")
        progress.finish()
        return manifest


class LocalStore(Store):
    def __init__(self, root: str):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"store {root!r} is a file ({self.root}), not a directory")

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def local_path(self, key):
        return self._path(key)

    def verify_in_place(self, prefix: str, include=None) -> None:
        # The marker records size and sha256 only: the size is checked first, then the content is hashed
        # (about 1 s per GB), so a byte flipped inside a weights file is caught, not only a truncation.
        for rel, info in self.tree_manifest(prefix)["files"].items():
            if include is not None and not include(rel):
                continue
            path = self._path(_join(prefix, rel))
            if not path.is_file():
                raise UserError(f"{path}: missing; its tree's {COMPLETE} lists it")
            if path.stat().st_size != info["size"] or sha256_file(path) != info["sha256"]:
                raise UserError(
                    f"{path}: does not match the checksum its tree's {COMPLETE} recorded (changed after it "
                    f"was written); refusing to use it"
                )

    def read_bytes(self, key):
        path = self._path(key)
        if not path.is_file():
            raise UserError(f"not found in store: {path}")
        return path.read_bytes()

    @contextlib.contextmanager
    def _no_partial_file(self, key: str, tmp: Path):
        """A write that fails (a full disk, Ctrl-C) leaves no half-written temporary file in the store,
        and a full disk is named as the store's, not as a temporary path."""
        try:
            yield
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise UserError(
                    f"store {self.uri}: no space left on its device writing {key}; nothing half-written was "
                    "kept, and what was being written has no completion marker"
                ) from None
            raise

    def create_exclusive(self, key, data):
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)  # atomic and exclusive: the whole file appears, or EEXIST
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def read_tagged(self, key):
        path = self._path(key)
        if not path.is_file():
            return None, None
        data = path.read_bytes()
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, key, data, tag):
        import fcntl

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # flock on the key's directory serialises the compare and the replace among writers of this store
        # (readers need no lock: os.replace is atomic), without a lock file left in the store.
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.read_tagged(key)[1] != tag:
                return False
            self.write_bytes(key, data)
            return True
        finally:
            os.close(fd)  # releases the lock

    def write_bytes(self, key, data):
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with self._no_partial_file(key, tmp):
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: readers see the old or the new file, never half of one

    def upload_file(self, local, key, progress=None):
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with self._no_partial_file(key, tmp):
            shutil.copyfile(local, tmp)
            os.replace(tmp, path)
        if progress:
            progress(path.stat().st_size)

    def download_file(self, key, local, progress=None):
        src = self._path(key)
        if not src.is_file():
            raise UserError(f"not found in store: {src}")
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, local)
        if progress:
            progress(src.stat().st_size)

    def delete(self, key):
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix):
        base = self._path(prefix)
        if base.is_file():
            return [prefix.strip("/")]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file() and ".tmp-" not in p.name
        )

    def exists(self, key):
        return self._path(key).exists()

    def etag(self, key):
        stat = self._path(key).stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def delete_prefix(self, prefix):
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _shown_endpoint() -> str:
    """The configured S3 endpoint as a message may show it: redacted, and not echoed at all when it
    is not an http(s) URL (it may be a pasted secret)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return "(AWS's default)"
    return (
        redact_url(endpoint)
        if re.match(r"https?://[\w.\-\[\]:]+(/|$)", redact_url(endpoint))
        else "<not an http(s) URL>"
    )


_REACHABLE: set[tuple[str, str]] = set()  # (endpoint, bucket) pairs this process has reached


class S3Store(Store):
    def __init__(self, uri: str):
        import boto3
        from botocore.config import Config

        rest = uri[len("s3://") :]
        self.bucket, _, self.prefix = rest.partition("/")
        if not self.bucket:
            raise UserError(f"store {uri!r}: no bucket name")
        self.prefix = self.prefix.strip("/")
        self.uri = uri.rstrip("/")
        # A session of its own: boto3's default session caches the first credentials it resolved.
        session = boto3.session.Session()
        addressing = {"addressing_style": os.environ.get("SLM_S3_ADDRESSING_STYLE", "path")}
        try:
            self.client = session.client(
                "s3", config=Config(retries={"max_attempts": 8, "mode": "standard"}, s3=addressing)
            )
            probe = session.client("s3", config=Config(retries={"max_attempts": 2}, s3=addressing))
        except Exception as exc:  # a malformed AWS_ENDPOINT_URL, an unknown region: boto3 raises several types
            raise UserError(
                f"store {self.uri}: cannot make an S3 client for endpoint {_shown_endpoint()} "
                f"(AWS_ENDPOINT_URL): {type(exc).__name__}"
            ) from None
        self._check_reachable(probe)

    def _check_reachable(self, probe) -> None:
        """Once per process and bucket: no credentials, no server at the endpoint and no such bucket are
        one line naming the store, not a traceback from the first read deep inside a stage."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            EndpointResolutionError,
            NoCredentialsError,
        )

        endpoint = probe.meta.endpoint_url
        if (endpoint, self.bucket) in _REACHABLE:
            return
        shown = redact_url(endpoint)
        try:
            probe.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise UserError(
                f"store {self.uri}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            ) from None
        except EndpointConnectionError:
            raise UserError(f"store {self.uri}: cannot reach the S3 endpoint {shown} (AWS_ENDPOINT_URL)") from None
        except (EndpointResolutionError, ValueError) as exc:
            raise UserError(
                f"store {self.uri}: the S3 endpoint {_shown_endpoint()} (AWS_ENDPOINT_URL) is not usable: "
                f"{type(exc).__name__}"
            ) from None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                raise UserError(f"store {self.uri}: bucket {self.bucket!r} does not exist at {shown}") from None
            # 403 and the like: some credentials may read objects without HeadBucket; let the reads decide
        _REACHABLE.add((endpoint, self.bucket))

    def _key(self, key: str) -> str:
        return _join(self.prefix, safe_key(key))

    def _rel(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _missing(self, exc) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("NoSuchKey", "404", "NotFound")

    def read_bytes(self, key):
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if self._missing(exc):
                raise UserError(f"not found in store: {self.url(key)}") from None
            raise

    def write_bytes(self, key, data):
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def _conditional_put(self, key: str, data: bytes, **condition) -> bool:
        """S3 conditional writes (If-None-Match / If-Match on PutObject): 412 means another writer won."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise

    def create_exclusive(self, key, data):
        return self._conditional_put(key, data, IfNoneMatch="*")

    def read_tagged(self, key):
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if self._missing(exc):
                return None, None
            raise
        return obj["Body"].read(), obj["ETag"]

    def write_if(self, key, data, tag):
        return self._conditional_put(key, data, **({"IfMatch": tag} if tag else {"IfNoneMatch": "*"}))

    def upload_file(self, local, key, progress=None):
        self.client.upload_file(str(local), self.bucket, self._key(key), Callback=progress)

    def download_file(self, key, local, progress=None):
        from botocore.exceptions import ClientError

        Path(local).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._key(key), str(local), Callback=progress)
        except ClientError as exc:
            if self._missing(exc):
                raise UserError(f"not found in store: {self.url(key)}") from None
            raise

    def list(self, prefix):
        full = self._key(prefix)
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys += [self._rel(obj["Key"]) for obj in page.get("Contents", [])]
        return sorted(
            k for k in keys if k == prefix.strip("/") or k.startswith(prefix.strip("/") + "/") or not prefix.strip("/")
        )

    def exists(self, key):
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if not self._missing(exc):
                raise
        return bool(self.list(key))

    def etag(self, key):
        return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ETag"]

    def delete(self, key):
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix):
        keys = [self._key(k) for k in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})


def cache_dir() -> Path:
    """Node-local cache for trees fetched from the store (models, datasets)."""
    root = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache" / "slm"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def fetch_tree_cached(store: Store, prefix: str, include=None) -> Path:
    """Download a complete tree into the node-local cache once (file lock: safe across ranks)."""
    from filelock import FileLock

    manifest = store.tree_manifest(prefix)
    digest = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()[:16]
    dest = cache_dir() / "trees" / digest
    with FileLock(str(dest) + ".lock"):
        store.get_tree(prefix, dest, include=include)
    return dest
