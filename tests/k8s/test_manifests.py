"""deploy/k8s renders and validates offline, and the validation catches what it promises to.

Runs scripts/validate_k8s.py as CI does (`make k8s-validate`): every overlay rendered with the
project's kustomize (.tools/bin/kustomize, built by `make setup`), every document validated. The
rule tests break a copy of deploy/k8s and expect the validation to fail, naming the rule.

The OPA sidecar's two bundles are checked for real: the policy bundle is built as `make
policy-bundle` builds it (roots that leave tdg/registry to the consent service), and the rendered
sidecar's command line runs on OPA (.tools/bin/opa) against a stand-in registry bundle server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from tdg_core.devstack import REGISTRY_ROOT, ManagedProcess, free_port, registry_bundle_config
from tdg_core.testing import RegistryBundleServer

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
SCRIPT = REPO / "scripts" / "validate_k8s.py"
KUSTOMIZE = REPO / ".tools" / "bin" / "kustomize"
OPA = REPO / ".tools" / "bin" / "opa"
BUILD_POLICY_BUNDLE = K8S / "build-policy-bundle.sh"


@pytest.fixture(scope="module", autouse=True)
def kustomize() -> Path:
    if not KUSTOMIZE.is_file():
        pytest.fail(f"kustomize not found at {KUSTOMIZE}: run make setup", pytrace=False)
    return KUSTOMIZE


def validate(k8s_dir: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--k8s-dir", str(k8s_dir), "--kustomize", str(KUSTOMIZE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # 0 = valid, 1 = a manifest breaks a rule; anything else (or a traceback) is the script failing.
    if proc.returncode not in (0, 1) or "Traceback" in proc.stderr:
        pytest.fail(f"validate_k8s.py did not run (run make setup):\n{proc.stderr}", pytrace=False)
    return proc


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    return copy


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def failures(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line for line in proc.stdout.splitlines() if line.startswith("FAIL"))


def test_every_overlay_renders_and_validates() -> None:
    proc = validate(K8S)

    assert proc.returncode == 0, f"{failures(proc)}\n{proc.stderr}"
    for overlay in ("dev", "prod"):
        assert f"PASS  {overlay:<6} apps/v1 Deployment tdg/catalog" in proc.stdout
        assert f"PASS  {overlay:<6} kafka.strimzi.io/v1beta2 Kafka tdg/tdg" in proc.stdout
        for consent in (
            "v1 ServiceAccount tdg/consent",
            "apps/v1 Deployment tdg/consent",
            "v1 Service tdg/consent",
            "policy/v1 PodDisruptionBudget tdg/consent",
            "kafka.strimzi.io/v1beta2 KafkaTopic tdg/tdg.consent.events",
            "v1 ConfigMap tdg/opa-config-",
        ):
            assert f"PASS  {overlay:<6} {consent}" in proc.stdout
        for ingest in (
            "v1 ServiceAccount tdg/ingest",
            "apps/v1 Deployment tdg/ingest",
            "v1 Service tdg/ingest",
            "policy/v1 PodDisruptionBudget tdg/ingest",
            "kafka.strimzi.io/v1beta2 KafkaTopic tdg/tdg.ingest.dlq",
            "kafka.strimzi.io/v1beta2 KafkaTopic tdg/tdg.ingest.events",
        ):
            assert f"PASS  {overlay:<6} {ingest}" in proc.stdout
        for query in (
            "v1 ServiceAccount tdg/query",
            "apps/v1 Deployment tdg/query",
            "v1 Service tdg/query",
            "policy/v1 PodDisruptionBudget tdg/query",
            "kafka.strimzi.io/v1beta2 KafkaTopic tdg/tdg.audit",
        ):
            assert f"PASS  {overlay:<6} {query}" in proc.stdout
    # Ingest scales on Kafka lag through KEDA, validated against schemas/keda.sh; dev runs one.
    assert "PASS  prod   keda.sh/v1alpha1 ScaledObject tdg/ingest" in proc.stdout
    assert "dev    keda.sh/v1alpha1 ScaledObject" not in proc.stdout
    assert "PASS  prod   networking.k8s.io/v1 NetworkPolicy tdg/ingest-ingress" in proc.stdout
    # Query is stateless: an HPA on CPU in prod, one replica in dev.
    assert "PASS  prod   autoscaling/v2 HorizontalPodAutoscaler tdg/query" in proc.stdout
    assert "dev    autoscaling/v2 HorizontalPodAutoscaler tdg/query" not in proc.stdout
    for policy in ("query-ingress", "tdg-apps-query-egress", "query-object-storage-egress"):
        assert f"PASS  prod   networking.k8s.io/v1 NetworkPolicy tdg/{policy}" in proc.stdout
    assert "PASS  prod   autoscaling/v2 HorizontalPodAutoscaler tdg/consent" in proc.stdout
    assert "dev    autoscaling/v2 HorizontalPodAutoscaler tdg/consent" not in proc.stdout
    assert "NetworkPolicy tdg/default-deny" in proc.stdout  # prod carries the component
    assert "PASS  prod   networking.k8s.io/v1 NetworkPolicy tdg/consent-ingress" in proc.stdout
    assert "PASS  prod   networking.k8s.io/v1 NetworkPolicy tdg/opa-bundle-egress" in proc.stdout
    assert ", 0 failures" in proc.stdout.splitlines()[-1]


def test_writable_root_filesystem_and_missing_probe_fail(k8s_copy: Path) -> None:
    deployment = k8s_copy / "base" / "catalog" / "deployment.yaml"
    edit(deployment, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
    edit(deployment, "livenessProbe:", "livenessProbeGone:")

    proc = validate(k8s_copy)

    assert proc.returncode == 1
    report = failures(proc)
    assert "Deployment tdg/catalog" in report
    assert "container catalog: readOnlyRootFilesystem is not true" in report
    assert "container catalog: no livenessProbe" in report
    assert "'livenessProbeGone' was unexpected" in report  # strict schema: unknown fields fail


def test_secret_with_data_in_the_repository_fails(k8s_copy: Path) -> None:
    secret = k8s_copy / "overlays" / "prod" / "catalog-database.yaml"
    secret.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: catalog-database\n"
        "stringData:\n  url: postgresql+asyncpg://tdg:hunter2@db:5432/catalog\n",
        encoding="utf-8",
    )
    kustomization = k8s_copy / "overlays" / "prod" / "kustomization.yaml"
    edit(kustomization, "- ../../base\n", "- ../../base\n  - catalog-database.yaml\n")

    proc = validate(k8s_copy)

    assert proc.returncode == 1
    report = failures(proc)
    assert "prod   v1 Secret tdg/catalog-database: a Secret with data" in report
    assert "repo   overlays/prod/catalog-database.yaml: a Secret with data" in report


def test_database_url_as_a_literal_fails(k8s_copy: Path) -> None:
    edit(
        k8s_copy / "overlays" / "prod" / "catalog.yaml",
        "valueFrom:\n                secretKeyRef: { name: catalog-database, key: url }",
        "value: postgresql+asyncpg://tdg:hunter2@db:5432/catalog",
    )

    proc = validate(k8s_copy)

    assert proc.returncode == 1
    assert "env TDG_CATALOG_DATABASE_URL has credentials in a literal URL" in failures(proc)


def test_misspelt_field_in_a_strimzi_resource_fails(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "kafka" / "topics.yaml", "  partitions: 3 #", "  partition: 3 #")

    proc = validate(k8s_copy)

    assert proc.returncode == 1
    report = failures(proc)
    assert "KafkaTopic tdg/tdg.catalog.events: schema kafka.strimzi.io/kafkatopic_v1beta2" in report
    assert "'partition' was unexpected" in report


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("  maxReplicaCount: 6", "  maxReplicas: 6", "'maxReplicas' was unexpected"),
        # KEDA's trigger metadata is text only: an unquoted YAML boolean is refused by the API.
        ('allowIdleConsumers: "false"', "allowIdleConsumers: false", "False is not of type"),
    ],
)
def test_malformed_keda_scaled_object_fails(
    k8s_copy: Path, old: str, new: str, problem: str
) -> None:
    edit(k8s_copy / "base" / "ingest" / "scaledobject.yaml", old, new)

    proc = validate(k8s_copy)

    assert proc.returncode == 1
    report = failures(proc)
    assert "prod   keda.sh/v1alpha1 ScaledObject tdg/ingest: schema keda.sh/scaledobject" in report
    assert problem in report


def test_unpinned_image_fails(k8s_copy: Path) -> None:
    edit(k8s_copy / "overlays" / "prod" / "kustomization.yaml", 'newTag: "0.1.0"', "newTag: latest")

    proc = validate(k8s_copy)

    assert proc.returncode == 1
    assert "prod   apps/v1 Deployment tdg/catalog: container catalog: image" in failures(proc)


def test_overlay_that_does_not_render_fails(k8s_copy: Path) -> None:
    edit(k8s_copy / "overlays" / "dev" / "kustomization.yaml", "- ../../base", "- ../../nowhere")

    proc = validate(k8s_copy)

    assert proc.returncode == 1
    assert "FAIL  dev    kustomize build:" in proc.stdout


def test_port_taken_twice_in_a_pod_fails(k8s_copy: Path) -> None:
    # OPA's diagnostic port back on 8282, the consent service's bundle port: one pod, one port.
    sidecar = k8s_copy / "base" / "opa-sidecar.yaml"
    edit(sidecar, "--diagnostic-addr=0.0.0.0:8182", "--diagnostic-addr=0.0.0.0:8282")
    edit(sidecar, "containerPort: 8182", "containerPort: 8282")

    proc = validate(k8s_copy)

    assert proc.returncode == 1
    report = failures(proc)
    assert "Deployment tdg/consent: port 8282 is taken by both containers consent and opa" in report
    assert "Deployment tdg/catalog" not in report


def test_unresolved_service_port_configmap_and_bundle_service_fail(k8s_copy: Path) -> None:
    edit(
        k8s_copy / "base" / "consent" / "service.yaml",
        "targetPort: http-bundle",
        "targetPort: 8080",
    )
    edit(
        k8s_copy / "base" / "opa-config.yaml", "url: http://consent:8282", "url: http://consent:82"
    )
    edit(
        k8s_copy / "base" / "opa-sidecar.yaml",
        "configMap:\n            name: opa-config\n",
        "configMap:\n            name: opa-configuration\n",
    )

    proc = validate(k8s_copy)

    assert proc.returncode == 1
    report = failures(proc)
    assert "Service tdg/consent: port http-bundle: no container port 8080" in report
    assert "opa-config.yaml: service consent: Service consent has no port 82" in report
    assert "Deployment tdg/consent: volume opa-config: ConfigMap opa-configuration" in report


# --- the OPA sidecar: the policies bundle and the registry bundle ---------------------------------


def rendered(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(KUSTOMIZE), "build", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_sidecar_config_is_the_devstack_config_for_the_consent_service() -> None:
    """One configuration: the local stack and the tests generate it, the cluster mounts it."""
    config = yaml.safe_load((K8S / "base" / "opa-config.yaml").read_text(encoding="utf-8"))
    assert config == registry_bundle_config("http://consent:8282")


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_sidecar_mounts_the_config_and_the_policies(overlay: str) -> None:
    docs = rendered(overlay)
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} >= {"catalog", "consent", "ingest", "query"}
    for deployment in deployments:
        template = deployment["spec"]["template"]
        pod = template["spec"]
        (opa,) = [c for c in pod["initContainers"] if c["name"] == "opa"]
        assert template["metadata"]["labels"]["tdg.io/opa-sidecar"] == "true"
        args = opa["args"]
        assert "--config-file=/config/opa-config.yaml" in args
        assert args[-2:] == ["--bundle", "/policies/policies.tar.gz"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in opa["volumeMounts"]}
        config_map = configmaps[volumes[mounts["/config"]]["configMap"]["name"]]
        config = yaml.safe_load(config_map["data"]["opa-config.yaml"])
        assert config["services"]["consent"]["url"] == "http://consent:8282"
        assert volumes[mounts["/policies"]]["configMap"]["name"] == "opa-policy-bundle"
    ports = {p["name"]: p["port"] for p in services["consent"]["spec"]["ports"]}
    assert ports == {"grpc": 50052, "http-bundle": 8282}


def test_ingest_scales_on_its_own_consumer_group_and_serves_its_port() -> None:
    """The manifests name what the service's code names: its consumer group and gRPC port."""
    from tdg_ingest.settings import CONSUMER_GROUP, IngestSettings

    docs = {(d["kind"], d["metadata"]["name"]): d for d in rendered("prod")}
    scaled = docs[("ScaledObject", "ingest")]["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ingest",
    }
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == CONSUMER_GROUP
    assert "topic" not in trigger["metadata"]  # every dataset topic the group reads
    assert trigger["metadata"]["bootstrapServers"].startswith("tdg-kafka-bootstrap.tdg.svc:")
    (container,) = docs[("Deployment", "ingest")]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    port = IngestSettings.model_fields["grpc_port"].default
    assert env["TDG_GRPC_PORT"]["value"] == str(port)
    assert container["ports"] == [{"name": "grpc", "containerPort": port}]
    # Credentials only by reference.
    for name in (
        "TDG_LAKE_CATALOG_URL",
        "TDG_LAKE_S3_ACCESS_KEY_ID",
        "TDG_LAKE_S3_SECRET_ACCESS_KEY",
    ):
        assert "secretKeyRef" in env[name]["valueFrom"], name


