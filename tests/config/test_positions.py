"""Tests for PositionIndex: the line numbers that diagnostics show must be the right ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from taxiway.config.diagnostics import KeyPath
from taxiway.config.positions import PositionIndex

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / ".." / "shared" / "corpus"


def paths(value: object, prefix: KeyPath = ()) -> Iterator[KeyPath]:
    """Every key path a parsed config contains, the way validation addresses them."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from paths(item, (*prefix, index))


def toml_index(text: str) -> PositionIndex:
    """Index TOML that tomllib accepts, and check the scanner saw exactly tomllib's keys."""
    parsed = tomllib.loads(text)
    index = PositionIndex.build(text, "toml")
    assert set(index._lines) == set(paths(parsed))
    return index


# --- TOML -------------------------------------------------------------------------


def test_toml_keys_tables_and_comments() -> None:
    text = (
        "# a comment = 1\n"  # 1
        'app = "demo" # trailing = comment\n'  # 2
        "\n"  # 3
        "[build]  # [not_a_table]\n"  # 4
        '  image = "x#y" # image\n'  # 5
        "\n"  # 6
        "[env]\n"  # 7
        '  FOO = "bar"\n'  # 8
        "  BAZ=1\n"  # 9
        "[http_service]\n"  # 10
        "  internal_port = 8080\n"  # 11
        "  [http_service.concurrency]\n"  # 12
        '    type = "requests"\n'  # 13
    )
    index = toml_index(text)
    assert index.line(("app",)) == 2
    assert index.line(("build",)) == 4
    assert index.line(("build", "image")) == 5
    assert index.line(("env",)) == 7
    assert index.line(("env", "FOO")) == 8
    assert index.line(("env", "BAZ")) == 9
    assert index.line(("http_service", "internal_port")) == 11
    assert index.line(("http_service", "concurrency")) == 12
    assert index.line(("http_service", "concurrency", "type")) == 13


def test_toml_strings_hide_keys_headers_and_comments() -> None:
    text = (
        's1 = "a\\"b = [fake] # x"\n'  # 1
        "s2 = 'c:\\path\\' # literal ends at the first quote\n"  # 2
        's3 = """\n'  # 3
        "[fake]\n"  # 4
        'fake = "x"\n'  # 5
        'still \\""" inside\n'  # 6
        'ends with quotes""""\n'  # 7
        "s4 = '''\n"  # 8
        "[[fake]]\n"  # 9
        "two quotes before the end'''''\n"  # 10
        's5 = """line ending \\\n'  # 11
        '   backslash"""\n'  # 12
        's6 = ""\n'  # 13
        "s7 = ''\n"  # 14
        's8 = """"one quote"."""\n'  # 15
        "after = true\n"  # 16
    )
    parsed = tomllib.loads(text)
    assert parsed["s4"].endswith("end''")
    assert parsed["s3"].endswith('quotes"')
    index = toml_index(text)
    for line, key in enumerate(["s1", "s2", "s3"], start=1):
        assert index.line((key,)) == line
    assert index.line(("s4",)) == 8
    assert index.line(("s5",)) == 11
    assert index.line(("s6",)) == 13
    assert index.line(("s7",)) == 14
    assert index.line(("s8",)) == 15
    assert index.line(("after",)) == 16
    assert index.line(("fake",)) is None


def test_toml_quoted_and_dotted_keys() -> None:
    text = (
        "[env]\n"  # 1
        '"my.key" = 1\n'  # 2
        "'k' = 2\n"  # 3
        '"a\\"b" = 3\n'  # 4
        '"\\u00e9t\\u00e9" = 4\n'  # 5
        "'C:\\dir' = 5\n"  # 6
        '"" = 6\n'  # 7
        "[deploy]\n"  # 8
        'release_command_vm . size = "shared-cpu-1x"\n'  # 9
        'release_command_vm.memory = "512mb"\n'  # 10
        "a.b.c = 1\n"  # 11
        "a . b . d = 2\n"  # 12
        "\"x.y\" . 'z' = 3\n"  # 13
    )
    index = toml_index(text)
    assert index.line(("env", "my.key")) == 2
    assert index.line(("env", "my")) == 1  # no such key: falls back to [env]
    assert index.line(("env", "k")) == 3
    assert index.line(("env", 'a"b')) == 4
    assert index.line(("env", "été")) == 5
    assert index.line(("env", "C:\\dir")) == 6
    assert index.line(("env", "")) == 7
    assert index.line(("deploy", "release_command_vm")) == 9
    assert index.line(("deploy", "release_command_vm", "size")) == 9
    assert index.line(("deploy", "release_command_vm", "memory")) == 10
    assert index.line(("deploy", "a")) == 11
    assert index.line(("deploy", "a", "b")) == 11
    assert index.line(("deploy", "a", "b", "c")) == 11
    assert index.line(("deploy", "a", "b", "d")) == 12
    assert index.line(("deploy", "x.y", "z")) == 13


