"""Files that can't be read as a config, and files full of wrong values.

A file that cannot be found, read or parsed is one sentence naming the file (and the
line, where there is one) and exit 1. A file that parses but holds wrong values is a
list of error diagnostics with key paths and lines, and exit 1. Never a traceback, never
an "internal error". Checked through `load_config` and through the command's own `main`,
run in-process (the command line as a real process is tests/cli/test_commands.py's).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import socket
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import NamedTuple

import pytest

from taxiway.cli.main import main
from taxiway.config.diagnostics import Severity
from taxiway.config.loader import LoadedConfig, load_config
from taxiway.config.source import MAX_NESTING, ConfigFileError

IS_ROOT = os.geteuid() == 0


class Result(NamedTuple):
    """What one run of the command gave."""

    returncode: int
    stdout: str
    stderr: str


def taxiway(cwd: Path, *args: str) -> Result:
    """`taxiway ARGS` from ``cwd``, in-process: the command's `main`, without a process start."""
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(old)
    return Result(code, out.getvalue(), err.getvalue())


def validate(cwd: Path, *args: str) -> Result:
    return taxiway(cwd, "config", "validate", *args)


def one_sentence(result: Result) -> str:
    """Exit 1 and exactly one `taxiway: error: …` line on stderr; returns the sentence."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "internal error" not in output, output
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("taxiway: error: "), lines[0]
    return lines[0].removeprefix("taxiway: error: ")


def diagnostics_failure(result: Result) -> list[str]:
    """Exit 1 with diagnostic lines (and the summary) on stderr."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "internal error" not in output, output
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert lines
    for line in lines[:-1]:
        assert re.match(r"^[^:\s]+(:\d+)?: (error|warning|info): .+", line), line
    assert re.match(r"^\S+ is not valid: \d+ errors?$", lines[-1]), lines[-1]
    return lines


def load_error(path: Path) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message, "one sentence, one line"
    return info.value


def errors(loaded: LoadedConfig) -> dict[str, int | None]:
    """Error diagnostics as {key path: line}."""
    return {d.path_str: d.line for d in loaded.diagnostics if d.severity is Severity.ERROR}


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} is not in the text")


# --- files that are not there ----------------------------------------------------------------


def test_no_fly_toml_in_the_current_folder(tmp_path: Path) -> None:
    sentence = one_sentence(validate(tmp_path))
    assert sentence == "no fly.toml in this folder; run taxiway in the app's folder or pass -c PATH"
    for command in (("show",), ("machines",), ("save", "-o", "out.json")):
        assert one_sentence(taxiway(tmp_path, "config", *command)) == sentence


