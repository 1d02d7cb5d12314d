"""Regenerate serving/protocol/grpc/generated/ from serving/protocol/grpc/oip_v2.proto.

    .venv/bin/python scripts/gen_proto.py           write the modules
    .venv/bin/python scripts/gen_proto.py --check   exit 1 when the committed modules are stale

The modules are grpcio-tools' output (``--python_out`` and ``--pyi_out``) with one rewrite:
protoc's Python code adds its file to protobuf's process-wide default pool, where
``tritonclient.grpc`` and ``kserve`` register the same ``inference.*`` names from their own
copies of the OIP schema, and the default pool refuses a second definition of a name ("duplicate
symbol"). So the generated module adds its file to a pool of its own instead, and the server
runs next to any client library (and the tests import both into one process).

They are committed, not generated at build time: installing the package (pip, uv, the image)
then needs no protoc, mypy reads the .pyi stubs from the checkout, and a schema change shows up
in review as a diff. tests/protocol/grpc/test_stubs.py runs ``--check``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "serving" / "protocol" / "grpc"
PROTO = "oip_v2.proto"
OUT = PROTO_DIR / "generated"
INIT = '"""grpcio-tools output for oip_v2.proto; regenerate with scripts/gen_proto.py, never edit."""\n'

DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = (
    "# serving: a pool of our own, not the default one (scripts/gen_proto.py says why)\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def generate() -> dict[str, str]:
    """File name -> contents of the package serving.protocol.grpc.generated."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", f"--pyi_out={tmp}", PROTO]
        if protoc.main(argv) != 0:
            raise SystemExit(f"gen_proto: protoc failed on {PROTO_DIR / PROTO}")
        module = (Path(tmp) / "oip_v2_pb2.py").read_text()
        stub = (Path(tmp) / "oip_v2_pb2.pyi").read_text()
    if module.count(DEFAULT_POOL) != 1:
        raise SystemExit(
            "gen_proto: protoc's output no longer adds its file to the default pool in one statement; "
            "update the rewrite in scripts/gen_proto.py for this grpcio-tools version"
        )
    return {
        "__init__.py": INIT,
        "oip_v2_pb2.py": module.replace(DEFAULT_POOL, PRIVATE_POOL),
        "oip_v2_pb2.pyi": stub,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files, write nothing"
    )
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (OUT / name).is_file() or (OUT / name).read_text() != text
        ]
        extra = sorted(p.name for p in OUT.glob("*") if p.is_file() and p.name not in files)
        if stale or extra:
            print(
                f"gen_proto: {OUT.relative_to(ROOT)} is stale ({', '.join(stale + extra)}); "
                "run: .venv/bin/python scripts/gen_proto.py",
                file=sys.stderr,
            )
            return 1
        print(f"gen_proto: {OUT.relative_to(ROOT)} matches {PROTO}")
        return 0
    OUT.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    print(f"gen_proto: wrote {', '.join(sorted(files))} to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
