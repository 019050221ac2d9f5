"""A storage root: a local (or NFS) folder, or a cloud URI (s3://, gs://) through pyarrow filesystems.

The stage cache and the results store speak only this small interface. On a URI, stages still read
and write a local folder (models load with from_pretrained from disk): a completed stage is uploaded
before its marker object is written, and a reused one is downloaded once into a local mirror under
$SEAL_RAY_CACHE (default ~/.cache/seal_ray). Object writes are whole-object PUTs, so a reader never
sees half a file; a local write goes to a temporary name and is renamed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from seal_ray.errors import UserError


def is_uri(root: str | Path) -> bool:
    return "://" in str(root)


def cache_root() -> Path:
    return Path(os.environ.get("SEAL_RAY_CACHE", Path.home() / ".cache" / "seal_ray")).expanduser()


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