def test_no_fly_toml_through_load_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as info:
        load_config(cwd=tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "no fly.toml" in str(info.value)
    assert info.value.line is None


def test_a_named_file_that_does_not_exist(tmp_path: Path) -> None:
    assert one_sentence(validate(tmp_path, "-c", "nope.toml")) == "nope.toml: no such file"
    assert one_sentence(validate(tmp_path, "-c", "sub/nope.json")) == "sub/nope.json: no such file"
    error = load_error(tmp_path / "nope.toml")
    assert str(error) == f"{tmp_path / 'nope.toml'}: no such file"
    assert error.line is None
    assert error.path == tmp_path / "nope.toml"


def test_a_path_through_a_file(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "a"\n')
    sentence = one_sentence(validate(tmp_path, "-c", "fly.toml/fly.toml"))
    assert sentence.startswith("fly.toml/fly.toml")


def test_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").symlink_to(tmp_path / "gone.toml")
    sentence = one_sentence(validate(tmp_path, "-c", "fly.toml"))
    assert sentence.startswith("fly.toml")


def test_a_file_name_too_long_for_the_system(tmp_path: Path) -> None:
    name = "a" * 300 + ".toml"  # longer than NAME_MAX (255): the OS refuses to look it up
    sentence = one_sentence(validate(tmp_path, "-c", name))
    assert name in sentence
    with pytest.raises(ConfigFileError):
        load_config(tmp_path / name)


# --- folders ---------------------------------------------------------------------------------


def test_a_folder_without_fly_toml(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no config here\n")
    sentence = one_sentence(validate(tmp_path, "-c", "empty"))
    assert sentence == "empty is a directory with no fly.toml in it; pass the config file itself"
    error = load_error(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(error)


def test_a_folder_named_like_the_config(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").mkdir()  # a folder called fly.toml, holding nothing
    sentence = one_sentence(validate(tmp_path, "-c", "fly.toml"))
    assert sentence.startswith("fly.toml ")
    assert "directory" in sentence


# --- files that cannot be read ---------------------------------------------------------------


@pytest.mark.skipif(
    IS_ROOT, reason="root reads a file whatever its mode, so chmod 000 can't stop it"
)
def test_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "fly.toml"
    path.write_text('app = "a"\n')
    path.chmod(0)
    try:
        assert one_sentence(validate(tmp_path)) == "cannot read fly.toml: permission denied"
        assert one_sentence(validate(tmp_path, "-c", "fly.toml")) == (
            "cannot read fly.toml: permission denied"
        )
        error = load_error(path)
        assert str(error) == f"cannot read {path}: permission denied"
    finally:
        path.chmod(0o600)


def test_a_socket_in_place_of_the_file(tmp_path: Path) -> None:
    """A file that no one (not even root) can read: a unix socket named fly.toml."""
    path = tmp_path / "fly.toml"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        sentence = one_sentence(validate(tmp_path, "-c", "fly.toml"))
        assert sentence.startswith("cannot read fly.toml")
        with pytest.raises(ConfigFileError):
            load_config(path)


# --- binary garbage --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fly.toml", "fly.json", "fly.yaml"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes_are_one_sentence_with_file_and_line(
    tmp_path: Path, name: str, seed: int
) -> None:
    raw = random.Random(seed).randbytes(512)
    (tmp_path / name).write_bytes(raw)
    sentence = one_sentence(validate(tmp_path, "-c", name))
    assert re.match(rf"^{re.escape(name)}:\d+: ", sentence), sentence


@pytest.mark.parametrize("name", ["fly.toml", "fly.json", "fly.yaml", "fly.yml"])
def test_random_bytes_through_load_config(tmp_path: Path, name: str) -> None:
    rng = random.Random(name)
    path = tmp_path / name
    for size in (1, 2, 3, 8, 64, 4096):
        for _ in range(10):
            path.write_bytes(rng.randbytes(size))
            try:
                loaded = load_config(path)
            except ConfigFileError as error:
                assert str(path) in str(error)
                assert "\n" not in str(error)
            else:  # a few bytes can happen to be a valid (empty-ish) document
                assert isinstance(loaded, LoadedConfig)


def test_nul_bytes(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_bytes(b'app = "a"\n\n[env]\nA = "\x00\x00"\n')
    assert one_sentence(validate(tmp_path)) == (
        "fly.toml:4: not a text file (it contains NUL bytes)"
    )
    assert load_error(tmp_path / "fly.toml").line == 4


def test_invalid_utf8(tmp_path: Path) -> None:
    raw = b'app = "a"\nprimary_region = "\xc3\x28"\n'
    (tmp_path / "fly.toml").write_bytes(raw)
    offset = raw.index(b"\xc3")
    assert one_sentence(validate(tmp_path)) == (
        f"fly.toml:2: not a text file (not valid UTF-8 at byte {offset})"
    )
    error = load_error(tmp_path / "fly.toml")
    assert error.line == 2


@pytest.mark.parametrize("name", ["fly.json", "fly.yaml"])
def test_invalid_utf8_in_json_and_yaml(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\n\n\n\xff\xfe\n")
    assert one_sentence(validate(tmp_path, "-c", name)).startswith(f"{name}:4: not a text file")


def test_a_file_in_utf16(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "a"\n', encoding="utf-16")
    sentence = one_sentence(validate(tmp_path))
    assert sentence.startswith("fly.toml:1: not a text file")


def test_an_image_file(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    (tmp_path / "fly.toml").write_bytes(png)
    # the first NUL comes after the two newlines of the PNG signature
    assert one_sentence(validate(tmp_path)) == "fly.toml:3: not a text file (it contains NUL bytes)"


# --- malformed TOML --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            'app = "a"\n\n[env]\n  A = "1"\n  B = "2"\n  A = "3"\n',
            6,
            "the same key is defined twice",
        ),
        ('app = "a"\napp = "b"\n', 2, "the same key is defined twice"),
        ('app = "a"\n[env]\nA = "1"\n[env]\nB = "2"\n', 4, "the same table is declared twice"),
        ('app = "a"\n\n[http_service\ninternal_port = 8080\n', 3, ""),
        ('app = "a"\n[[services]\n', 2, ""),
        ("app = hello\n", 1, "strings need quotes"),
        ('app = "a"\nprimary_region = ams\n', 2, "strings need quotes"),
        ('app = "a"\nkill_signal\n', 2, "'='"),
        ('app = "a"\nx = [1, 2\n', 3, "]"),
        ('app = "a"\nx = """abc\n', 3, "not closed"),
        ('app = "a"\r\nx = \r\n', 2, ""),
        ('app = "a"\nx = 1 2\n', 2, ""),
    ],
    ids=[
        "duplicate-key-in-table",
        "duplicate-top-level-key",
        "duplicate-table",
        "unclosed-table-header",
        "unclosed-array-of-tables-header",
        "bare-string",
        "bare-string-line-2",
        "key-without-value",
        "unclosed-array",
        "unclosed-multiline-string",
        "crlf-missing-value",
        "two-values",
    ],
)
def test_malformed_toml(tmp_path: Path, text: str, line: int, reason: str) -> None:
    (tmp_path / "fly.toml").write_text(text, encoding="utf-8", newline="")
    sentence = one_sentence(validate(tmp_path))
    assert sentence.startswith(f"fly.toml:{line}: not valid TOML: "), sentence
    assert reason in sentence
    error = load_error(tmp_path / "fly.toml")
    assert error.line == line
    assert error.path == tmp_path / "fly.toml"


def test_malformed_toml_in_a_file_named_with_c(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "staging.toml").write_text('app = "a"\n\n\nenv = {A = "1"\n')
    sentence = one_sentence(validate(tmp_path, "-c", "deploy/staging.toml"))
    assert sentence.startswith("deploy/staging.toml:4: not valid TOML: ")


def test_the_corpus_file_with_a_duplicate_key(tmp_path: Path) -> None:
    corpus = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "real" / "074.toml"
    if not corpus.exists():
        pytest.skip(f"the corpus is not at {corpus.parent}")
    (tmp_path / "fly.toml").write_bytes(corpus.read_bytes())
    assert one_sentence(validate(tmp_path)) == (
        "fly.toml:20: not valid TOML: the same key is defined twice"
    )


# --- malformed JSON and YAML -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("fly.json", '{\n  "app": "a",\n}\n', 3),
        ("fly.json", '{\n  "app": "a"\n', 3),
        ("fly.json", '{\n  "app": "a",\n  "env": {"A": tru}\n}\n', 3),
        ("fly.json", '{"app": "a"}\n{"app": "b"}\n', 2),
        ("fly.json", "{\n  'app': 'a'\n}\n", 2),
        ("fly.json", "", 1),
        ("fly.yaml", "app: a\n  env: b\n", 2),
        ("fly.yaml", "app: a\nenv:\n\t- x\n", 3),
        ("fly.yaml", "app: a\nenv: [a\n", 3),
        ("fly.yml", 'app: "a\n', 2),
        ("fly.yaml", "app: a\nenv: *nothing\n", 2),
        ("fly.yaml", "app: a\n---\napp: b\n", 2),
        ("fly.yaml", "app: a\nx: \x07\n", 2),
    ],
    ids=[
        "json-trailing-comma",
        "json-unclosed",
        "json-bad-literal",
        "json-two-documents",
        "json-single-quotes",
        "json-empty",
        "yaml-bad-indent",
        "yaml-tab",
        "yaml-unclosed-flow",
        "yaml-unclosed-quote",
        "yaml-undefined-alias",
        "yaml-two-documents",
        "yaml-control-character",
    ],
)
def test_malformed_json_and_yaml(tmp_path: Path, name: str, text: str, line: int) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    kind = "JSON" if name.endswith(".json") else "YAML"
    sentence = one_sentence(validate(tmp_path, "-c", name))
    assert sentence.startswith(f"{name}:{line}: not valid {kind}: "), sentence
    assert load_error(tmp_path / name).line == line


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("fly.json", "[1, 2]\n", "a list"),
        ("fly.json", '[{"app": "a"}]\n', "a list"),
        ("fly.json", '"app"\n', "a string"),
        ("fly.json", "42\n", "a number"),
        ("fly.json", "true\n", "a boolean"),
        ("fly.json", "null\n", "nothing"),
        ("fly.yaml", "- app: a\n", "a list"),
        ("fly.yaml", "just words\n", "a string"),
        ("fly.yml", "3.5\n", "a number"),
    ],
)
def test_a_top_level_that_is_not_a_table(tmp_path: Path, name: str, text: str, kind: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    sentence = one_sentence(validate(tmp_path, "-c", name))
    assert sentence.startswith(f"{name} must hold a table of keys at the top level, not {kind}")
    error = load_error(tmp_path / name)
    assert "top level" in str(error)


# --- keys set twice --------------------------------------------------------------------------


def test_a_yaml_file_with_the_same_key_twice(tmp_path: Path) -> None:
    # YAML, like TOML, requires the keys of a mapping to be unique (YAML 1.2, 3.2.1.1), and
    # flyctl's reader (gopkg.in/yaml.v3) refuses the file; "the last one wins" would
    # silently drop the user's first value.
    (tmp_path / "fly.yaml").write_text("app: first\nprimary_region: ams\napp: second\n")
    sentence = one_sentence(validate(tmp_path, "-c", "fly.yaml"))
    assert sentence == (
        "fly.yaml:3: not valid YAML: app is set twice (first on line 1); keys must be unique "
        "in YAML, and flyctl refuses the file too"
    )
    assert load_error(tmp_path / "fly.yaml").line == 3


@pytest.mark.parametrize(
    ("text", "line", "where", "first"),
    [
        (
            "app: a\nservices:\n  - internal_port: 80\n    ports: []\n    internal_port: 81\n",
            5,
            "services[0].internal_port",
            3,
        ),
        ("app: a\nenv:\n  A: '1'\n  B: '2'\n  A: '3'\n  B: '4'\n", 5, "env.A", 3),
        ("app: a\nenv: {A: '1', A: '2'}\n", 2, "env.A", 2),
        ("env:\n  A: '1'\napp: a\nenv:\n  A: '1'\n", 4, "env", 1),
        ("app: a\n'app': b\n", 2, "app", 1),  # the same key text, quoted or not
    ],
    ids=["in-a-list", "first-of-two", "flow", "a-table", "quoted"],
)
def test_yaml_keys_set_twice_name_the_key_and_both_lines(
    tmp_path: Path, text: str, line: int, where: str, first: int
) -> None:
    (tmp_path / "fly.yaml").write_text(text)
    sentence = one_sentence(validate(tmp_path, "-c", "fly.yaml"))
    assert sentence.startswith(
        f"fly.yaml:{line}: not valid YAML: {where} is set twice (first on line {first}); "
    ), sentence


def test_yaml_anchors_and_merge_keys_are_not_keys_set_twice(tmp_path: Path) -> None:
    # `<<: *base` brings keys in that the mapping may then set itself: that is overriding,
    # not repeating; an alias used twice shares one mapping, which is not a repeat either.
    text = (
        "app: a\n"
        "base: &base {interval: 10s, timeout: 2s}\n"
        "http_service:\n"
        "  internal_port: 8080\n"
        "  checks:\n"
        "    - <<: *base\n"
        "      timeout: 5s\n"
        "    - *base\n"
    )
    (tmp_path / "fly.yaml").write_text(text)
    loaded = load_config(tmp_path / "fly.yaml")
    assert errors(loaded) == {}
    checks = loaded.config.http_service.checks
    assert [(c.interval, c.timeout) for c in checks] == [("10s", "5s"), ("10s", "2s")]


def test_a_json_key_set_twice_is_a_warning_and_the_last_one_counts(tmp_path: Path) -> None:
    # Go's encoding/json (flyctl) and Python's json both keep the last value; the file is
    # read, but the value that is dropped is named, with the line of the one that counts.
    text = (
        "{\n"
        '  "app": "first",\n'
        '  "env": {"A": "1",\n'
        '          "A": "2"},\n'
        '  "services": [{"internal_port": 80, "ports": [{"port": 80}],\n'
        '                "internal_port": 81}],\n'
        '  "app": "second"\n'
        "}\n"
    )
    (tmp_path / "fly.json").write_text(text)
    loaded = load_config(tmp_path / "fly.json")
    assert loaded.valid
    assert loaded.config.app == "second"
    assert loaded.config.env == {"A": "2"}
    assert loaded.config.services[0].internal_port == 81
    repeated = {
        d.path_str: d
        for d in loaded.diagnostics
        if d.severity is Severity.WARNING and "set twice" in d.message
    }
    assert {path: d.line for path, d in repeated.items()} == {
        "app": 7,
        "env.A": 4,
        "services[0].internal_port": 6,
    }
    assert repeated["app"].message == (
        "app is set twice in one JSON object; the last one counts, as in flyctl, and the first "
        "is ignored"
    )
    result = validate(tmp_path, "-c", "fly.json")
    assert result.returncode == 0
    assert "fly.json:4: warning: env.A is set twice in one JSON object" in result.stderr
    assert validate(tmp_path, "-c", "fly.json", "--strict").returncode == 1


# --- numbers as written ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("fly.toml", 'app = "a"\n[[vm]]\nmemory = {}\n'),
        ("fly.json", '{{\n  "app": "a",\n  "vm": {{"memory": {}}}\n}}\n'),
        ("fly.yaml", "app: a\nvm:\n  memory: {}\n"),
    ],
)
@pytest.mark.parametrize(
    "number", ["12345678901234.567", "99999999999999999999999.0", "1.5e+13", "123456789012345678.9"]
)
def test_a_huge_float_is_quoted_as_written(
    tmp_path: Path, name: str, text: str, number: str
) -> None:
    # a double holds ~17 digits: printed back, 12345678901234.567 would read ...566 and
    # 99999999999999999999999.0 would read 1e+23, neither of which the user wrote
    (tmp_path / name).write_text(text.format(number))
    loaded = load_config(tmp_path / name)
    messages = [d.message for d in loaded.diagnostics if d.path_str == "vm[0].memory"]
    assert messages == [f"vm[0].memory: {number} is not a usable size"]
    assert errors(loaded) == {"vm[0].memory": 3}


