"""The shipped cluster configurations: ``ray up`` YAML through Ray's own validation, the KubeRay
manifests' required fields (ray.io/v1), the Dockerfile and the shell scripts' syntax."""

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def _ray_validation():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())

    def validate(config):
        jsonschema.validate(config, schema)  # the file as written
        validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks

    return validate


def test_ray_up_config_passes_rays_own_validation():
    validate = _ray_validation()
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    validate(config)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head runs drivers, not trials"
    # AWS GPU families are g* and p*
    gpu = [t for name, t in types.items() if name != config["head_node_type"]
           and t["node_config"]["InstanceType"][0] in "gp"]
    assert gpu and gpu[0]["max_workers"] > 0
    mounts = config["file_mounts"]
    assert any(remote.endswith(".ray/auth_token") for remote in mounts), "token not mounted"
    assert any(remote.endswith("/data") for remote in mounts), "datasets not mounted"
    assert any("pip install" in c and "zeroflow" in c for c in config["setup_commands"])
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command
    # and the validation does refuse a mistake
    broken = copy.deepcopy(config)
    broken["available_node_types"]["worker_gpu"]["min_wokers"] = 1
    with pytest.raises(Exception, match="min_wokers"):
        validate(broken)


def _docs(name):
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if d]


def _check_pod_template(template, where):
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no container"
    for c in containers:
        assert c.get("name") and c.get("image"), f"{where}: a container needs name and image"
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token", f"{where}: token auth off"
        assert "RAY_AUTH_TOKEN" in env, f"{where}: no token"
        assert any(m["mountPath"] == "/shared" for m in c.get("volumeMounts", [])), (
            f"{where}: the shared volume is not mounted")
    claims = [v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    return claims


def test_kuberay_manifests_carry_the_fields_kuberay_requires():
    docs = _docs("raycluster.yaml")
    pvc, = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    cluster, = [d for d in docs if d["kind"] == "RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    # required by the v1 CRD: headGroupSpec{rayStartParams, template}; each worker group
    # {groupName, minReplicas, maxReplicas, rayStartParams, template}
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert pvc["metadata"]["name"] in _check_pod_template(head["template"], "head")
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        for key in ("groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"):
            assert key in g, f"worker group lacks {key}"
        assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"]
        assert all(isinstance(v, str) for v in g["rayStartParams"].values()), (
            "rayStartParams values must be strings")
        assert pvc["metadata"]["name"] in _check_pod_template(g["template"], g["groupName"])
    gpu = [g for g in groups
           if any("nvidia.com/gpu" in c["resources"]["limits"]
                  for c in g["template"]["spec"]["containers"])]
    assert gpu, "no GPU worker group"
    assert spec["rayVersion"] in (CLUSTER / "Dockerfile").read_text()

    job, = _docs("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    js = job["spec"]
    assert js["entrypoint"].startswith("zeroflow sweep ")
    space = js["entrypoint"].split()[2]
    assert (ROOT / space).exists(), f"the RayJob sweeps a space that does not exist: {space}"
    assert "--storage /shared/" in js["entrypoint"]
    assert js["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    assert js["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode")
    assert "MLFLOW_TRACKING_URI" in yaml.safe_load(js["runtimeEnvYAML"])["env_vars"]
    assert json.loads(js["entrypointResources"])


def test_dockerfile_uses_the_official_ray_image_and_installs_this_project():
    text = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert base.startswith("rayproject/ray:")
    import ray

    assert base.split(":")[1].startswith(ray.__version__), "image Ray != installed Ray"
    assert re.search(r'pip install .*-e "\.\[cluster\]"', text)


@pytest.mark.parametrize("script", ["local.sh", "mlflow-server.sh"])
def test_cluster_scripts_parse_and_print_usage(script):
    path = CLUSTER / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    usage = subprocess.run(["bash", str(path), "nonsense"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