def test_toml_headers_with_quotes_spaces_and_implicit_tables() -> None:
    text = (
        "[a.b]\n"  # 1
        "x = 1\n"  # 2
        '[ "a.b" . c ]\n'  # 3
        "y = 2\n"  # 4
        "[ 'q' . \"r s\" ]\n"  # 5
        "z = 3\n"  # 6
        "[a]\n"  # 7
        "w = 4\n"  # 8
    )
    index = toml_index(text)
    assert index.line(("a", "b")) == 1
    assert index.line(("a", "b", "x")) == 2
    assert index.line(("a.b",)) == 3
    assert index.line(("a.b", "c")) == 3
    assert index.line(("a.b", "c", "y")) == 4
    assert index.line(("q", "r s", "z")) == 6
    # `a` is first mentioned by [a.b], but its own header is where it is defined.
    assert index.line(("a",)) == 7
    assert index.line(("a", "w")) == 8


def test_toml_arrays_of_tables() -> None:
    text = (
        'app = "x"\n'  # 1
        "[[services]]\n"  # 2
        "  internal_port = 8080\n"  # 3
        "  [[services.ports]]\n"  # 4
        "    port = 80\n"  # 5
        "  [[services.ports]]\n"  # 6
        "    port = 443\n"  # 7
        "  [services.concurrency]\n"  # 8
        "    hard_limit = 25\n"  # 9
        "\n"  # 10
        "[[services]]\n"  # 11
        "  internal_port = 9090\n"  # 12
        "  [services.concurrency]\n"  # 13
        "    soft_limit = 20\n"  # 14
        "  [[services.ports]]\n"  # 15
        "    port = 5000\n"  # 16
        "  [[ services . tcp_checks ]]\n"  # 17
        '    interval = "15s"\n'  # 18
        "[[mounts]]\n"  # 19
        '  source = "data"\n'  # 20
    )
    index = toml_index(text)
    assert index.line(("services",)) == 2
    assert index.line(("services", 0)) == 2
    assert index.line(("services", 0, "internal_port")) == 3
    assert index.line(("services", 0, "ports")) == 4
    assert index.line(("services", 0, "ports", 0)) == 4
    assert index.line(("services", 0, "ports", 0, "port")) == 5
    assert index.line(("services", 0, "ports", 1)) == 6
    assert index.line(("services", 0, "ports", 1, "port")) == 7
    assert index.line(("services", 0, "concurrency")) == 8
    assert index.line(("services", 0, "concurrency", "hard_limit")) == 9
    assert index.line(("services", 1)) == 11
    assert index.line(("services", 1, "internal_port")) == 12
    # A sub-table after the second [[services]] belongs to that element ...
    assert index.line(("services", 1, "concurrency")) == 13
    assert index.line(("services", 1, "concurrency", "soft_limit")) == 14
    # ... and its [[services.ports]] count starts again from 0.
    assert index.line(("services", 1, "ports")) == 15
    assert index.line(("services", 1, "ports", 0)) == 15
    assert index.line(("services", 1, "ports", 0, "port")) == 16
    assert index.line(("services", 1, "tcp_checks", 0, "interval")) == 18
    assert index.line(("mounts", 0, "source")) == 20


