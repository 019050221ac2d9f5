"""A storage root: a local (or NFS) folder, or a cloud URI (s3://, gs://) through pyarrow filesystems.

The stage cache and the results store speak only this small interface. On a URI, stages still read
and write a local folder (models load with from_pretrained from disk): a completed stage is uploaded
before its marker object is written, and a reused one is downloaded once into a local mirror under
$SEAL_RAY_CACHE (default ~/.cache/seal_ray). Object writes are whole-object PUTs, so a reader never
sees half a file; a local write goes to a temporary name and is renamed.

Processes on one machine share the mirror: a mirrored folder is only written under an exclusive flock
on `<folder>.lock` (`folder_lock`), so two of them never download or compute into the same folder.
A lease object needs a write that only one writer can win: `create_if_absent`, `replace_if` and
`delete_if`. On S3 (and on S3-compatible stores that honour the headers) they are conditional PUTs and
DELETEs (`If-None-Match: *`, `If-Match: <ETag>`) through boto3, with pyarrow's credentials and region
settings (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); elsewhere (gs:// through pyarrow, a local
folder) they write, then read back to confirm, which is best effort (`exclusive_writes` says which).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import pyarrow.fs as pafs

from seal_ray.errors import UserError


def is_uri(root: str | Path) -> bool:
    return "://" in str(root)


def cache_root() -> Path:
    return Path(os.environ.get("SEAL_RAY_CACHE", Path.home() / ".cache" / "seal_ray")).expanduser()


def lock_path(folder: Path) -> Path:
    """The lock file that guards `folder` (beside it, so clearing the folder keeps the lock)."""
    return folder.with_name(f"{folder.name}.lock")


@contextlib.contextmanager
def folder_lock(folder: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold the exclusive flock that guards `folder`; `on_wait` is called once if another process holds it.

    The kernel releases a flock when its holder dies (kill -9 included), so a crash never leaves it held.
    """
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Storage:
    def __init__(self, root: str | Path):
        text = str(root).rstrip("/")
        self.is_local = not is_uri(text)
        if self.is_local:
            self.local_root = Path(text).expanduser().resolve()
            self.uri = str(self.local_root)
            self.fs = None
            self.base = ""
        else:
            try:
                self.fs, self.base = pafs.FileSystem.from_uri(text)
            except (pafs.ArrowInvalid if hasattr(pafs, "ArrowInvalid") else ValueError, OSError, ValueError) as err:
                raise UserError(f"storage {text}: cannot open it: {err}") from None
            self.uri = text
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            self.local_root = cache_root() / "mirrors" / f"{text.split('://')[0]}-{digest}"
        self._s3 = None  # the boto3 client of the conditional writes, made on first use

    @property
    def exclusive_writes(self) -> bool:
        """Whether `create_if_absent` / `replace_if` are enforced by the store (exactly one racer wins)."""
        return not self.is_local and self.fs.type_name == "s3" and _boto3_installed()

    def child(self, rel: str) -> "Storage":
        return Storage(self._uri_of(rel) if not self.is_local else self.local_root / rel)

    def _uri_of(self, rel: str) -> str:
        return f"{self.uri}/{rel}" if rel else self.uri

    def _remote(self, rel: str) -> str:
        return f"{self.base}/{rel}".rstrip("/") if rel else self.base

    def local_path(self, rel: str = "") -> Path:
        """Where `rel` lives on this machine: the folder itself, or its mirror for a URI."""
        return self.local_root / rel if rel else self.local_root

    # --- small objects ------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return self.local_path(rel).exists()
        return self.fs.get_file_info(self._remote(rel)).type != pafs.FileType.NotFound

    def read_text(self, rel: str) -> str | None:
        if self.is_local:
            path = self.local_path(rel)
            return path.read_text() if path.is_file() else None
        try:
            with self.fs.open_input_stream(self._remote(rel)) as stream:
                return stream.read().decode()
        except FileNotFoundError:
            return None
        except OSError as err:
            if "NoSuchKey" in str(err) or "not found" in str(err).lower():
                return None
            raise

    def write_text(self, rel: str, text: str) -> None:
        if self.is_local:
            path = self.local_path(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            partial.write_text(text)
            os.replace(partial, path)
            return
        with self.fs.open_output_stream(self._remote(rel)) as stream:
            stream.write(text.encode())

    def delete(self, rel: str) -> None:
        if self.is_local:
            self.local_path(rel).unlink(missing_ok=True)
        elif self.exists(rel):
            self.fs.delete_file(self._remote(rel))

    # --- conditional writes (a lease object) ---------------------------------------------------
    # The version of an object is its S3 ETag; in the best-effort fallback, its text (a lease's text
    # names its owner and time, so it is unique).

    def create_if_absent(self, rel: str, text: str) -> str | None:
        """Write `rel` only if no object has that name: its version if this call created it, else None."""
        if self.exclusive_writes:
            return self._s3_put(rel, text, IfNoneMatch="*")
        if self._read_contended(rel) is not None:
            return None
        self.write_text(rel, text)
        return text if self._read_contended(rel) == text else None

    def read_versioned(self, rel: str) -> tuple[str, str] | None:
        """(text, version) of `rel`, or None when it does not exist."""
        if not self.exclusive_writes:
            text = self._read_contended(rel)
            return None if text is None else (text, text)
        try:
            reply = self._s3_client().get_object(**self._s3_location(rel))
        except _s3_errors() as err:
            if _s3_code(err) in {"NoSuchKey", "404"}:
                return None
            raise
        return reply["Body"].read().decode(), reply["ETag"]

    def replace_if(self, rel: str, text: str, version: str) -> str | None:
        """Overwrite `rel` only if its version is still `version`: the new version, or None if it changed."""
        if self.exclusive_writes:
            return self._s3_put(rel, text, IfMatch=version)
        if self._read_contended(rel) != version:
            return None
        self.write_text(rel, text)
        return text if self._read_contended(rel) == text else None

    def delete_if(self, rel: str, version: str) -> None:
        """Delete `rel` only if its version is still `version` (a lease taken over is left to its new holder)."""
        if not self.exclusive_writes:
            if self._read_contended(rel) == version:
                self.delete(rel)
            return
        try:
            self._s3_client().delete_object(**self._s3_location(rel), IfMatch=version)
        except _s3_errors() as err:
            if _s3_code(err) not in _S3_LOST:
                raise

    def _read_contended(self, rel: str, tries: int = 5) -> str | None:
        """`read_text` of an object others may be replacing: pyarrow fails a read whose object changed
        size between its HEAD and its GET ("Failed to flush response stream"); read again."""
        for attempt in range(tries):
            try:
                return self.read_text(rel)
            except OSError:
                if attempt == tries - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return None

    def _s3_put(self, rel: str, text: str, **condition: str) -> str | None:
        try:
            return self._s3_client().put_object(**self._s3_location(rel), Body=text.encode(), **condition)["ETag"]
        except _s3_errors() as err:
            if _s3_code(err) in _S3_LOST:
                return None
            raise

    def _s3_location(self, rel: str) -> dict[str, str]:
        bucket, _, key = self._remote(rel).partition("/")
        return {"Bucket": bucket, "Key": key}

    def _s3_client(self):
        if self._s3 is None:
            import boto3

            # The endpoint and credentials come from the same environment pyarrow reads
            # (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); the region is the one pyarrow resolved.
            self._s3 = boto3.session.Session().client("s3", region_name=self.fs.region)
        return self._s3

    def list_names(self, rel: str) -> list[str]:
        """Names of the entries directly under `rel` (empty when it does not exist)."""
        if self.is_local:
            path = self.local_path(rel)
            return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        infos = self.fs.get_file_info(pafs.FileSelector(self._remote(rel), allow_not_found=True))
        return sorted(info.base_name for info in infos)

    # --- whole folders (a remote root only) --------------------------------------------------

    def upload_dir(self, local: Path, rel: str, skip: set[str] = frozenset()) -> None:
        for path in sorted(local.rglob("*")):
            relative = path.relative_to(local)
            if path.is_file() and relative.parts[0] not in skip and not path.name.endswith(".partial"):
                self.upload_file(path, f"{rel}/{relative.as_posix()}")

    def upload_file(self, local: Path, rel: str) -> None:
        pafs.copy_files(str(local), self._remote(rel), destination_filesystem=self.fs)

    def download_dir(self, rel: str, local: Path) -> None:
        infos = self.fs.get_file_info(pafs.FileSelector(self._remote(rel), recursive=True, allow_not_found=True))
        prefix = self._remote(rel) + "/"
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            target = local / info.path[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            pafs.copy_files(info.path, str(partial), source_filesystem=self.fs)
            os.replace(partial, target)

    def ensure_local(self, rel: str, marker: str) -> Path:
        """The local copy of a completed remote folder (downloaded once; `marker` last)."""
        local = self.local_path(rel)
        if self.is_local or (local / marker).is_file():
            return local
        # Under the folder's lock: another process on this machine may be downloading or finishing it.
        with folder_lock(local):
            if (local / marker).is_file():
                return local
            if local.exists():
                shutil.rmtree(local)
            self.download_dir(rel, local)
        return local

    def check_writable(self) -> None:
        """Fail before any work when this root cannot be written."""
        probe = ".seal-ray-write-check"
        try:
            self.write_text(probe, "ok")
            self.delete(probe)
        except OSError as err:
            raise UserError(f"storage {self.uri}: not writable ({getattr(err, 'strerror', None) or err})") from None
        if self.is_local:
            free = shutil.disk_usage(self.local_root).free
            if free < 200 * 2**20:
                raise UserError(f"storage {self.uri}: only {free / 2**20:.0f} MiB free; a sweep needs at least 200 MiB")


# S3 error codes that mean "the condition did not hold" (412; 409 when a concurrent conditional write
# to the same key is in flight; 404 when the object is gone): the caller lost, nothing is wrong.
_S3_LOST = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}


@functools.cache
def _boto3_installed() -> bool:
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


def _s3_errors() -> type[Exception]:
    from botocore.exceptions import ClientError

    return ClientError


def _s3_code(err: Exception) -> str:
    return str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