# The query service's ports (gRPC, Arrow Flight) and the consent service's gRPC port it calls.
QUERY_GRPC_PORT, QUERY_FLIGHT_PORT, CONSENT_GRPC_PORT = 50054, 50055, 50052


def _query_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "query"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_query_serves_both_ports_and_keeps_its_state_on_empty_dirs(overlay: str) -> None:
    docs = rendered(overlay)
    deployment, container = _query_container(docs)
    pod = deployment["spec"]["template"]["spec"]
    assert container["command"] == ["python", "-m", "tdg_query"]
    assert container["ports"] == [
        {"name": "grpc", "containerPort": QUERY_GRPC_PORT},
        {"name": "flight", "containerPort": QUERY_FLIGHT_PORT},
    ]
    assert container["readinessProbe"]["grpc"] == {"port": QUERY_GRPC_PORT}
    assert container["startupProbe"]["grpc"] == {"port": QUERY_GRPC_PORT}
    env = {e["name"]: e for e in container["env"]}
    assert env["TDG_GRPC_PORT"]["value"] == str(QUERY_GRPC_PORT)
    assert env["TDG_QUERY_FLIGHT_PORT"]["value"] == str(QUERY_FLIGHT_PORT)
    assert env["TDG_QUERY_CONSENT_ADDRESS"]["value"] == f"consent.tdg.svc:{CONSENT_GRPC_PORT}"
    # The service token (role platform-service) and the token key: by reference, in every overlay.
    assert env["TDG_QUERY_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "query-service-token",
        "key": "token",
    }
    assert env["TDG_AUTH_RS256_PUBLIC_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "tdg-auth"
    # The lake: every overlay says where it is.
    assert {"TDG_LAKE_CATALOG_URL", "TDG_LAKE_WAREHOUSE"} <= set(env)
    # DuckDB's spill files on an emptyDir (the root filesystem is read-only).
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[env["TDG_QUERY_SPILL_DIR"]["value"]] in empty_dirs
    # The Service: both ports, to the container's named ports.
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "query"]
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"grpc": (QUERY_GRPC_PORT, "grpc"), "flight": (QUERY_FLIGHT_PORT, "flight")}


