"""Where experiments live: a local path, a shared filesystem path (NFS, ...) or an S3-compatible URI.

S3 endpoints come from the environment as pyarrow reads them (AWS_ENDPOINT_URL for a self-hosted store,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION).
"""
from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from tune_p7.errors import InputError, one_line

SHARED_FS_TYPES = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
                   "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "9p", "virtiofs"}
MIN_FREE_BYTES = 200 * 2**20


def is_uri(storage: str) -> bool:
    return "://" in storage


def normalize(storage: str) -> str:
    """A URI unchanged; a local path made absolute (trials run in other working directories)."""
    return storage.rstrip("/") if is_uri(storage) else str(Path(storage).expanduser().resolve())


def filesystem(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(uri_or_path):
        try:
            return pafs.FileSystem.from_uri(uri_or_path)
        except Exception as exc:  # pyarrow raises several types for bad URIs
            raise InputError(uri_or_path, f"cannot open storage ({one_line(exc)})") from None
    return pafs.LocalFileSystem(), normalize(uri_or_path)


def join(base: str, *parts: str) -> str:
    """``base/part/...``; a ``..`` segment (a continued search reaching an earlier one's trials) is resolved, which
    an object store's keys would not do themselves."""
    out = "/".join([base.rstrip("/"), *parts])
    if "/../" not in out + "/":
        return out
    scheme, sep, path = out.rpartition("://")
    return scheme + sep + posixpath.normpath(path)


def exists(uri_or_path: str) -> bool:
    fs, path = filesystem(uri_or_path)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_bytes(uri_or_path: str, data: bytes) -> None:
    fs, path = filesystem(uri_or_path)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def read_bytes(uri_or_path: str) -> bytes:
    fs, path = filesystem(uri_or_path)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_present(folder: str, names) -> dict[str, bytes]:
    """The files among ``names`` that exist in ``folder`` (path or URI), by name."""
    paths = {n: join(folder, n) for n in names}
    return {n: read_bytes(p) for n, p in paths.items() if exists(p)}


def remove_present(folder: str, names) -> None:
    """Delete the files among ``names`` that exist in ``folder`` (path or URI)."""
    for path in (join(folder, n) for n in names):
        if exists(path):
            fs, local = filesystem(path)
            fs.delete_file(local)


def read_parquet(uri_or_path: str):
    """A (small) Parquet file as a DataFrame, read from an Arrow buffer on the calling thread: a Python file object
    (``pd.read_parquet(io.BytesIO(...))``) leaves Arrow threads that need the GIL, and a process that has imported
    ray can then abort at exit (apache/arrow#50482, #45017)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(read_bytes(uri_or_path)), use_threads=False).to_pandas(use_threads=False)


def check_writable(storage: str) -> None:
    """Write and delete a probe file; refuse storage that cannot be written or has < 200 MiB free (local)."""
    probe = join(storage, f".tune_p7_write_probe_{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"ok")
        fs, path = filesystem(probe)
        fs.delete_file(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(storage, f"storage is not writable ({one_line(exc)})") from None
    if not is_uri(storage):
        free = shutil.disk_usage(normalize(storage)).free
        if free < MIN_FREE_BYTES:
            raise InputError(storage, f"storage is full: {free / 2**20:.0f} MiB free, need at least "
                                      f"{MIN_FREE_BYTES / 2**20:.0f} MiB")


def fs_type(path: str) -> str:
    """The filesystem type (from /proc/mounts) of the mount holding ``path``."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    real = os.path.realpath(path)
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and (real == fields[1] or real.startswith(fields[1].rstrip("/") + "/")) \
                and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind


def is_shared(storage: str) -> bool:
    """True for URIs and for local paths on a network filesystem that every node can mount."""
    return is_uri(storage) or fs_type(storage) in SHARED_FS_TYPES