def test_toml_inline_tables_and_arrays() -> None:
    text = (
        "[http_service]\n"  # 1
        '  concurrency = { type = "connections", hard_limit = 25 }\n'  # 2
        "ports = [{port = 80, handlers = ['http']}, { port = 443 }]\n"  # 3
        "cmd = [\n"  # 4
        '  "a", # comment with ] and , inside\n'  # 5
        '  """multi\n'  # 6
        'line""",\n'  # 7
        "  'c',\n"  # 8
        "]\n"  # 9
        "nested = [[1, 2], [\n"  # 10
        "  3,\n"  # 11
        "], []]\n"  # 12
        "checks = [\n"  # 13
        '  { path = "/", x.y = 1 },\n'  # 14
        '  { path = "/health" , },\n'  # 15
        "]\n"  # 16
        "date = 1979-05-27 07:32:00Z\n"  # 17
        "empty = {}\n"  # 18
        "after = 1\n"  # 19
    )
    # Trailing commas in inline tables are TOML 1.1; Python 3.11's tomllib has none.
    index = PositionIndex.build(text, "toml")
    assert index.line(("http_service", "concurrency")) == 2
    assert index.line(("http_service", "concurrency", "type")) == 2
    assert index.line(("http_service", "concurrency", "hard_limit")) == 2
    assert index.line(("http_service", "ports")) == 3
    assert index.line(("http_service", "ports", 0)) == 3
    assert index.line(("http_service", "ports", 0, "port")) == 3
    assert index.line(("http_service", "ports", 0, "handlers", 0)) == 3
    assert index.line(("http_service", "ports", 1, "port")) == 3
    assert index.line(("http_service", "cmd")) == 4
    assert index.line(("http_service", "cmd", 0)) == 5
    assert index.line(("http_service", "cmd", 1)) == 6
    assert index.line(("http_service", "cmd", 2)) == 8
    assert index.line(("http_service", "cmd", 3)) == 4  # no 4th element: the array's line
    assert index.line(("http_service", "nested", 1, 0)) == 11
    assert index.line(("http_service", "nested", 2)) == 12
    assert index.line(("http_service", "checks", 0)) == 14
    assert index.line(("http_service", "checks", 0, "x", "y")) == 14
    assert index.line(("http_service", "checks", 1)) == 15
    assert index.line(("http_service", "checks", 1, "path")) == 15
    assert index.line(("http_service", "date")) == 17
    assert index.line(("http_service", "empty")) == 18
    assert index.line(("http_service", "after")) == 19
    assert ("http_service", "checks", 2) not in index._lines

    valid = text.replace('"/health" , }', '"/health" }')
    toml_index(valid)


def test_toml_multiline_inline_table_keys_get_their_own_lines() -> None:
    # Newlines inside inline tables are TOML 1.1; the index handles them all the same.
    text = 'svc = {\n  port = 80,\n  tls = { alpn = ["h2"] },\n}\nnext = 1\n'
    index = PositionIndex.build(text, "toml")
    assert index.line(("svc",)) == 1
    assert index.line(("svc", "port")) == 2
    assert index.line(("svc", "tls", "alpn", 0)) == 3
    assert index.line(("next",)) == 5


def test_toml_crlf_and_bom() -> None:
    lf = '# fly\napp = "x"\n\n[env]\nA = """\nmulti\n"""\nB = [\n  1,\n  2,\n]\n'
    lf += '[[vm]]\nsize = "a"\n'
    for text in (lf, lf.replace("\n", "\r\n"), "\ufeff" + lf, "\ufeff" + lf.replace("\n", "\r\n")):
        if not text.startswith("\ufeff"):
            toml_index(text)
        index = PositionIndex.build(text, "toml")
        assert index.line(("app",)) == 2
        assert index.line(("env",)) == 4
        assert index.line(("env", "A")) == 5
        assert index.line(("env", "B")) == 8
        assert index.line(("env", "B", 1)) == 10
        assert index.line(("vm", 0)) == 12
        assert index.line(("vm", 0, "size")) == 13


def test_toml_bom_first_key_is_found() -> None:
    index = PositionIndex.build("\ufeff[env]\nA = 1\n", "toml")
    assert index.line(("env",)) == 1
    assert index.line(("env", "A")) == 2


def test_prefix_fallback_and_missing_paths() -> None:
    text = "[[services]]\n  internal_port = 8080\n  [[services.ports]]\n    port = 80\n"
    index = toml_index(text)
    assert index.line(("services", 0, "ports", 0, "handlers")) == 3
    assert index.line(("services", 0, "ports", 3, "port")) == 3
    assert index.line(("services", 0, "protocol")) == 1
    assert index.line(("services", 5)) == 1
    assert index.line(("app",)) is None
    assert index.line(("app", "name")) is None
    assert index.line(()) is None
    assert index.line(["services", 0, "internal_port"]) == 2  # type: ignore[arg-type]


def test_odd_or_broken_toml_never_raises() -> None:
    for text in ("", "\n\n", "a = [", 'a = "unterminated', "[[", "= 1", "[a\nb = {", "a = {x = "):
        index = PositionIndex.build(text, "toml")
        assert index.line(("zzz",)) is None
    deep = "a = " + "[" * 50_000 + "]" * 50_000 + "\nb = 1\n"
    assert PositionIndex.build(deep, "toml").line(("a",)) == 1


