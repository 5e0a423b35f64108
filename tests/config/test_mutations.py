"""Property: whatever a corpus file is mutated into, taxiway answers in sentences.

Each example takes a real fly.toml from the corpus, damages it a few times (a line
deleted, duplicated or swapped with another, random bytes or characters inserted, the
file truncated, a value replaced by one of another type, NUL or invalid UTF-8 bytes
inserted) and may give it a .json/.yaml extension so the wrong parser reads it. Then
`taxiway config validate` (text and --json), `config show` and `config machines --json`
run in-process on it. Every answer must be exit 0 or 1 with no traceback and no
"internal error"; a file that does not parse gets exactly one line naming the file;
`--json` prints exactly the documented shape; the commands agree with each other, and
what `show` prints reads back to the same config.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taxiway.cli.main import main
from taxiway.config.loader import load_config
from validate_json import assert_validate_json

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
FILES = sorted([*CORPUS.glob("real/*.toml"), *CORPUS.glob("flyctl/*.toml")])
pytestmark = pytest.mark.skipif(not FILES, reason=f"the fly.toml corpus is not at {CORPUS}")

#: Values of every type (and some that are no type a field accepts) for "retype".
VALUES = [
    '"text"',
    '""',
    "42",
    "-1",
    "0",
    "3.5",
    "0x7fffffff",
    "true",
    "false",
    "[]",
    "[1, 'a']",
    "[[[[]]]]",
    "{}",
    "{ a = 1 }",
    "1979-05-27",
    "07:32:00",
    "1979-05-27T07:32:00Z",
    '"-5s"',
    '"1e400s"',
    '"99999999999999999999h"',
    '"512zb"',
    '"\\u0000"',
]

#: Numbers at the edges of what a float or an int holds: half of all "retype" values.
NUMBER_EDGES = [
    "nan",
    "inf",
    "-inf",
    "+inf",
    "1e308",
    "-1e308",
    "5e-324",
    "99999999999999999999999",
    "-99999999999999999999999",
]

#: A replacement value: any type, an edge number, or an array nested up to 1000 deep.
NEW_VALUES = st.one_of(
    st.sampled_from(VALUES),
    st.sampled_from(NUMBER_EDGES),
    st.integers(1, 1000).map(lambda depth: "[" * depth + "]" * depth),
)

#: What can be done to a file; a value of another type is the likeliest (it gets past the
#: parser, so it tests everything after it).
MUTATIONS = [
    "retype",
    "retype",
    "retype",
    "delete",
    "duplicate",
    "swap",
    "insert-bytes",
    "insert-text",
    "truncate",
    "nul",
    "bad-utf8",
]

#: A `key = value` line whose value is a number or a string starting with a digit.
NUMERIC = re.compile(rb'^[^=#]*=\s*"?[-+]?\d')

#: Most examples stay TOML; the rest are read by a parser that wasn't meant for them.
SUFFIXES = [".toml"] * 6 + [".json", ".yaml", ".yml"]

DIAGNOSTIC = re.compile(r"^(?!taxiway: )[^\n]+?(:\d+)?: (error|warning|info): .+$")
SUMMARY = re.compile(r"^\S+ is not valid: .+$")
VALID = re.compile(r"^\S+ is valid( \(\d+ warnings?\))?$")


@cache
def source(path: Path) -> bytes:
    return path.read_bytes()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str, list[str]]:
    """A damaged corpus file, its suffix, and what was done to it (for failure reports)."""
    original = draw(st.sampled_from(FILES))
    content = source(original)
    done = [f"{original.parent.name}/{original.name}"]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(MUTATIONS))
        lines = content.split(b"\n")
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "retype":
            candidates = [n for n, line in enumerate(lines) if b"=" in line]
            numeric = [n for n in candidates if NUMERIC.match(lines[n])]
            if numeric and draw(st.booleans()):
                candidates = numeric  # durations, sizes, ports, counts: where numbers go
            if candidates:
                i = draw(st.sampled_from(candidates))
                key = lines[i].split(b"=", 1)[0]
                lines[i] = key + b"= " + draw(NEW_VALUES).encode()
        elif kind == "truncate":
            cut = draw(st.integers(0, len(content)))
            lines = content[:cut].split(b"\n")
        else:
            if kind == "insert-bytes":
                junk = draw(st.binary(min_size=1, max_size=16))
            elif kind == "insert-text":
                junk = draw(st.text(min_size=1, max_size=16)).encode("utf-8")
            elif kind == "nul":
                junk = b"\x00"
            else:
                junk = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80"]))
            offset = draw(st.integers(0, len(content)))
            lines = (content[:offset] + junk + content[offset:]).split(b"\n")
        content = b"\n".join(lines)
        done.append(f"{kind}@{i}")
    suffix = draw(st.sampled_from(SUFFIXES))
    return content, suffix, done


def run(*args: str) -> tuple[int, str, str]:
    """`taxiway ARGS` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def assert_no_crash(code: int, out: str, err: str) -> None:
    assert code in (0, 1), (code, err)
    assert "Traceback" not in out + err, err
    assert "internal error" not in out + err, err


