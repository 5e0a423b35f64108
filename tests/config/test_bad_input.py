"""Files that can't be read as a config: one sentence naming the file (and line), exit 1."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from taxiway.cli.main import main
from taxiway.config.loader import load_config
from taxiway.config.source import ConfigFileError


def validate(cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run `taxiway config validate` in-process from ``cwd``."""
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["config", "validate", *args])
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def one_sentence(code: int, err: str) -> str:
    assert code == 1
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("taxiway: error: ")
    return lines[0].removeprefix("taxiway: error: ")


def test_no_fly_toml_here(tmp_path: Path) -> None:
    code, _, err = validate(tmp_path)
    assert one_sentence(code, err) == (
        "no fly.toml in this folder; run taxiway in the app's folder or pass -c PATH"
    )


def test_missing_file(tmp_path: Path) -> None:
    code, _, err = validate(tmp_path, "-c", "nope.toml")
    assert one_sentence(code, err) == "nope.toml: no such file"


def test_directory_without_a_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = validate(tmp_path, "-c", "empty")
    assert "empty is a directory with no fly.toml in it" in one_sentence(code, err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "fly.toml"
    path.write_text('app = "a"\n')
    path.chmod(0)
    code, _, err = validate(tmp_path)
    assert one_sentence(code, err) == "cannot read fly.toml: permission denied"


def test_unreadable_file_even_as_root(tmp_path: Path) -> None:
    # A FIFO's read can't be opened as a regular file read; a socket path can't be read at all.
    import socket

    path = tmp_path / "fly.toml"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        code, _, err = validate(tmp_path, "-c", "fly.toml")
    finally:
        sock.close()
    assert one_sentence(code, err).startswith("cannot read fly.toml")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'app = "a"\n\x00\x01\x02', "fly.toml:2: not a text file (it contains NUL bytes)"),
        (
            b'app = "a"\nx = "\xff\xfe"\n',
            "fly.toml:2: not a text file (not valid UTF-8 at byte 15)",
        ),
        (
            b'app = "a"\n[env]\nA = "1"\nA = "2"\n',
            "fly.toml:4: not valid TOML: the same key is defined twice",
        ),
        (b'app = "a"\n[services\n', "fly.toml:2: not valid TOML: "),
        (b"app = hello\n", "fly.toml:1: not valid TOML: a value here is not valid TOML"),
    ],
)
def test_garbage_and_malformed_toml(tmp_path: Path, content: bytes, expected: str) -> None:
    (tmp_path / "fly.toml").write_bytes(content)
    code, _, err = validate(tmp_path)
    assert one_sentence(code, err).startswith(expected)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("fly.json", '{\n  "app": "a",\n  "env": {,}\n}\n', "fly.json:3: not valid JSON: "),
        ("fly.json", "[1, 2]\n", "fly.json must hold a table of keys at the top level, not a list"),
        ("fly.yaml", "app: a\nenv:\n  - [\n", "fly.yaml:4: not valid YAML: "),
        ("fly.yml", "app: [a\n", "fly.yml:2: not valid YAML: "),
        ("fly.yaml", "just a string\n", "fly.yaml must hold a table of keys at the top level"),
    ],
)
def test_malformed_json_and_yaml(tmp_path: Path, name: str, content: str, expected: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    code, _, err = validate(tmp_path, "-c", name)
    assert one_sentence(code, err).startswith(expected)


@pytest.mark.parametrize("name", ["fly.toml", "fly.yaml"])
def test_empty_files_are_empty_configs(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("")
    loaded = load_config(tmp_path / name)
    assert loaded.valid


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_bytes(b'\xef\xbb\xbfapp = "a"\n')
    assert load_config(tmp_path / "fly.toml").config.app == "a"


def test_wrong_types_deep_inside_are_diagnostics_not_crashes(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text(
        'app = "a"\n'  # 1
        "env = [1, 2]\n"  # 2
        "[[services]]\n"  # 3
        '  internal_port = "abc"\n'  # 4
        "  ports = 5\n"  # 5
        "[[vm]]\n"  # 6
        "  memory = true\n"  # 7
    )
    loaded = load_config(tmp_path / "fly.toml")
    found = {(d.path_str, d.line) for d in loaded.diagnostics if d.severity == "error"}
    assert ("env[0]", 2) in found
    assert ("services[0].internal_port", 4) in found
    assert ("services[0].ports", 5) in found
    assert ("vm[0].memory", 7) in found
    code, _, err = validate(tmp_path)
    assert code == 1
    assert "Traceback" not in err
    assert (
        'fly.toml:4: error: services[0].internal_port must be a whole number, not the string "abc"'
        in err
    )


def test_config_file_error_carries_the_line(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "a"\n\n[env]\nA = \n')
    with pytest.raises(ConfigFileError) as info:
        load_config(tmp_path / "fly.toml")
    assert info.value.line == 4
