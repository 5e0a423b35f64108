"""`taxiway` as users run it: a real process, real files, real exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from cli_runner import run_taxiway as taxiway
from taxiway import __version__
from taxiway.config.loader import load_config

GOOD = """\
# the app
app = "hello"
primary_region = "ams"
kill_timeout = 5   # seconds

[processes]
web = "python app.py"
worker = "python worker.py"

[http_service]
internal_port = 8080
processes = ["web"]
auto_stop_machines = "stop"

[[http_service.checks]]
path = "/healthz"
interval = "10s"

# data lives here
[mounts]
source = "data"
destination = "/data"
processes = ["worker"]
"""


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int = 1) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr + result.stdout
    assert "internal error" not in result.stderr


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "fly.toml").write_text(GOOD, encoding="utf-8")
    return tmp_path


def test_help_and_version(tmp_path: Path) -> None:
    result = taxiway(tmp_path, "--help")
    assert result.returncode == 0
    assert "config" in result.stdout
    result = taxiway(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"taxiway {__version__}"


@pytest.mark.parametrize("args", [(), ("config",), ("config", "validate", "--bogus"), ("nope",)])
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = taxiway(tmp_path, *args)
    assert_clean_failure(result, 2)
    assert "usage:" in result.stderr


def test_validate_finds_fly_toml_in_the_current_folder(app: Path) -> None:
    result = taxiway(app, "config", "validate")
    assert result.returncode == 0, result.stderr
    assert "fly.toml is valid" in result.stdout
    # legacy spellings are info: they don't make --strict fail
    assert taxiway(app, "config", "validate", "--strict").returncode == 0


def test_validate_reports_errors_with_file_and_line(app: Path) -> None:
    (app / "fly.toml").write_text(GOOD.replace('"stop"', '"sometimes"'), encoding="utf-8")
    result = taxiway(app, "config", "validate")
    assert_clean_failure(result)
    line = GOOD.splitlines().index('auto_stop_machines = "stop"') + 1
    assert f"fly.toml:{line}: error: http_service.auto_stop_machines must be one of" in (
        result.stderr
    )
    assert "fly.toml is not valid: 1 error" in result.stderr


def test_strict_makes_warnings_fail(app: Path) -> None:
    (app / "fly.toml").write_text(GOOD + "\n[build]\nimage = 'x'\ndockerfile = 'D'\n")
    assert taxiway(app, "config", "validate").returncode == 0
    result = taxiway(app, "config", "validate", "--strict")
    assert_clean_failure(result)
    assert "warning (--strict)" in result.stderr


def test_validate_json_has_exactly_the_documented_shape(app: Path) -> None:
    (app / "fly.toml").write_text(GOOD.replace("8080", "0"), encoding="utf-8")
    result = taxiway(app, "config", "validate", "--json")
    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert set(out) == {"valid", "diagnostics"}
    assert out["valid"] is False
    assert out["diagnostics"]
    for d in out["diagnostics"]:
        assert set(d) == {"severity", "message", "path", "line"}
        assert d["severity"] in {"error", "warning", "info"}
        assert isinstance(d["message"], str) and isinstance(d["path"], str)
        assert d["line"] is None or isinstance(d["line"], int)
    port_error = next(d for d in out["diagnostics"] if d["path"] == "http_service.internal_port")
    assert port_error["line"] == GOOD.splitlines().index("internal_port = 8080") + 1


def test_validate_json_for_a_file_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "a"\napp = "b"\n', encoding="utf-8")
    result = taxiway(tmp_path, "config", "validate", "--json")
    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert out["valid"] is False
    assert out["diagnostics"] == [
        {
            "severity": "error",
            "message": "fly.toml:2: not valid TOML: the same key is defined twice",
            "path": "",
            "line": 2,
        }
    ]


@pytest.mark.parametrize("name", ["other.toml", "fly.json", "fly.yaml", "fly.yml"])
def test_validate_reads_other_names_and_formats(app: Path, name: str) -> None:
    fmt = {"json": "json", "yaml": "yaml", "yml": "yaml"}.get(name.rsplit(".", 1)[1], "toml")
    shown = taxiway(app, "config", "show", "--format", fmt)
    assert shown.returncode == 0, shown.stderr
    (app / name).write_text(shown.stdout, encoding="utf-8")
    result = taxiway(app, "config", "validate", "-c", name)
    assert result.returncode == 0, result.stderr
    assert f"{name} is valid" in result.stdout


def test_c_may_name_the_folder_that_holds_fly_toml(app: Path) -> None:
    result = taxiway(app.parent, "config", "validate", "-c", app.name)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_show_reads_back_to_the_same_config(app: Path, fmt: str) -> None:
    result = taxiway(app, "config", "show", "--format", fmt)
    assert result.returncode == 0, result.stderr
    out = app / f"shown.{fmt}"
    out.write_text(result.stdout, encoding="utf-8")
    assert load_config(out).config == load_config(app / "fly.toml").config
    if fmt == "toml":
        assert 'kill_timeout = "5s"' in result.stdout  # units written out
        assert "[[mounts]]" in result.stdout  # today's form


def test_save_converts_and_keeps_comments(app: Path) -> None:
    for name in ("out.json", "out.yaml"):
        assert taxiway(app, "config", "save", "-o", name).returncode == 0
        assert load_config(app / name).config == load_config(app / "fly.toml").config
    result = taxiway(app, "config", "save", "-o", "out.toml")
    assert result.returncode == 0, result.stderr
    assert "wrote out.toml (toml)" in result.stdout
    text = (app / "out.toml").read_text(encoding="utf-8")
    assert "# the app" in text
    assert 'kill_timeout = "5s"   # seconds' in text  # the value changed, its comment stayed
    assert load_config(app / "out.toml").config == load_config(app / "fly.toml").config


def test_save_with_an_explicit_format(app: Path) -> None:
    result = taxiway(app, "config", "save", "-o", "config.txt", "--format", "json")
    assert result.returncode == 0
    assert json.loads((app / "config.txt").read_text())["app"] == "hello"


def test_save_to_an_unwritable_place_is_one_sentence(app: Path) -> None:
    result = taxiway(app, "config", "save", "-o", "no/such/dir/out.toml")
    assert_clean_failure(result)
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("taxiway: error: cannot write no/such/dir/out.toml")


def test_schema_is_a_draft7_schema_the_config_matches(app: Path) -> None:
    import tomllib

    result = taxiway(app, "config", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft7Validator.check_schema(schema)
    data = tomllib.loads(GOOD)
    assert list(jsonschema.Draft7Validator(schema).iter_errors(data)) == []
    data["http_service"]["auto_stop_machines"] = "sometimes"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(data))


def test_machines_text_and_json(app: Path) -> None:
    text = taxiway(app, "config", "machines")
    assert text.returncode == 0, text.stderr
    assert "[web]" in text.stdout and "[worker]" in text.stdout
    assert "80/http, 443/http+tls -> :8080" in text.stdout
    result = taxiway(app, "config", "machines", "--json")
    specs = json.loads(result.stdout)
    assert list(specs) == ["web", "worker"]
    web, worker = specs["web"], specs["worker"]
    assert web["init"]["cmd"] == ["python", "app.py"]
    assert web["env"]["FLY_PROCESS_GROUP"] == "web"
    assert web["env"]["PRIMARY_REGION"] == "ams"
    assert [p["port"] for p in web["services"][0]["ports"]] == [80, 443]
    assert web["services"][0]["concurrency"] == {
        "type": "connections",
        "soft_limit": 20,
        "hard_limit": None,
    }
    assert web["services"][0]["checks"][0]["interval"] == "10s"
    assert worker["services"] == []
    assert worker["mounts"][0]["name"] == "data"
    assert web["stop_config"] == {"signal": "SIGINT", "timeout": "5s"}


def test_machines_for_one_group(app: Path) -> None:
    result = taxiway(app, "config", "machines", "--group", "worker", "--json")
    assert list(json.loads(result.stdout)) == ["worker"]
    missing = taxiway(app, "config", "machines", "--group", "nope")
    assert_clean_failure(missing)
    assert "no process group 'nope' (groups: web, worker)" in missing.stderr


@pytest.mark.parametrize("command", [("show",), ("save", "-o", "x.toml"), ("machines",)])
def test_commands_that_need_a_valid_config_list_its_errors(
    app: Path, command: tuple[str, ...]
) -> None:
    (app / "fly.toml").write_text(GOOD.replace("[processes]", "[env]\nFLY_X = '1'\n[processes]"))
    result = taxiway(app, "config", *command)
    assert_clean_failure(result)
    assert "error: env.FLY_X: env variable names cannot begin with FLY_" in result.stderr
    assert result.stderr.rstrip().endswith("(`taxiway config validate` lists all)")
    assert not (app / "x.toml").exists()
