"""Where a sweep lives: a local folder on one machine, a shared folder or ``s3://``/``gs://``
on a cluster, and the warnings a cluster user needs before checkpoints go astray.

Since Ray 2.7, Tune no longer syncs trial checkpoints to the head node: every node writes to
``storage_path`` itself, so on several machines it must be a filesystem all of them mount, or a
cloud URI. A relative path resolves on the driver's node only (under ``ray job submit``, inside
the job's temporary working directory, which Ray deletes).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from zeroflow.errors import ConfigError

DEFAULT_STORAGE = "zeroflow_runs"
# filesystem types that several machines can mount (``/proc/mounts``'s third field)
SHARED_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "glusterfs",
             "beegfs", "9p", "virtiofs", "afs", "panfs", "wekafs", "fuse.juicefs", "fuse.s3fs",
             "fuse.gcsfuse", "fuse.goofys", "fuse.mountpoint-s3", "fuse.sshfs", "fuse.glusterfs",
             "fuse.cephfs", "fuse.lustre"}


def is_uri(storage: str | os.PathLike) -> bool:
    return "://" in str(storage)


def resolve(storage: str | os.PathLike | None) -> str:
    """An absolute local path, or the URI as given (no trailing slash)."""
    storage = storage or DEFAULT_STORAGE
    if is_uri(storage):
        return str(storage).rstrip("/")
    return str(Path(storage).expanduser().resolve())


def join(base: str, name: str) -> str:
    return f"{base}/{name}" if is_uri(base) else str(Path(base) / name)


def make_private_dir(location: str) -> None:
    """Create the folder ``location`` readable and writable by its owner only (a URI: left to
    the store's own access control)."""
    if is_uri(location):
        return
    Path(location).mkdir(parents=True, exist_ok=True)
    os.chmod(location, 0o700)


def check_trusted(location: str) -> None:
    """Refuse, in one line, a local sweep folder that someone else could have written: resume
    unpickles Tune's state (``tuner.pkl``, the experiment state, searcher and error records),
    so whoever can write any of it runs code as the driver. Every folder and file under
    ``location`` must belong to this user and be unwritable by group and others. A URI is the
    store's business (bucket policy): not checked here."""
    if is_uri(location):
        return
    root = Path(location)
    me = os.geteuid()
    for folder, dirs, files in os.walk(root):
        for path in [Path(folder)] + [Path(folder) / name for name in dirs + files]:
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise ConfigError(
                    f"{path} is a symbolic link: a sweep folder holds none, and resume "
                    f"unpickles what it finds there; remove the link once you trust the folder")
            if info.st_uid != me:
                raise ConfigError(
                    f"{path} belongs to {_user(info.st_uid)}, not to you ({_user(me)}): "
                    f"resume unpickles the sweep's state, so it runs only a sweep folder you "
                    f"own; resume it as {_user(info.st_uid)}, or copy the folder if you trust "
                    f"its contents")
            if info.st_mode & 0o022:
                raise ConfigError(
                    f"{path} is writable by group or others (mode {info.st_mode & 0o777:o}): "
                    f"resume unpickles the sweep's state, so anyone who can write there could "
                    f"run code as you; make the sweep writable by you only (chmod -R go-w "
                    f"{root}) once you trust its contents")


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def _filesystem(location: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(location)


def write_text(location: str, text: str) -> None:
    """Write a small text file locally or through pyarrow's filesystem for a URI."""
    if not is_uri(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(location).write_text(text)
        return
    fs, path = _filesystem(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())


def read_text(location: str) -> str | None:
    """The file's text, or None if it does not exist."""
    if not is_uri(location):
        return Path(location).read_text() if Path(location).exists() else None
    import pyarrow.fs

    fs, path = _filesystem(location)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def filesystem_type(path: str | os.PathLike, mounts: str | None = None) -> str:
    """The type of the filesystem holding ``path`` (longest mount-point prefix in
    ``/proc/mounts``); ``"unknown"`` where that file cannot be read."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    target, best, kind = Path(path).resolve(), -1, "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (target == point or point in target.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind


def cluster_warnings(storage: str | os.PathLike | None, *, on_cluster: bool, hosts: int,
                     tracking_uri: str, tracking_from_env: bool,
                     fs_type: str | None = None) -> list[str]:
    """What could go wrong with this storage and MLflow store on this cluster, one line each.

    ``on_cluster``: the driver joined an existing Ray cluster (``--address``/``RAY_ADDRESS``);
    ``hosts``: distinct node addresses among its live nodes."""
    out = []
    given = str(storage or DEFAULT_STORAGE)
    if on_cluster and not is_uri(given) and not Path(given).expanduser().is_absolute():
        out.append(
            f"storage {given!r} is relative: it resolves to {resolve(given)} on the driver's "
            f"node (under 'ray job submit', the job's temporary working directory); pass an "
            f"absolute --storage every node reaches, or s3://... / gs://...")
    if hosts > 1 and not is_uri(given):
        kind = fs_type or filesystem_type(resolve(given))
        if kind not in SHARED_FS:
            out.append(
                f"storage {resolve(given)} is on a node-local filesystem ({kind}) but the "
                f"cluster spans {hosts} hosts: trials on other hosts write their checkpoints "
                f"to their own disks, where resume cannot find them; use a shared filesystem "
                f"or s3://... / gs://...")
    if on_cluster and not tracking_from_env and tracking_uri.startswith("sqlite:"):
        out.append(
            f"MLflow store is {tracking_uri} on the driver's node; on a cluster run an MLflow "
            f"server (cluster/mlflow-server.sh) and give the driver MLFLOW_TRACKING_URI=http://"
            f"... (ray job submit passes it with --runtime-env-json "
            f"'{{\"env_vars\": {{\"MLFLOW_TRACKING_URI\": \"http://...\"}}}}')")
    return out
