"""Generate the Python code for proto/ into services/v1 (importable as notifyagent.v1).

Also writes services/v1/notifyagent.binpb, the descriptors with their comments,
which server reflection serves so that `grpcurl describe` explains the contract.

The one way generated code is made; CI runs it with --check and fails on a diff.
Usage: python scripts/genproto.py [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = PROTO_ROOT / "notifyagent" / "v1"
TARGET = ROOT / "services" / "v1"
HEADER = '"""Generated from proto/notifyagent/v1 by scripts/genproto.py; do not edit."""\n'


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    generated = out / "notifyagent" / "v1"
    generated.mkdir(parents=True, exist_ok=True)
    args += ["--include_source_info", f"--descriptor_set_out={generated / 'notifyagent.binpb'}"]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    (generated / "__init__.py").write_text(HEADER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if services/v1 is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "notifyagent" / "v1"
        if args.check:
            names = sorted(p.name for p in fresh.iterdir())
            current = sorted(p.name for p in TARGET.iterdir() if p.is_file()) if TARGET.exists() else []
            match, mismatch, errors = filecmp.cmpfiles(fresh, TARGET, names, shallow=False)
            stale = mismatch + errors + sorted(set(current) - set(names))
            if stale:
                print(f"generated code is stale: {', '.join(stale)}; run: python scripts/genproto.py")
                return 1
            print(f"generated code is fresh ({len(match)} files)")
            return 0
        if TARGET.exists():
            shutil.rmtree(TARGET)
        shutil.copytree(fresh, TARGET)
        print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