def test_unknown_format_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="ini"):
        PositionIndex.build("", "ini")


# --- JSON and YAML ----------------------------------------------------------------

FLY_JSON = """{
  "app": "demo",
  "env": {"FOO": "1", "my.key": "2", "esc\\"aped": "3"},
  "services": [
    {
      "internal_port": 8080,
      "ports": [
        {"port": 80},
        {
          "port": 443,
          "handlers": ["tls", "http"]
        }
      ]
    }
  ],
  "checks": {"alive": {"interval": "15s"}}
}
"""


def check_fly_json(index: PositionIndex) -> None:
    assert index.line(("app",)) == 2
    assert index.line(("env",)) == 3
    assert index.line(("env", "FOO")) == 3
    assert index.line(("env", "my.key")) == 3
    assert index.line(("env", 'esc"aped')) == 3
    assert index.line(("services",)) == 4
    assert index.line(("services", 0)) == 5
    assert index.line(("services", 0, "internal_port")) == 6
    assert index.line(("services", 0, "ports", 0)) == 8
    assert index.line(("services", 0, "ports", 0, "port")) == 8
    assert index.line(("services", 0, "ports", 1)) == 9
    assert index.line(("services", 0, "ports", 1, "port")) == 10
    assert index.line(("services", 0, "ports", 1, "handlers", 1)) == 11
    assert index.line(("checks", "alive", "interval")) == 16
    assert index.line(("checks", "alive", "timeout")) == 16
    assert index.line(("kill_signal",)) is None


def test_json() -> None:
    index = PositionIndex.build(FLY_JSON, "json")
    assert set(index._lines) == set(paths(json.loads(FLY_JSON)))
    check_fly_json(index)


def test_json_that_pyyaml_refuses_uses_the_scanner() -> None:
    text = FLY_JSON.replace("  ", "\t")
    with pytest.raises(yaml.YAMLError):
        yaml.compose(text, Loader=yaml.SafeLoader)
    index = PositionIndex.build(text, "json")
    assert set(index._lines) == set(paths(json.loads(text)))
    check_fly_json(index)


def test_json_scanner_details() -> None:
    text = '\t{"a":1,"b":[true,null,-1.5e3,{"c\\u00e9\\ud83d\\ude00":"x\\\\"}],\r\n\t"d" : {}}'
    index = PositionIndex.build(text, "json")
    assert set(index._lines) == set(paths(json.loads(text)))
    assert index.line(("b", 3, "cé😀")) == 1
    assert index.line(("d",)) == 2


def test_json_duplicate_keys_point_at_the_last_one_like_json_loads() -> None:
    for text in ('{"a": 1,\n "a": 2}', '{\t"a": 1,\n\t"a": 2}'):
        assert PositionIndex.build(text, "json").line(("a",)) == 2


def test_broken_json_and_yaml_never_raise() -> None:
    # What could be read before the break is kept; nothing raises.
    for text in ("", "{", "[1, 2", "null", "3", "\t[", '\t{"b"'):
        assert PositionIndex.build(text, "json").line(("a",)) is None
    assert PositionIndex.build('\t{"a": 1, "b": [', "json").line(("b", 0)) == 1
    for text in ("", "a: [", "? [a, b]\n: 1\n", "- 1\n- 2\n", "a: 1\n---\nb: 2\n", "*x\n"):
        assert PositionIndex.build(text, "yaml").line(("zzz",)) is None


FLY_YAML = """\
# fly.yaml
app: demo
env:
  FOO: "1"
  "my.key": 2
services:
  - internal_port: 8080
    ports:
      - port: 80
      -
        port: 443
        handlers: [tls,
                   http]
  - internal_port: 9090
checks:
  alive: {interval: 15s,
          timeout: 2s}
description: |
  text
  more: text
kill_signal: SIGINT
"""


def test_yaml() -> None:
    index = PositionIndex.build(FLY_YAML, "yaml")
    assert set(index._lines) == set(paths(yaml.safe_load(FLY_YAML)))
    assert index.line(("app",)) == 2
    assert index.line(("env",)) == 3
    assert index.line(("env", "FOO")) == 4
    assert index.line(("env", "my.key")) == 5
    assert index.line(("services", 0)) == 7
    assert index.line(("services", 0, "internal_port")) == 7
    assert index.line(("services", 0, "ports")) == 8
    assert index.line(("services", 0, "ports", 0, "port")) == 9
    assert index.line(("services", 0, "ports", 1)) == 11
    assert index.line(("services", 0, "ports", 1, "port")) == 11
    assert index.line(("services", 0, "ports", 1, "handlers", 1)) == 13
    assert index.line(("services", 1)) == 14
    assert index.line(("checks", "alive", "timeout")) == 17
    assert index.line(("description",)) == 18
    assert index.line(("kill_signal",)) == 21
    assert index.line(("services", 1, "ports", 0)) == 14


