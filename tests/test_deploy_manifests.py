"""The Kubernetes manifests under deploy/ are valid, checked offline: the standard kinds (Job,
PersistentVolumeClaim, NetworkPolicy) with `kubernetes-validate` (the Kubernetes JSON schemas
it bundles, strict: an unknown field is an error), the RayCluster against the KubeRay CRD's
own OpenAPI schema (tests/fixtures/kuberay, vendored), made strict the same way.
"""

from __future__ import annotations

import copy
import functools
import gzip
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kuberay").glob("*.yaml"))
CRD = Path(__file__).parent / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml.gz"
K8S_VERSION = "1.30"  # the oldest Kubernetes these manifests are meant for


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _strict(schema: Any) -> Any:
    """The schema with unknown fields rejected, as `kubectl apply --validate=strict` does
    (a CRD's structural schema only prunes them, which would hide a misspelt key)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _raycluster_validator() -> jsonschema.Validator:
    crd = yaml.load(gzip.decompress(CRD.read_bytes()), Loader=getattr(yaml, "CSafeLoader",
                                                                       yaml.SafeLoader))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(copy.deepcopy(v1["schema"]["openAPIV3Schema"]))
    # apiVersion/kind/metadata are checked by the API server itself, not by the CRD schema
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft202012Validator(schema)


def _all_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.name}:{d.get('kind')}", d) for p in MANIFESTS for d in _documents(p)]


def test_the_manifests_are_there() -> None:
    kinds = {d["kind"] for _, d in _all_documents()}
    assert {"RayCluster", "Job"} <= kinds
    assert (DEPLOY / "Dockerfile").is_file() and (DEPLOY / "README.md").is_file()


@pytest.mark.parametrize(("where", "doc"), [pytest.param(w, d, id=w)
                                            for w, d in _all_documents()])
def test_every_manifest_validates(where: str, doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("ray.io/"):
        assert doc["apiVersion"] == "ray.io/v1", where
        errors = sorted(_raycluster_validator().iter_errors(doc), key=str)
        assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}"
                                     for e in errors)
        return
    # raises on an invalid document, and SchemaNotFoundError for a kind it does not know
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validators_catch_mistakes() -> None:
    """The checks above can fail: a misspelt key, a wrong type, in either validator."""
    docs = dict(_all_documents())
    cluster = copy.deepcopy(docs["raycluster.yaml:RayCluster"])
    cluster["spec"]["headGroupSpec"]["rayStartParam"] = {"num-cpus": "0"}  # typo
    assert list(_raycluster_validator().iter_errors(cluster))
    cluster = copy.deepcopy(docs["raycluster.yaml:RayCluster"])
    cluster["spec"]["workerGroupSpecs"][0]["replicas"] = "four"
    assert list(_raycluster_validator().iter_errors(cluster))
    job = copy.deepcopy(docs["job.yaml:Job"])
    job["spec"]["template"]["spec"]["containers"][0]["comand"] = ["mltrader"]  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):  # a CRD: not bundled
        kubernetes_validate.validate(docs["raycluster.yaml:RayCluster"], K8S_VERSION)


def test_the_cluster_and_the_job_fit_together() -> None:
    """The job reaches the cluster's head service and uses the same image; the image's Ray
    is the cluster's rayVersion; the dashboard is not exposed beyond the head pod."""
    docs = dict(_all_documents())
    cluster, job = docs["raycluster.yaml:RayCluster"], docs["job.yaml:Job"]
    head = cluster["spec"]["headGroupSpec"]
    images = {c["image"] for g in (head, *cluster["spec"]["workerGroupSpecs"])
              for c in g["template"]["spec"]["containers"]}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert images == {container["image"]}
    args = container["args"]
    assert args[:4] == ["compare", "-c", "configs/compare.yaml", "--executor"]
    assert f"executor.address=ray://{cluster['metadata']['name']}-head-svc:10001" in args
    assert (ROOT / "configs" / "compare.yaml").is_file()
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={cluster['spec']['rayVersion']}" in dockerfile
    claim = job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["job.yaml:PersistentVolumeClaim"]["metadata"]["name"]
