"""Sweep storage: local folders and URIs, and the warnings a cluster user gets (no Ray here)."""

from pathlib import Path

from zeroflow.sweep import storage

MOUNTS = """\
overlay / overlay rw,relatime 0 0
/dev/sda1 /data ext4 rw,relatime 0 0
nas:/export /data/shared nfs4 rw,relatime 0 0
/dev/sdb1 /mnt/my\\040disk xfs rw 0 0
"""


def test_filesystem_type_takes_the_longest_mount_prefix():
    assert storage.filesystem_type("/data/shared/runs", MOUNTS) == "nfs4"
    assert storage.filesystem_type("/data/sharedness", MOUNTS) == "ext4"  # not a path prefix
    assert storage.filesystem_type("/data", MOUNTS) == "ext4"
    assert storage.filesystem_type("/home/me/runs", MOUNTS) == "overlay"
    assert storage.filesystem_type("/mnt/my disk/runs", MOUNTS) == "xfs"


def test_cluster_warnings_name_each_problem():
    sqlite = "sqlite:////home/me/mlflow.db"
    # one machine, no cluster: nothing to say
    assert storage.cluster_warnings("runs", on_cluster=False, hosts=1, tracking_uri=sqlite,
                                    tracking_from_env=False) == []
    # a cluster on one host (cluster/local.sh): a relative storage and a driver-side SQLite
    lines = storage.cluster_warnings("runs", on_cluster=True, hosts=1, tracking_uri=sqlite,
                                     tracking_from_env=False)
    assert len(lines) == 2
    assert "'runs' is relative" in lines[0] and "ray job submit" in lines[0]
    assert "MLFLOW_TRACKING_URI" in lines[1] and "--runtime-env-json" in lines[1]
    # several hosts: node-local disks are refused in words, shared ones and URIs are fine
    local = storage.cluster_warnings("/data/runs", on_cluster=True, hosts=3,
                                     tracking_uri="http://10.0.0.2:5000", tracking_from_env=True,
                                     fs_type="ext4")
    assert len(local) == 1 and "node-local filesystem (ext4)" in local[0] and "3 hosts" in local[0]
    for ok in ({"storage": "/data/shared/runs", "fs_type": "nfs4"},
               {"storage": "s3://bucket/zeroflow"}, {"storage": "gs://bucket/zeroflow"}):
        assert storage.cluster_warnings(ok["storage"], on_cluster=True, hosts=3,
                                        tracking_uri="http://10.0.0.2:5000",
                                        tracking_from_env=True, fs_type=ok.get("fs_type")) == []
    assert all("\n" not in line for line in lines + local)


def test_storage_paths_and_uris_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve(None) == str(tmp_path / storage.DEFAULT_STORAGE)
    assert storage.resolve("s3://bucket/runs/") == "s3://bucket/runs"
    assert storage.join("s3://bucket/runs", "sweep") == "s3://bucket/runs/sweep"
    assert storage.join(str(tmp_path), "sweep") == str(tmp_path / "sweep")
    # a URI goes through pyarrow's filesystems (file:// stands in for s3:// here)
    uri = f"file://{tmp_path}/remote/sweep/space.yaml"
    assert storage.read_text(uri) is None
    storage.write_text(uri, "name: x\n")
    assert Path(tmp_path / "remote/sweep/space.yaml").read_text() == "name: x\n"
    assert storage.read_text(uri) == "name: x\n"
    local = str(tmp_path / "local" / "space.yaml")
    storage.write_text(local, "a: 1\n")
    assert storage.read_text(local) == "a: 1\n"