def test_query_reads_the_lake_ingest_writes_by_reference_in_prod() -> None:
    docs = rendered("prod")
    _, query = _query_container(docs)
    (ingest,) = [
        d["spec"]["template"]["spec"]["containers"][0]
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "ingest"
    ]
    query_env = {e["name"]: e for e in query["env"]}
    ingest_env = {e["name"]: e for e in ingest["env"]}
    lake = sorted(name for name in ingest_env if name.startswith("TDG_LAKE_"))
    assert "TDG_LAKE_CATALOG_URL" in lake
    for name in lake:  # the same catalog, warehouse, endpoint and Secrets
        assert query_env[name] == ingest_env[name], name
    for name in (
        "TDG_LAKE_CATALOG_URL",
        "TDG_LAKE_S3_ACCESS_KEY_ID",
        "TDG_LAKE_S3_SECRET_ACCESS_KEY",
    ):
        assert "secretKeyRef" in query_env[name]["valueFrom"], name
    hpa = [
        d
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"] == "query"
    ]
    (spec,) = [h["spec"] for h in hpa]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "query",
    }
    (metric,) = spec["metrics"]
    assert metric["containerResource"]["container"] == "query"
    assert metric["containerResource"]["name"] == "cpu"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert not selector.get("matchExpressions"), "matchExpressions: extend this test"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _allows(
    policies: list[dict[str, Any]],
    direction: str,
    pod: dict[str, str],
    peer: dict[str, str] | None,
    port: int,
) -> bool:
    """Whether a policy selecting `pod` lets it talk to `peer` (a pod's labels in the namespace;
    None: outside the cluster) on `port`, in `direction` (Ingress: from peer; Egress: to peer)."""
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        spec = policy["spec"]
        if direction not in spec.get("policyTypes", []) or not _selects(spec["podSelector"], pod):
            continue
        for rule in spec.get(rules_key, []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            peers = rule.get(peers_key)
            if not peers:
                return True
            if peer is not None and any(
                "podSelector" in q
                and "namespaceSelector" not in q
                and _selects(q["podSelector"], peer)
                for q in peers
            ):
                return True
    return False


def test_query_network_policies_let_it_serve_and_reach_what_it_needs() -> None:
    docs = rendered("prod")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] == "Deployment"
    }
    query, consent = pods["query"], pods["consent"]
    broker = {"strimzi.io/cluster": "tdg", "strimzi.io/broker-role": "true"}
    # Applications (the namespace's tdg apps) reach both ports, in and out.
    for port in (QUERY_GRPC_PORT, QUERY_FLIGHT_PORT):
        assert _allows(policies, "Ingress", query, pods["catalog"], port), port
        assert _allows(policies, "Egress", pods["catalog"], query, port), port
    assert not _allows(policies, "Ingress", query, {"app": "elsewhere"}, QUERY_GRPC_PORT)
    # What the query service reaches: Kafka, the consent service (subject sets; OPA's bundle),
    # the lake's catalog (PostgreSQL) and warehouse (object storage over HTTPS).
    assert _allows(policies, "Egress", query, broker, 9092)
    assert _allows(policies, "Egress", query, consent, CONSENT_GRPC_PORT)
    assert _allows(policies, "Ingress", consent, query, CONSENT_GRPC_PORT)
    assert _allows(policies, "Egress", query, consent, 8282)
    assert _allows(policies, "Ingress", consent, query, 8282)
    assert _allows(policies, "Egress", query, None, 5432)
    assert _allows(policies, "Egress", query, None, 443)
    assert not _allows(policies, "Egress", query, None, 80)


