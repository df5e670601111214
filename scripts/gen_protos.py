"""Generate the Python stubs of proto/ into libs/proto/src (messages, gRPC, and .pyi stubs).

`--check` generates into a temporary folder and fails with "Protos changed" when the committed
stubs differ, so CI catches stubs out of date with proto/.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "libs" / "proto" / "src"


def generate(out: Path) -> None:
    import grpc_tools  # type: ignore[import-untyped]

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_DIR)
    # Packages need __init__.py for mypy and wheels; the import path equals the proto package.
    for pkg_dir in {p.parent for p in out.rglob("*_pb2.py")}:
        d = pkg_dir
        while d != out:
            (d / "__init__.py").touch()
            (d / "py.typed").touch()
            d = d.parent


def tree_differs(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    diffs += [f"only in committed: {n}" for n in cmp.left_only]
    diffs += [f"missing: {n}" for n in cmp.right_only]
    diffs += [f"differs: {n}" for n in cmp.diff_files]
    for sub in cmp.common_dirs:
        diffs += [f"{sub}/{d}" for d in tree_differs(a / sub, b / sub)]
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            diffs = tree_differs(OUT_DIR / "tdg", Path(tmp) / "tdg")
        if diffs:
            print("Protos changed: run `make proto` and commit the result", *diffs, sep="\n  ")
            return 1
        print("protos up to date")
        return 0
    shutil.rmtree(OUT_DIR / "tdg", ignore_errors=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    generate(OUT_DIR)
    print(f"generated stubs in {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
