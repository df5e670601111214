"""Render every overlay of deploy/k8s with kustomize and validate each document offline.

Each rendered document is checked against
- its schema: the core Kubernetes kinds with the schemas that `kubernetes-validate` ships (one
  Kubernetes version, strict mode, so an unknown or misspelt field fails); custom resources with
  the JSON schemas in deploy/k8s/schemas/<group>/<kind>_<version>.json;
- tdg's rules: every workload container has resource requests and a memory limit, readiness and
  liveness probes (a gRPC readiness probe when it serves gRPC), runs as non-root with a read-only
  root filesystem, no privilege escalation, all capabilities dropped and the RuntimeDefault seccomp
  profile, a pinned image, and no secret in a literal environment value; no two containers of a pod
  listen on the same port; every namespaced document has a namespace; references between documents
  resolve (HPA targets, Strimzi cluster labels, ConfigMaps that pods mount or read, Services'
  selectors and target ports, the Services that an OPA configuration's `services` URLs name).
Anywhere under deploy/k8s, a Secret carrying data or a secretGenerator fails: secrets are made
outside the repository and only referenced.

Prints one line per document and a summary; exits 1 on any failure, 2 when it cannot run.

    .venv/bin/python scripts/validate_k8s.py [--k8s-dir DIR] [--kustomize BIN]
                                             [--kubernetes-version X.Y]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

REPO = Path(__file__).resolve().parent.parent
KUBERNETES_VERSION = "1.31"
SETUP_HINT = "run make setup (or bash scripts/provision_kustomize.sh)"

Doc = dict[str, Any]

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "StorageClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)
# Environment variables that must come from a Secret (valueFrom), never a literal value.
SECRET_ENV_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|PRIVATE_KEY|CREDENTIAL")
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
# Listening addresses given as arguments (OPA's --addr / --diagnostic-addr): `[host]:port`.
ADDRESS_ARG = re.compile(r"^--(?:diagnostic-)?addr=(?:[^\s]*):(\d+)$")
# ConfigMaps made outside Kustomize (see deploy/k8s/README.md): mounted, never rendered here.
EXTERNAL_CONFIGMAPS = frozenset({"opa-policy-bundle"})


@dataclass(frozen=True)
class Result:
    """The verdict on one rendered document."""

    overlay: str
    doc: Doc
    problems: tuple[str, ...]

    def line(self) -> str:
        verdict = "FAIL" if self.problems else "PASS"
        text = f"{verdict}  {self.overlay:<6} {describe(self.doc)}"
        return f"{text}: {'; '.join(self.problems)}" if self.problems else text


def describe(doc: Doc) -> str:
    meta = doc.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('apiVersion', '?')} {doc.get('kind', '?')} {where}{meta.get('name', '?')}"


# --- rendering -----------------------------------------------------------------------------------


class RenderError(Exception):
    pass


def render(kustomize: Path, overlay: Path) -> list[Doc]:
    """`kustomize build <overlay>`, parsed into documents."""
    proc = subprocess.run(
        [str(kustomize), "build", str(overlay)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip() or f"kustomize exited with {proc.returncode}")
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d is not None]
    if not all(isinstance(d, dict) for d in docs):
        raise RenderError("kustomize rendered a document that is not a mapping")
    return docs


# --- schemas -------------------------------------------------------------------------------------


@cache
def load_schema(path: Path) -> Doc:
    schema: Doc = json.loads(path.read_text(encoding="utf-8"))
    return schema


def schema_problems(doc: Doc, schemas_dir: Path, kubernetes_version: str) -> list[str]:
    api_version = str(doc.get("apiVersion", ""))
    kind = str(doc.get("kind", ""))
    if not api_version or not kind:
        return ["no apiVersion or kind"]
    group, _, version = api_version.rpartition("/")
    custom = schemas_dir / group / f"{kind.lower()}_{version}.json" if group else None
    if custom is not None and custom.is_file():
        schema = load_schema(custom)
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
        errors = sorted(validator(schema).iter_errors(doc), key=lambda e: e.json_path)
        shown = [f"{e.json_path}: {shorten(e.message)}" for e in errors[:3]]
        more = [f"(+{len(errors) - 3} more schema errors)"] if len(errors) > 3 else []
        return [f"schema {custom.relative_to(schemas_dir)}: {m}" for m in shown] + more
    try:
        kubernetes_validate.validate(doc, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(document)"
        return [f"schema Kubernetes {e.version} strict: {path}: {shorten(e.message)}"]
    except kubernetes_validate.SchemaNotFoundError:
        wanted = Path(group or "core") / f"{kind.lower()}_{version}.json"
        return [f"no schema: not in Kubernetes {kubernetes_version}, no schemas/{wanted}"]
    return []


def shorten(message: str, limit: int = 160) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


# --- tdg's rules ---------------------------------------------------------------------------------


def containers(pod: Doc) -> Iterator[tuple[Doc, bool]]:
    """Every container of a pod spec, with whether it runs for the pod's lifetime."""
    for c in pod.get("containers") or []:
        yield c, True
    for c in pod.get("initContainers") or []:
        # A native sidecar (restartPolicy: Always) runs as long as the pod: same rules as the rest.
        yield c, c.get("restartPolicy") == "Always"


