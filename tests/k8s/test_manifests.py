"""deploy/k8s renders and validates offline, and the validation catches what it promises to.

Runs scripts/validate_k8s.py as CI does (`make k8s-validate`): every overlay rendered with the
project's kustomize (.tools/bin/kustomize, built by `make setup`), every document validated. The
rule tests break a copy of deploy/k8s and expect the validation to fail, naming the rule.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
SCRIPT = REPO / "scripts" / "validate_k8s.py"
KUSTOMIZE = REPO / ".tools" / "bin" / "kustomize"


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
    assert "NetworkPolicy tdg/default-deny" in proc.stdout  # prod carries the component
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