@pytest.fixture(scope="module")
def policy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not OPA.is_file():
        pytest.fail(f"OPA not found at {OPA}: run make setup", pytrace=False)
    out = tmp_path_factory.mktemp("policy-bundle") / "policies.tar.gz"
    proc = subprocess.run(
        ["bash", str(BUILD_POLICY_BUNDLE), str(out)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OPA": str(OPA), "REVISION": "test"},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def _overlaps(a: str, b: str) -> bool:
    a_parts, b_parts = a.strip("/").split("/"), b.strip("/").split("/")
    shorter = min(len(a_parts), len(b_parts))
    return a_parts[:shorter] == b_parts[:shorter]


def test_policy_bundle_roots_leave_the_registry_to_the_consent_service(policy_bundle: Path) -> None:
    with tarfile.open(policy_bundle) as tar:
        members = {m.name.lstrip("/"): m for m in tar.getmembers()}
        manifest_file = tar.extractfile(members[".manifest"])
        assert manifest_file is not None
        manifest = json.loads(manifest_file.read())
    assert manifest["revision"] == "test"
    roots = manifest["roots"]
    assert roots and "" not in roots
    assert not [root for root in roots if _overlaps(root, REGISTRY_ROOT)]
    # Policies only: no tests, no documents (and opa build compiled them).
    assert any(name.endswith(".rego") for name in members)
    assert not [name for name in members if name.endswith(("_test.rego", ".md"))]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_opa_runs_with_the_sidecar_bundles(policy_bundle: Path, tmp_path: Path) -> None:
    """The rendered sidecar's command line on the real binary, paths and addresses made local:
    ready on its diagnostic port with the policies, and pulling the registry bundle."""
    docs = rendered("prod")
    (consent,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "consent"
    ]
    (opa,) = [
        c for c in consent["spec"]["template"]["spec"]["initContainers"] if c["name"] == "opa"
    ]
    (config_map,) = [d for d in docs if d["metadata"]["name"].startswith("opa-config-")]
    bundle_port, api_port, diag_port = free_port(), free_port(), free_port()
    config_file = tmp_path / "opa-config.yaml"
    config_file.write_text(
        config_map["data"]["opa-config.yaml"].replace(
            "http://consent:8282", f"http://127.0.0.1:{bundle_port}"
        )
    )
    local = {
        "--addr=127.0.0.1:8181": f"--addr=127.0.0.1:{api_port}",
        "--diagnostic-addr=0.0.0.0:8182": f"--diagnostic-addr=127.0.0.1:{diag_port}",
        "--config-file=/config/opa-config.yaml": f"--config-file={config_file}",
        "/policies/policies.tar.gz": str(policy_bundle),
    }
    assert set(local) <= set(opa["args"])
    process = ManagedProcess(
        name="opa", argv=[str(OPA), *(local.get(a, a) for a in opa["args"])], state_dir=tmp_path
    )
    api = f"http://127.0.0.1:{api_port}"
    registry = {"revision": 7, "parties": {"velo-app": {"status": "suspended"}}}
    process.start()
    try:
        # Ready (the kubelet's probe) before the consent service answers.
        deadline = time.monotonic() + 20
        while not _ok(f"http://127.0.0.1:{diag_port}/health"):
            assert process.running, f"OPA exited:\n{process.tail()}"
            assert time.monotonic() < deadline, f"not ready; see {process.log_file}"
            time.sleep(0.1)
        assert "result" not in _get_json(f"{api}/v1/data/tdg/registry")
        with RegistryBundleServer(bundle_port, registry):
            deadline = time.monotonic() + 10
            while _get_json(f"{api}/v1/data/tdg/registry").get("result") != registry:
                assert time.monotonic() < deadline, f"no registry bundle; see {process.log_file}"
                time.sleep(0.05)
            policies = _get_json(f"{api}/v1/policies")["result"]
            assert any(p["id"].endswith("tdg/rpc/rpc.rego") for p in policies)
            bundles = _get_json(f"{api}/v1/data/system/bundles").get("result", {})
            assert set(bundles) == {str(policy_bundle), "registry"}
    finally:
        process.stop(5)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