def effective(container: Doc, pod: Doc, key: str) -> Any:
    """A securityContext field as the kubelet sees it: the container's, else the pod's."""
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (pod.get("securityContext") or {}).get(key)


def container_problems(c: Doc, pod: Doc, long_running: bool) -> list[str]:
    problems: list[str] = []
    sc = c.get("securityContext") or {}
    resources = c.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    if not {"cpu", "memory"} <= requests.keys():
        problems.append("resources.requests needs cpu and memory")
    if "memory" not in limits:
        problems.append("resources.limits needs memory")
    if long_running:
        for probe in ("readinessProbe", "livenessProbe"):
            if not c.get(probe):
                problems.append(f"no {probe}")
        grpc_ports = [p for p in c.get("ports") or [] if p.get("name") == "grpc"]
        if grpc_ports and "grpc" not in (c.get("readinessProbe") or {}):
            problems.append("serves gRPC, so its readinessProbe must be a native grpc: probe")
    if effective(c, pod, "runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append("capabilities.drop lacks ALL")
    seccomp = effective(c, pod, "seccompProfile") or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile is not RuntimeDefault")
    problems += image_problems(str(c.get("image", "")))
    problems += env_problems(c.get("env") or [])
    return [f"container {c.get('name', '?')}: {p}" for p in problems]


def image_problems(image: str) -> list[str]:
    if "@sha256:" in image:
        return []
    name_and_tag = image.rsplit("/", 1)[-1]
    tag = name_and_tag.partition(":")[2]
    if not tag:
        return [f"image {image!r} has no tag (pin a tag or a digest)"]
    if tag == "latest":
        return [f"image {image!r} uses :latest (pin a tag or a digest)"]
    return []


def env_problems(env: Sequence[Doc]) -> list[str]:
    problems: list[str] = []
    for var in env:
        name, value = str(var.get("name", "")), var.get("value")
        if value is None:
            continue
        if SECRET_ENV_NAME.search(name):
            problems.append(f"env {name} has a literal value: take it from a Secret (valueFrom)")
        elif CREDENTIALS_IN_URL.search(str(value)):
            problems.append(f"env {name} has credentials in a literal URL: take it from a Secret")
        elif name.endswith("DATABASE_URL") and not str(value).startswith("sqlite"):
            problems.append(f"env {name}: a database server's URL comes from a Secret (valueFrom)")
    return problems


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    return spec


def listening_ports(c: Doc) -> set[int]:
    """The ports a container listens on: its declared ports and any `--addr=…:port` argument."""
    ports = {int(p["containerPort"]) for p in c.get("ports") or [] if "containerPort" in p}
    for arg in [*(c.get("command") or []), *(c.get("args") or [])]:
        match = ADDRESS_ARG.match(str(arg))
        if match:
            ports.add(int(match.group(1)))
    return ports


def port_clash_problems(pod: Doc) -> list[str]:
    """The containers of a pod share one network namespace: one port, one listener."""
    owners: dict[int, str] = {}
    problems: list[str] = []
    for c, long_running in containers(pod):
        if not long_running:
            continue  # a run-to-completion init container is gone before the others start
        for port in sorted(listening_ports(c)):
            name = str(c.get("name", "?"))
            if port in owners:
                problems.append(
                    f"port {port} is taken by both containers {owners[port]} and {name}"
                )
            else:
                owners[port] = name
    return problems


def workload_problems(doc: Doc) -> list[str]:
    pod = pod_spec(doc)
    problems: list[str] = []
    for container, long_running in containers(pod):
        problems += container_problems(container, pod, long_running)
    problems += port_clash_problems(pod)
    return problems


def secret_problems(doc: Doc) -> list[str]:
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        return ["a Secret with data: secrets are made outside the repository, only referenced"]
    return []


def document_problems(doc: Doc) -> list[str]:
    problems = secret_problems(doc)
    if doc.get("kind") in WORKLOAD_KINDS:
        problems += workload_problems(doc)
    meta = doc.get("metadata") or {}
    if doc.get("kind") not in CLUSTER_SCOPED_KINDS and not meta.get("namespace"):
        problems.append("no metadata.namespace")
    return problems


def reference_problems(doc: Doc, docs: Sequence[Doc]) -> list[str]:
    """References to other documents of the same render that must resolve."""
    names = {(d.get("kind"), (d.get("metadata") or {}).get("name")) for d in docs}
    problems: list[str] = []
    if doc.get("kind") in ("HorizontalPodAutoscaler", "ScaledObject"):
        target = (doc.get("spec") or {}).get("scaleTargetRef") or {}
        ref = (target.get("kind", "Deployment"), target.get("name"))  # KEDA's default kind
        if ref not in names:
            problems.append(f"scaleTargetRef {ref[0]}/{ref[1]} is not rendered")
    cluster = ((doc.get("metadata") or {}).get("labels") or {}).get("strimzi.io/cluster")
    strimzi = str(doc.get("apiVersion", "")).startswith("kafka.strimzi.io/")
    if strimzi and cluster is not None and ("Kafka", cluster) not in names:
        problems.append(f"label strimzi.io/cluster={cluster} names no rendered Kafka")
    if doc.get("kind") in WORKLOAD_KINDS:
        problems += configmap_reference_problems(pod_spec(doc), names)
    if doc.get("kind") == "Service":
        problems += service_problems(doc, docs)
    if doc.get("kind") == "ConfigMap":
        problems += opa_config_problems(doc, docs)
    return problems


def configmap_reference_problems(pod: Doc, names: set[tuple[Any, Any]]) -> list[str]:
    """ConfigMaps a pod mounts or reads must be rendered (generated names carry their hash)."""
    wanted = [
        ((v.get("configMap") or {}).get("name"), f"volume {v.get('name', '?')}")
        for v in pod.get("volumes") or []
        if v.get("configMap")
    ]
    for c, _ in containers(pod):
        for source in c.get("envFrom") or []:
            if source.get("configMapRef"):
                wanted.append((source["configMapRef"].get("name"), f"container {c.get('name')}"))
    return [
        f"{where}: ConfigMap {name} is not rendered"
        for name, where in wanted
        if name not in EXTERNAL_CONFIGMAPS and ("ConfigMap", name) not in names
    ]


def service_problems(service: Doc, docs: Sequence[Doc]) -> list[str]:
    """A Service selects the pods of a rendered workload, and each target port exists there."""
    spec = service.get("spec") or {}
    selector: dict[str, str] = spec.get("selector") or {}
    if not selector:
        return []  # a Service without selector has its endpoints managed by hand
    pods = [
        pod_spec(d)
        for d in docs
        if d.get("kind") in WORKLOAD_KINDS
        and selector.items()
        <= (((d.get("spec") or {}).get("template") or {}).get("metadata") or {})
        .get("labels", {})
        .items()
    ]
    if not pods:
        return [f"selector {selector} matches no rendered workload's pods"]
    problems: list[str] = []
    for port in spec.get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        for pod in pods:
            served = [
                p
                for c, long_running in containers(pod)
                if long_running
                for p in c.get("ports") or []
                if target in (p.get("name"), p.get("containerPort"))
            ]
            if not served:
                problems.append(f"port {port.get('name', '?')}: no container port {target}")
                break
    return problems


def opa_config_problems(configmap: Doc, docs: Sequence[Doc]) -> list[str]:
    """An OPA configuration (a `services` and `bundles` document) pulls from rendered Services."""
    services = {
        (d.get("metadata") or {}).get("name"): {
            p.get("port") for p in (d.get("spec") or {}).get("ports") or []
        }
        for d in docs
        if d.get("kind") == "Service"
    }
    problems: list[str] = []
    for key, text in (configmap.get("data") or {}).items():
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if not (isinstance(config, dict) and {"services", "bundles"} <= config.keys()):
            continue
        opa_services = config.get("services") or {}
        for name, bundle in (config.get("bundles") or {}).items():
            if (bundle or {}).get("service") not in opa_services:
                problems.append(f"{key}: bundle {name} names no service of the configuration")
        for name, service in opa_services.items():
            url = urllib.parse.urlsplit(str((service or {}).get("url", "")))
            host = url.hostname or ""
            if "." in host and not re.search(r"\.svc(\.cluster\.local)?$", host):
                continue  # outside the cluster: not ours to resolve
            try:
                port = url.port or (443 if url.scheme == "https" else 80)
            except ValueError:
                problems.append(f"{key}: service {name}: bad URL {url.geturl()!r}")
                continue
            target = host.split(".")[0]
            if target not in services:
                problems.append(f"{key}: service {name}: {url.geturl()} names no rendered Service")
            elif port not in services[target]:
                problems.append(f"{key}: service {name}: Service {target} has no port {port}")
    return problems


# --- the repository, as written ------------------------------------------------------------------


def repository_problems(k8s_dir: Path) -> list[str]:
    """Secrets written anywhere under deploy/k8s, rendered by an overlay or not."""
    problems: list[str] = []
    for path in sorted([*k8s_dir.rglob("*.yaml"), *k8s_dir.rglob("*.yml")]):
        rel = path.relative_to(k8s_dir)
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        except yaml.YAMLError as e:
            problems.append(f"{rel}: not YAML: {shorten(str(e))}")
            continue
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            problems += [f"{rel}: {p}" for p in secret_problems(doc)]
            if doc.get("secretGenerator"):
                problems.append(f"{rel}: a secretGenerator puts secret values in the repository")
    return problems


# --- the run -------------------------------------------------------------------------------------


def validate_overlay(
    name: str, docs: Sequence[Doc], schemas_dir: Path, kubernetes_version: str
) -> list[Result]:
    return [
        Result(
            name,
            doc,
            tuple(
                schema_problems(doc, schemas_dir, kubernetes_version)
                + document_problems(doc)
                + reference_problems(doc, docs)
            ),
        )
        for doc in docs
    ]


def run(k8s_dir: Path, kustomize: Path, kubernetes_version: str) -> int:
    if not kustomize.is_file():
        print(f"validate_k8s: kustomize not found at {kustomize}: {SETUP_HINT}", file=sys.stderr)
        return 2
    overlays = sorted(p.parent for p in (k8s_dir / "overlays").glob("*/kustomization.yaml"))
    if not overlays:
        print(f"validate_k8s: no overlay under {k8s_dir / 'overlays'}", file=sys.stderr)
        return 2
    known = sorted({str(v).rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()})
    if kubernetes_version not in known:
        print(f"validate_k8s: Kubernetes {kubernetes_version} is not in {known}", file=sys.stderr)
        return 2
    schemas_dir = k8s_dir / "schemas"
    documents = failed = 0
    for overlay in overlays:
        try:
            docs = render(kustomize, overlay)
        except RenderError as e:
            print(f"FAIL  {overlay.name:<6} kustomize build: {shorten(str(e), 400)}")
            failed += 1
            continue
        for result in validate_overlay(overlay.name, docs, schemas_dir, kubernetes_version):
            print(result.line())
            documents += 1
            failed += bool(result.problems)
    repo_problems = repository_problems(k8s_dir)
    for problem in repo_problems:
        print(f"FAIL  repo   {problem}")
    failed += len(repo_problems)
    print(
        f"validate_k8s: {documents} documents in {len(overlays)} overlays"
        f" (Kubernetes {kubernetes_version} strict, custom resources from {schemas_dir.name}/),"
        f" {failed} failures"
    )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--k8s-dir", type=Path, default=REPO / "deploy" / "k8s")
    parser.add_argument("--kustomize", type=Path, default=REPO / ".tools" / "bin" / "kustomize")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    return run(args.k8s_dir.resolve(), args.kustomize, args.kubernetes_version)


if __name__ == "__main__":
    sys.exit(main())
