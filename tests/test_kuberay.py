"""deploy/kuberay: the RayJob and RayCluster manifests, checked without a Kubernetes cluster.

What is validated against a schema: every Pod template in them (the head's, each worker group's) as a core
``v1 PodTemplate`` against Kubernetes' own OpenAPI schemas, strictly (an unknown field fails), through the
`kubernetes-validate` package (requirements-test.txt); KubeRay's CRDs embed exactly that PodTemplateSpec schema for
these fields. KubeRay's own CRD schemas (the RayJob / RayCluster fields around the templates) ship in no package of
the registries this project installs from, so their field names are written from KubeRay's API reference and not
validated here (`kubectl apply --dry-run=server -f deploy/kuberay/` on a cluster with KubeRay does)."""
from __future__ import annotations

import copy
import re

import kubernetes_validate
import pytest
import yaml

from conftest import REPO

KUBERAY = REPO / "deploy" / "kuberay"
KUBERNETES = "1.32"  # the schemas' Kubernetes version (kubernetes-validate ships 1.x schemas)
SECRET_NAMES = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)


def manifest(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def pod_templates(doc: dict) -> dict[str, dict]:
    spec = cluster_spec(doc)
    found = {"head": spec["headGroupSpec"]["template"]}
    found.update({f"worker group {g['groupName']}": g["template"] for g in spec["workerGroupSpecs"]})
    return found


def validate(doc: dict) -> None:
    """Raise kubernetes_validate.ValidationError where a Pod template breaks Kubernetes' schema."""
    for where, template in pod_templates(doc).items():
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": where},
                                      "template": template}, KUBERNETES, strict=True)


def plain_secrets(doc: dict) -> list[str]:
    """Credentials written into the manifest: a secret-looking env variable with a literal value (in a container or
    the job's runtime env), or a Secret object itself."""
    found = [doc["metadata"]["name"]] if doc["kind"] == "Secret" else []
    for where, template in pod_templates(doc).items():
        for c in template["spec"]["containers"]:
            found += [f"{where}: {e['name']}" for e in c.get("env", []) if SECRET_NAMES.search(e["name"]) and
                      "value" in e]
    runtime_env = yaml.safe_load(doc["spec"].get("runtimeEnvYAML") or "{}")
    found += [f"runtimeEnvYAML: {k}" for k in runtime_env.get("env_vars", {}) if SECRET_NAMES.search(k)]
    return found


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_the_manifests_pass_kubernetes_schemas_and_hold_no_secret(name):
    doc = manifest(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayJob", "RayCluster")
    validate(doc)
    assert plain_secrets(doc) == []
    # every container takes the S3 credentials from the Secret, by reference
    for template in pod_templates(doc).values():
        for c in template["spec"]["containers"]:
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
            assert refs == {k: "tune-p7-s3" for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    assert cluster_spec(doc)["authOptions"] == {"mode": "token", "secretName": "tune-p7-ray-token"}


def test_ray_version_is_the_one_of_requirements_in_manifests_and_dockerfile():
    pinned = re.search(r"^ray\[[^]]*\]==([\d.]+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    for name in ("rayjob.yaml", "raycluster.yaml"):
        assert cluster_spec(manifest(name))["rayVersion"] == pinned
    assert re.search(rf"^FROM rayproject/ray:{re.escape(pinned)}-py311-cpu$", (KUBERAY / "Dockerfile").read_text(),
                     re.M)
    assert "tune_p7/search.py" in manifest("rayjob.yaml")["spec"]["entrypoint"]


@pytest.mark.parametrize("path, misspelt", [
    (("headGroupSpec", "template", "spec", "containers", 0), ("imagePullPolicy", "imagePulPolicy")),
    (("workerGroupSpecs", 0, "template", "spec"), ("volumes", "volume")),
])
def test_a_misspelt_field_fails_validation(path, misspelt):
    doc = copy.deepcopy(manifest("rayjob.yaml"))
    node = cluster_spec(doc)
    for key in path:
        node = node[key]
    right, wrong = misspelt
    node[wrong] = node.pop(right)
    with pytest.raises(kubernetes_validate.ValidationError, match=wrong):
        validate(doc)


def test_a_secret_written_into_the_manifest_is_found():
    doc = copy.deepcopy(manifest("rayjob.yaml"))
    worker = cluster_spec(doc)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    worker["env"] = [e for e in worker["env"] if e["name"] != "AWS_SECRET_ACCESS_KEY"] + [
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI"}]  # a new list: the head's is a YAML alias
    doc["spec"]["runtimeEnvYAML"] += "env_vars: {RAY_AUTH_TOKEN: abc}\n"
    assert plain_secrets(doc) == ["worker group cpu: AWS_SECRET_ACCESS_KEY", "runtimeEnvYAML: RAY_AUTH_TOKEN"]