def test_yaml_anchors_aliases_and_merge_keys() -> None:
    text = (
        "defaults: &d\n"  # 1
        "  interval: 15s\n"  # 2
        "  timeout: 2s\n"  # 3
        "checks:\n"  # 4
        "  alive:\n"  # 5
        "    <<: *d\n"  # 6
        "    timeout: 5s\n"  # 7
        "  again: *d\n"  # 8
        "list:\n"  # 9
        "  - &item {a: 1}\n"  # 10
        "  - *item\n"  # 11
        "  - <<: [*item, *d]\n"  # 12
        "    b: 2\n"  # 13
    )
    index = PositionIndex.build(text, "yaml")
    assert index.line(("defaults", "interval")) == 2
    assert index.line(("checks", "alive", "interval")) == 6
    assert index.line(("checks", "alive", "timeout")) == 7
    # An alias's content is written at its anchor; the alias itself is the best line.
    assert index.line(("checks", "again")) == 8
    assert index.line(("checks", "again", "interval")) == 8
    assert index.line(("list", 0, "a")) == 10
    assert index.line(("list", 1)) == 11
    assert index.line(("list", 1, "a")) == 11
    assert index.line(("list", 2, "a")) == 12
    assert index.line(("list", 2, "timeout")) == 12
    assert index.line(("list", 2, "b")) == 13
    assert set(index._lines) <= set(paths(yaml.safe_load(text)))


def test_yaml_alias_bombs_stay_linear() -> None:
    text = 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    for n in range(1, 20):
        refs = ", ".join([f"*{chr(96 + n)}"] * 10)
        text += f"{chr(97 + n)}: &{chr(97 + n)} [{refs}]\n"
    index = PositionIndex.build(text, "yaml")  # would never finish if aliases were expanded
    assert index.line(("t", 3)) == 20
    assert index.line(("t", 3, 5, 1)) == 20
    assert index.line(("s", 9)) == 19


# --- Real files and speed ------------------------------------------------------------


def corpus_files() -> list[Path]:
    return sorted([*CORPUS.glob("real/*.toml"), *CORPUS.glob("flyctl/*.toml")])


@pytest.mark.skipif(not corpus_files(), reason=f"no fly.toml corpus at {CORPUS}")
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_lines_agree_with_tomllib(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    index = PositionIndex.build(text, "toml")  # must not raise, even for invalid files
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:  # real/074.toml, on purpose
        pytest.skip(f"tomllib rejects it: {error}")
    lines = text.splitlines()
    expected = list(paths(parsed))
    assert set(index._lines) == set(expected)
    for key_path in expected:
        line = index.line(key_path)
        assert line is not None, key_path
        assert index._lines[key_path] == line
        if isinstance(key_path[-1], str):
            assert key_path[-1] in lines[line - 1], (key_path, line, lines[line - 1])
        if isinstance(key_path[-1], int) and key_path[-1] > 0:
            previous = index.line((*key_path[:-1], key_path[-1] - 1))
            assert previous is not None and previous <= line, key_path


def test_a_300_line_file_indexes_every_service() -> None:
    parts = ['app = "big"\nprimary_region = "ams"\n\n[env]\n']
    parts += [f'  VAR_{n} = "value {n} # not a comment"\n' for n in range(60)]
    for n in range(20):
        parts.append(
            "\n[[services]]\n"
            f"  internal_port = {8000 + n}\n"
            '  protocol = "tcp"\n'
            "  [[services.ports]]\n"
            "    port = 80\n"
            '    handlers = ["http"]\n'
            "  [[services.ports]]\n"
            "    port = 443\n"
            '    handlers = ["tls", "http"]\n'
            "  [services.concurrency]\n"
            '    type = "connections"\n'
            "    hard_limit = 25\n"
        )
    text = "".join(parts)
    assert text.count("\n") >= 300
    index = toml_index(text)
    assert index.line(("services", 19, "ports", 1, "port")) == text.count("\n") - 4


def test_importing_positions_does_not_import_yaml() -> None:
    code = "import sys, taxiway.config.positions; print('yaml' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "False"