def check(path: Path) -> None:
    name = str(path)

    # text mode
    code, out, err = run("config", "validate", "-c", name)
    assert_no_crash(code, out, err)
    unreadable = err.startswith("taxiway: error: ")
    if unreadable:  # the file could not be read or parsed at all: one sentence
        assert code == 1
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1, err
        sentence = lines[0].removeprefix("taxiway: error: ")
        assert sentence.startswith(name), sentence
        rest = sentence[len(name) :]
        assert re.match(r"^:\d+: ", rest) or "top level" in rest or "nested too deeply" in rest, (
            sentence
        )
    else:
        for line in err.splitlines():
            assert DIAGNOSTIC.match(line) or SUMMARY.match(line), line
        if code == 0:
            assert VALID.match(out.strip()), out
        else:
            assert out == ""
            assert SUMMARY.match(err.splitlines()[-1]), err

    # --json: the same verdict, in exactly the documented shape
    json_code, json_out, json_err = run("config", "validate", "--json", "-c", name)
    assert_no_crash(json_code, json_out, json_err)
    assert json_code == code
    result = assert_validate_json(json_out)
    assert result["valid"] is (code == 0)
    if unreadable:
        (only,) = result["diagnostics"]
        assert only["severity"] == "error"
        assert only["message"] == sentence
        line = re.match(r"^:(\d+): ", rest)
        assert only["line"] == (int(line.group(1)) if line else None)

    # the commands that need a valid config fail exactly when validate does
    show = run("config", "show", "-c", name)
    assert_no_crash(*show)
    assert show[0] == code, show[2]
    machines = run("config", "machines", "--json", "-c", name)
    assert_no_crash(*machines)
    assert machines[0] == code, machines[2]
    if code == 0:
        specs = json.loads(machines[1])
        assert isinstance(specs, dict) and specs
        assert all(spec["group"] == group for group, spec in specs.items())
        # what show prints reads back to the same config
        shown = path.with_name("shown.toml")
        shown.write_text(show[1], encoding="utf-8")
        try:
            assert load_config(shown).config == load_config(path).config, show[1]
        finally:
            shown.unlink()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=mutated())
def test_mutated_corpus_files_get_sentences_not_tracebacks(
    case: tuple[bytes, str, list[str]], tmp_path: Path
) -> None:
    content, suffix, _done = case
    path = tmp_path / f"fly{suffix}"
    path.write_bytes(content)
    try:
        check(path)
    finally:
        path.unlink()


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_every_corpus_file_read_by_the_wrong_parser(tmp_path: Path, suffix: str) -> None:
    """Not random: each corpus file once as .json and as .yaml, where it is garbage."""
    for original in FILES:
        path = tmp_path / f"{original.stem}{suffix}"
        path.write_bytes(source(original))
        check(path)
        path.unlink()