def test_floats_keep_their_value_where_only_messages_quote_them(tmp_path: Path) -> None:
    text = 'app = "a"\nkill_timeout = 2.50\n[env]\nRATIO = 1.50\n[deploy]\nmax_unavailable = 0.50\n'
    (tmp_path / "fly.toml").write_text(text)
    loaded = load_config(tmp_path / "fly.toml")
    # the value is what flyctl makes of the number; the message quotes the file
    assert loaded.config.env == {"RATIO": "1.5"}
    (warning,) = [d for d in loaded.diagnostics if d.path_str == "env.RATIO"]
    assert 'is the number 1.50; environment values are strings, so it is read as "1.5"' in (
        warning.message
    )
    assert loaded.config.kill_timeout == "2s"
    assert loaded.config.deploy.max_unavailable == 0.5
    assert type(loaded.config.deploy.max_unavailable) is float  # a plain float in the model


# --- empty files, BOMs, line endings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("fly.toml", ""),
        ("fly.toml", "\n\n   \n"),
        ("fly.toml", "# only a comment\n"),
        ("fly.yaml", ""),
        ("fly.yaml", "# only a comment\n"),
        ("fly.yml", "---\n"),
        ("fly.json", "{}"),
    ],
    ids=["toml-empty", "toml-blank", "toml-comment", "yaml-empty", "yaml-comment", "yml-doc", "{}"],
)
def test_empty_configs_load_without_errors(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    loaded = load_config(tmp_path / name)
    assert loaded.valid
    assert errors(loaded) == {}
    result = validate(tmp_path, "-c", name)
    assert result.returncode == 0, result.stderr
    assert f"{name} is valid" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("fly.toml", b'\xef\xbb\xbfapp = "bom"\n\n[http_service]\ninternal_port = 0\n'),
        ("fly.json", b'\xef\xbb\xbf{\n"app": "bom",\n"http_service": {\n"internal_port": 0}}\n'),
        ("fly.yaml", b"\xef\xbb\xbfapp: bom\nhttp_service:\n\n  internal_port: 0\n"),
    ],
)
def test_a_utf8_bom_is_not_part_of_the_config(tmp_path: Path, name: str, raw: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(raw)
    loaded = load_config(path)
    assert loaded.config.app == "bom"
    assert errors(loaded) == {"http_service.internal_port": 4}  # lines are not shifted
    lines = diagnostics_failure(validate(tmp_path, "-c", name))
    assert lines[0].startswith(f"{name}:4: error: http_service.internal_port")
    path.write_bytes(
        raw.replace(b"internal_port = 0", b"internal_port = 80").replace(b": 0", b": 80")
    )
    assert validate(tmp_path, "-c", name).returncode == 0


def test_crlf_line_endings_keep_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_bytes(b'app = "a"\r\n\r\n[http_service]\r\ninternal_port = 0\r\n')
    assert errors(load_config(tmp_path / "fly.toml")) == {"http_service.internal_port": 4}


# --- wrong types deep inside -----------------------------------------------------------------

WRONG_TYPES = """\
app = "typed"
env = [1, 2]

[[services]]
  internal_port = "abc"
  protocol = "tcp"
  ports = 5

[http_service]
  internal_port = [8080]

  [http_service.concurrency]
    soft_limit = "many"

[[vm]]
  memory = true
"""


def test_wrong_types_deep_inside_are_diagnostics(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text(WRONG_TYPES)
    loaded = load_config(tmp_path / "fly.toml")  # no exception: problems are diagnostics
    found = errors(loaded)
    expected = {
        "services[0].internal_port": line_of(WRONG_TYPES, 'internal_port = "abc"'),
        "services[0].ports": line_of(WRONG_TYPES, "ports = 5"),
        "http_service.internal_port": line_of(WRONG_TYPES, "internal_port = [8080]"),
        "http_service.concurrency.soft_limit": line_of(WRONG_TYPES, 'soft_limit = "many"'),
        "vm[0].memory": line_of(WRONG_TYPES, "memory = true"),
    }
    for path, line in expected.items():
        assert found.get(path) == line, (path, found)
    env_errors = {path: line for path, line in found.items() if path.startswith("env")}
    assert env_errors and set(env_errors.values()) == {2}, found
    messages = {d.path_str: d.message for d in loaded.diagnostics}
    assert 'not the string "abc"' in messages["services[0].internal_port"]
    assert "the number 5" in messages["services[0].ports"]


def test_wrong_types_through_the_command(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text(WRONG_TYPES)
    lines = diagnostics_failure(validate(tmp_path))
    assert (
        'fly.toml:5: error: services[0].internal_port must be a whole number, not the string "abc"'
        in lines
    )
    assert any(line.startswith("fly.toml:7: error: services[0].ports ") for line in lines)
    assert any(line.startswith("fly.toml:2: error: env") for line in lines)
    for command in (("show",), ("machines", "--json"), ("save", "-o", "x.json")):
        result = taxiway(tmp_path, "config", *command)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        assert result.stderr.splitlines()[-1].startswith("taxiway: error: fly.toml is not valid")


@pytest.mark.parametrize(
    ("name", "text", "path", "needle"),
    [
        (
            "fly.json",
            '{\n  "app": "a",\n  "env": {"A": [1]},\n  "services": [\n'
            '    {"internal_port": "abc", "ports": 5}\n  ]\n}\n',
            "services[0].internal_port",
            '"internal_port": "abc"',
        ),
        (
            "fly.json",
            '{\n  "app": "a",\n  "env": {"A": [1]}\n}\n',
            "env.A",
            '"env"',
        ),
        (
            "fly.yaml",
            "app: a\nservices:\n  - internal_port: abc\n    ports: 5\n",
            "services[0].internal_port",
            "internal_port: abc",
        ),
        (
            "fly.yaml",
            "app: a\nservices:\n  - internal_port: 80\n    ports: 5\n",
            "services[0].ports",
            "ports: 5",
        ),
        ("fly.yaml", "app: a\nenv:\n  - 1\n  - 2\n", "env[0]", "- 1"),
    ],
)
def test_wrong_types_in_json_and_yaml(
    tmp_path: Path, name: str, text: str, path: str, needle: str
) -> None:
    (tmp_path / name).write_text(text)
    found = errors(load_config(tmp_path / name))
    assert path in found, found
    assert found[path] == line_of(text, needle)
    diagnostics_failure(validate(tmp_path, "-c", name))


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('app = "a"\nkill_timeout = nan\n', "kill_timeout"),
        ('app = "a"\nkill_timeout = inf\n', "kill_timeout"),
        ('app = "a"\nkill_timeout = 1e308\n', "kill_timeout"),
        ('app = "a"\n[[vm]]\nmemory = nan\n', "vm[0].memory"),
        ('app = "a"\n[[mounts]]\nsource = "d"\ndestination = "/d"\ninitial_size = inf\n', ""),
        ('app = "a"\n[http_service]\n[[http_service.checks]]\ninterval = -inf\n', ""),
        ('app = "a"\n[deploy]\nrelease_command_timeout = nan\n', "deploy.release_command_timeout"),
    ],
    ids=["nan", "inf", "1e308", "memory-nan", "size-inf", "interval-minus-inf", "release-nan"],
)
def test_non_finite_numbers_are_errors_not_crashes(tmp_path: Path, text: str, path: str) -> None:
    (tmp_path / "fly.toml").write_text(text)
    loaded = load_config(tmp_path / "fly.toml")
    found = errors(loaded)
    assert found, "a value that is not a finite number must be an error"
    if path:
        assert found.get(path) == len(text.splitlines()), found
    diagnostics_failure(validate(tmp_path))
    for command in (("show",), ("machines",)):
        result = taxiway(tmp_path, "config", *command)
        assert result.returncode == 1
        assert "internal error" not in result.stderr, result.stderr


def test_infinity_in_json(tmp_path: Path) -> None:
    (tmp_path / "fly.json").write_text('{\n  "app": "a",\n  "kill_timeout": Infinity\n}\n')
    result = validate(tmp_path, "-c", "fly.json")
    assert "internal error" not in result.stderr, result.stderr
    assert result.returncode == 1


# --- pathological nesting --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("fly.toml", 'app = "a"\nx = ' + "[" * 2000 + "]" * 2000 + "\n"),
        ("fly.toml", 'app = "a"\nx = ' + "{a = " * 500 + "1" + "}" * 500 + "\n"),
        ("fly.json", '{"app": "a",\n"env": {"A": ' + "[" * 700 + "]" * 700 + "}}\n"),
        ("fly.json", '{"app": "a",\n"x": ' + "[" * 100_000 + "]" * 100_000 + "}\n"),
        ("fly.yaml", "app: a\nx: " + "[" * 2000 + "]" * 2000 + "\n"),
    ],
    ids=["toml-arrays", "toml-inline-tables", "json-700", "json-100000", "yaml-arrays"],
)
def test_deeply_nested_values(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    result = validate(tmp_path, "-c", name)
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr, result.stderr[:300]
    assert result.returncode == 1
    assert result.stderr.strip(), "the user is told what is wrong"
    if result.stderr.startswith("taxiway: error: "):
        sentence = one_sentence(result)
        assert sentence.startswith(name)


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        (
            "fly.json",
            '{"app": "a",\n"build": {"settings": {"x": ' + "[" * 150 + "]" * 150 + "}}}\n",
            2,
        ),
        ("fly.toml", 'app = "a"\n\n[build.settings]\nx = ' + "[" * 150 + "]" * 150 + "\n", 4),
        ("fly.yaml", "app: a\nloop: &a [*a]\n", 2),  # an anchor inside itself: endless
    ],
    ids=["json", "toml", "yaml-loop"],
)
def test_nesting_beyond_the_limit_is_one_sentence_with_the_line(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    (tmp_path / name).write_text(text)
    sentence = one_sentence(validate(tmp_path, "-c", name))
    assert sentence == (
        f"{name}:{line}: values are nested too deeply (more than {MAX_NESTING} levels of tables "
        "and lists; fly.toml needs a handful)"
    )
    assert load_error(tmp_path / name).line == line


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    depth = MAX_NESTING - 3  # build, settings and x are levels too
    text = 'app = "a"\n[build.settings]\nx = ' + "[" * depth + "]" * depth + "\n"
    (tmp_path / "fly.toml").write_text(text)
    loaded = load_config(tmp_path / "fly.toml")
    assert loaded.valid


# --- the JSON answer for files that cannot be read -------------------------------------------


@pytest.mark.parametrize(
    ("setup", "line"),
    [
        ("missing", None),
        ("folder", None),
        ("utf8", 3),
    ],
)
def test_validate_json_for_unreadable_input(tmp_path: Path, setup: str, line: int | None) -> None:
    target = tmp_path / "fly.toml"
    if setup == "folder":
        target.mkdir()
    elif setup == "utf8":
        target.write_bytes(b'app = "a"\n\n\xff\n')
    result = validate(tmp_path, "-c", "fly.toml", "--json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"valid", "diagnostics"}
    assert out["valid"] is False
    (d,) = out["diagnostics"]
    assert set(d) == {"severity", "message", "path", "line"}
    assert d["severity"] == "error"
    assert d["line"] == line
    assert "fly.toml" in d["message"]
