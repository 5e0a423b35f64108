"""Property: whatever a corpus file is mutated into, taxiway answers in sentences.

Each example takes a real fly.toml, damages it (lines deleted, duplicated or swapped,
bytes inserted, truncated, values changed to another type, read by the wrong parser)
and runs the commands in-process. The answer must be exit 0 or 1, never a traceback or
an "internal error"; a file that doesn't parse gets exactly one line naming the file;
`--json` always prints the documented shape.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taxiway.cli.main import main

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
FILES = sorted([*CORPUS.glob("real/*.toml"), *CORPUS.glob("flyctl/*.toml")])
pytestmark = pytest.mark.skipif(not FILES, reason=f"the fly.toml corpus is not at {CORPUS}")

VALUES = st.sampled_from(
    ['"text"', "42", "-1", "3.5", "true", "[]", "[1, 'a']", "{}", "{ a = 1 }", "1979-05-27", '""']
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str]:
    source = draw(st.sampled_from(FILES)).read_bytes() if FILES else b""
    lines = source.split(b"\n")
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(["delete", "duplicate", "swap", "insert", "truncate", "retype", "nul"])
        )
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if kind == "delete" and lines:
            del lines[i]
        elif kind == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif kind == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "insert":
            lines.insert(i, draw(st.binary(max_size=12)) + draw(st.text(max_size=12)).encode())
        elif kind == "truncate" and lines:
            lines = lines[: i + 1]
            lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
        elif kind == "retype" and lines and b"=" in lines[i]:
            key = lines[i].split(b"=", 1)[0]
            lines[i] = key + b"= " + draw(VALUES).encode()
        elif kind == "nul":
            lines.insert(i, b"\x00\xff\xfe")
    suffix = draw(st.sampled_from([".toml", ".toml", ".toml", ".json", ".yaml"]))
    return b"\n".join(lines), suffix


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def assert_no_crash(code: int, out: str, err: str) -> None:
    assert code in (0, 1), (code, err)
    assert "Traceback" not in out + err
    assert "internal error" not in err


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=mutated())
def test_mutated_configs_get_sentences_not_tracebacks(
    case: tuple[bytes, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    content, suffix = case
    path = tmp_path_factory.mktemp("fuzz") / f"fly{suffix}"
    path.write_bytes(content)

    code, out, err = run("config", "validate", "-c", str(path))
    assert_no_crash(code, out, err)
    if err.startswith("taxiway: error: "):  # the file could not be read or parsed at all
        assert code == 1
        assert err.count("\n") == 1, err
        assert str(path) in err
        assert re.search(r"(:\d+: | must hold | not a text file)", err), err

    code, out, err = run("config", "validate", "--json", "-c", str(path))
    assert_no_crash(code, out, err)
    result = json.loads(out)
    assert set(result) == {"valid", "diagnostics"}
    assert all(set(d) == {"severity", "message", "path", "line"} for d in result["diagnostics"])
    assert result["valid"] == (code == 0)

    for command in (["config", "show"], ["config", "machines", "--json"]):
        assert_no_crash(*run(*command, "-c", str(path)))
