"""Shared by the tests of the installed wheel: the repository's shipped model, its dev lines and the CLI binary."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
MODEL = REPO / "models" / "sst2-minilm-l6"
DEV = REPO / "tests" / "data" / "sst2-dev-40.tsv"


def dev_sentences() -> list[str]:
    """The committed SST-2 dev sentences (the first column; the header skipped)."""
    lines = DEV.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line.strip()]


@pytest.fixture(scope="session")
def cosee_edge_bin() -> Path:
    """The `cosee-edge` binary the wheel is compared with: $COSEE_EDGE, else the release build of the target dir."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = Path(os.environ.get("COSEE_EDGE", target / "release" / "cosee-edge"))
    if not path.is_file():
        pytest.fail(f"no cosee-edge binary at {path}: build it (cargo build --release) or set COSEE_EDGE")
    return path


def cli_json_lines(binary: Path, lines: list[str], *args: str) -> list[dict]:
    """`cosee-edge classify --model MODEL ARGS` with `lines` on stdin: one JSON answer per line."""
    out = subprocess.run(
        [str(binary), "classify", "--model", str(MODEL), *args],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    return [json.loads(line) for line in out.stdout.splitlines()]
