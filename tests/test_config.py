"""The TOML configuration: every rule, each refusal naming the file, the dotted key and the problem.

Files are real files in tmp_path, read by `load_config`; password sources are read for real
(environment, files, subprocesses).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    CredentialError,
    PasswordSource,
    config_path,
    load_config,
    parse_config,
)

SECRET = "s3cret-Pa55word"

# The issue's example cluster (ca_file is added by the tests that need a real file).
EXAMPLE: dict[str, Any] = {
    "name": "prod-a",
    "url": "https://prod-a.example.com",
    "username": "iscsi_audit",
    "password_env": "PROD_A_PASSWORD",
    "interval": "60s",
    "max_records": 1000,
}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return repr(value)  # int, float (including TOML's inf and nan)


def cluster_toml(**changes: Any) -> str:
    """The example cluster as a [[clusters]] table; a change to None removes that key."""
    table = {**EXAMPLE, **changes}
    lines = [f"{key} = {toml_value(value)}" for key, value in table.items() if value is not None]
    return "[[clusters]]\n" + "\n".join(lines) + "\n"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "iscsi-audit.toml"


def load(path: Path, text: str) -> Config:
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def refused(path: Path, text: str, key: str, *problem: str) -> str:
    """Load `text` expecting a ConfigError at `key` that says each of `problem`."""
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    for words in problem:
        assert words in message, message
    return message


@pytest.fixture
def pem(tmp_path: Path) -> Iterator[Path]:
    """A file that exists (the config checks presence; the TLS layer reads the contents)."""
    path = tmp_path / "prod-a.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    yield path


# --- the file -----------------------------------------------------------------------------


def test_the_issue_example_reads_into_a_typed_cluster(config_file: Path, pem: Path) -> None:
    database = '[database]\nurl = "postgresql+psycopg://audit@db.example.com/audit"\n\n'
    config = load(config_file, database + cluster_toml(ca_file=str(pem)))
    assert config.path == config_file
    assert config.database_url == "postgresql+psycopg://audit@db.example.com/audit"
    (cluster,) = config.clusters
    assert (cluster.name, cluster.url, cluster.username) == (
        "prod-a",
        "https://prod-a.example.com",
        "iscsi_audit",
    )
    assert cluster.password == PasswordSource("env", "PROD_A_PASSWORD")
    assert (cluster.ca_file, cluster.verify) == (pem, True)
    assert (cluster.interval, cluster.max_records) == (60.0, 1000)


def test_defaults_keep_verification_on_and_https_only(config_file: Path) -> None:
    (cluster,) = load(config_file, cluster_toml(interval=None, max_records=None)).clusters
    assert cluster.verify is True
    assert cluster.insecure_http is False
    assert (cluster.interval, cluster.max_records, cluster.retries) == (60.0, 1000, 3)


def test_missing_required_file_names_it_and_how_to_choose_another(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, required=True)
    assert str(caught.value) == f"{missing}: no such file (set --config or ${CONFIG_ENV})"


def test_missing_optional_file_reads_as_an_empty_config(tmp_path: Path) -> None:
    config = load_config(tmp_path / "nowhere.toml", required=False)
    assert config == Config(path=None)


def test_a_directory_instead_of_a_file_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: cannot read: "):
        load_config(tmp_path)


def test_invalid_toml_names_the_file_and_the_line(config_file: Path) -> None:
    config_file.write_text('[[clusters]]\nname = "prod-a"\nurl = https://x\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    message = str(caught.value)
    assert message.startswith(f"{config_file}: not valid TOML: ")
    assert "line 3" in message


def test_unknown_top_level_key_is_refused(config_file: Path) -> None:
    refused(config_file, 'databse = "x"\n', "databse", "did you mean database?")


def test_unknown_database_key_is_refused(config_file: Path) -> None:
    refused(config_file, '[database]\nhost = "db"\n', "database.host", "unknown key", "url")


def test_database_must_be_a_table(config_file: Path) -> None:
    refused(config_file, 'database = "postgresql://db/audit"\n', "database", "must be a table")


def test_database_url_must_be_a_non_empty_string(config_file: Path) -> None:
    refused(config_file, '[database]\nurl = ""\n', "database.url", "non-empty string")


def test_clusters_must_be_an_array_of_tables(config_file: Path) -> None:
    refused(config_file, '[clusters]\nname = "prod-a"\n', "clusters", "[[clusters]]")


def test_misspelt_cluster_key_is_refused_with_the_key_it_resembles(config_file: Path) -> None:
    text = cluster_toml(password_env=None, passwrd_env="PROD_A_PASSWORD")
    key = "clusters[0].passwrd_env"
    refused(config_file, text, key, "unknown key", "did you mean password_env?")


def test_unknown_cluster_key_unlike_any_lists_the_allowed_keys(config_file: Path) -> None:
    message = refused(config_file, cluster_toml(colour="blue"), "clusters[0].colour", "allowed: ")
    assert "password_command" in message


def test_password_in_the_file_is_refused_with_where_to_put_it(config_file: Path) -> None:
    message = refused(
        config_file,
        cluster_toml(password_env=None, password=SECRET),
        "clusters[0].password",
        "never in the file",
        "password_env, password_file or password_command",
    )
    assert SECRET not in message


def test_parse_config_without_a_file_calls_it_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^<config>: clusters\[0\]\.name: missing$"):
        parse_config({"clusters": [{"url": "https://a"}]}, None)


# --- names --------------------------------------------------------------------------------


def test_duplicate_cluster_names_are_refused_at_the_second(config_file: Path) -> None:
    text = cluster_toml() + cluster_toml(url="https://prod-b.example.com")
    refused(config_file, text, "clusters[1].name", "'prod-a' is used twice")


def test_cluster_name_is_required(config_file: Path) -> None:
    refused(config_file, cluster_toml(name=None), "clusters[0].name", "missing")


@pytest.mark.parametrize(
    "name", ["prod a", "prod/a", "-prod", ".prod", "prod:a", "x" * 64, "prod-a\n", "prod\u00e9"]
)
def test_cluster_name_with_bad_characters_is_refused(config_file: Path, name: str) -> None:
    refused(config_file, cluster_toml(name=name), "clusters[0].name", "letters, digits")


@pytest.mark.parametrize("name", ["a", "prod-a", "Prod_A.2", "x" * 63])
def test_cluster_names_of_letters_digits_dot_dash_underscore_are_accepted(
    config_file: Path, name: str
) -> None:
    assert load(config_file, cluster_toml(name=name)).clusters[0].name == name


# --- url ----------------------------------------------------------------------------------


def test_cluster_url_is_required(config_file: Path) -> None:
    refused(config_file, cluster_toml(url=None), "clusters[0].url", "missing")


@pytest.mark.parametrize(
    "url", ["prod-a.example.com", "ftp://prod-a.example.com", "https://", "https://:443"]
)
def test_url_that_is_not_https_host_port_is_refused(config_file: Path, url: str) -> None:
    refused(config_file, cluster_toml(url=url), "clusters[0].url", "is not https://host[:port]")


def test_http_url_is_refused_because_it_sends_the_password_in_clear(config_file: Path) -> None:
    refused(
        config_file,
        cluster_toml(url="http://prod-a.example.com"),
        "clusters[0].url",
        "sends the password in clear",
        "insecure_http = true",
    )


def test_http_url_is_accepted_with_insecure_http(config_file: Path) -> None:
    text = cluster_toml(url="http://127.0.0.1:8080", insecure_http=True)
    (cluster,) = load(config_file, text).clusters
    assert (cluster.url, cluster.insecure_http) == ("http://127.0.0.1:8080", True)


@pytest.mark.parametrize(
    "url",
    [
        "https://prod-a.example.com/api",
        "https://prod-a.example.com/?x=1",
        "https://prod-a.example.com/#top",
        "https://admin@prod-a.example.com",
        "https://admin:pw@prod-a.example.com",
        "https://:pw@prod-a.example.com",
    ],
)
def test_url_with_a_path_query_or_credentials_is_refused(config_file: Path, url: str) -> None:
    text = cluster_toml(url=url)
    refused(config_file, text, "clusters[0].url", "give only scheme, host and port")


def test_url_with_an_invalid_port_is_refused(config_file: Path) -> None:
    url = "https://prod-a.example.com:99999"
    refused(config_file, cluster_toml(url=url), "clusters[0].url", "invalid port")


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://prod-a.example.com/", "https://prod-a.example.com"),
        ("https://prod-a.example.com:8443", "https://prod-a.example.com:8443"),
        ("https://[2001:db8::10]:443", "https://[2001:db8::10]:443"),
    ],
)
def test_url_keeps_only_scheme_host_and_port(config_file: Path, url: str, kept: str) -> None:
    assert load(config_file, cluster_toml(url=url)).clusters[0].url == kept


# --- credentials --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("password_env", "PROD_A_PASSWORD", "env"),
        ("password_file", "/run/secrets/prod-a", "file"),
        ("password_command", "pass show storage/prod-a", "command"),
    ],
)
def test_each_password_source_is_kept_as_where_not_what(
    config_file: Path, key: str, value: str, kind: str
) -> None:
    changes: dict[str, Any] = {"password_env": None, key: value}
    (cluster,) = load(config_file, cluster_toml(**changes)).clusters
    assert cluster.password == PasswordSource(kind, value)


def test_more_than_one_password_source_is_refused(config_file: Path) -> None:
    text = cluster_toml(password_file="/run/secrets/prod-a")
    refused(
        config_file,
        text,
        "clusters[0].password_file",
        "give only one of password_env, password_file",
    )


def test_username_without_a_password_is_refused(config_file: Path) -> None:
    refused(
        config_file,
        cluster_toml(password_env=None),
        "clusters[0].username",
        "has no password",
        "password_env, password_file or password_command",
    )


def test_password_without_a_username_is_refused(config_file: Path) -> None:
    refused(
        config_file,
        cluster_toml(username=None),
        "clusters[0].username",
        "missing (password_env needs a username)",
    )


def test_a_cluster_without_any_credentials_is_refused(config_file: Path) -> None:
    refused(
        config_file,
        cluster_toml(username=None, password_env=None),
        "clusters[0]",
        "no credentials",
        "cert_file and key_file",
    )


def test_a_client_certificate_alone_is_enough(config_file: Path, pem: Path) -> None:
    text = cluster_toml(username=None, password_env=None, cert_file=str(pem), key_file=str(pem))
    (cluster,) = load(config_file, text).clusters
    assert (cluster.cert_file, cluster.key_file, cluster.password) == (pem, pem, None)


def test_cert_file_without_key_file_is_refused(config_file: Path, pem: Path) -> None:
    text = cluster_toml(cert_file=str(pem))
    refused(config_file, text, "clusters[0].key_file", "missing", "cert_file needs its key_file")


def test_key_file_without_cert_file_is_refused(config_file: Path, pem: Path) -> None:
    text = cluster_toml(key_file=str(pem))
    refused(config_file, text, "clusters[0].cert_file", "missing", "key_file needs its cert_file")


@pytest.mark.parametrize("key", ["cert_file", "key_file", "ca_file"])
def test_certificate_files_that_do_not_exist_are_refused(
    config_file: Path, pem: Path, tmp_path: Path, key: str
) -> None:
    missing = tmp_path / "missing.pem"
    files = {"cert_file": str(pem), "key_file": str(pem), key: str(missing)}
    if key == "ca_file":
        files = {"ca_file": str(missing)}
    refused(config_file, cluster_toml(**files), f"clusters[0].{key}", f"{missing}: no such file")


def test_ca_file_with_verify_false_is_refused_as_contradictory(
    config_file: Path, pem: Path
) -> None:
    text = cluster_toml(ca_file=str(pem), verify=False)
    refused(config_file, text, "clusters[0].ca_file", "has no effect with verify = false")


def test_verify_false_alone_is_accepted(config_file: Path) -> None:
    assert load(config_file, cluster_toml(verify=False)).clusters[0].verify is False


def test_password_command_that_cannot_be_split_is_refused(config_file: Path) -> None:
    text = cluster_toml(password_env=None, password_command="pass show 'prod-a")
    refused(config_file, text, "clusters[0].password_command", "cannot split into words")


# --- types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "given", "seconds"),
    [
        ("interval", "60s", 60.0),
        ("interval", "5m", 300.0),
        ("interval", "1h", 3600.0),
        ("interval", 90, 90.0),
        ("interval", "90", 90.0),
        ("interval", 2.5, 2.5),
        ("read_timeout", "500ms", 0.5),
        ("connect_timeout", "1.5s", 1.5),
    ],
)
def test_durations_read_as_seconds(config_file: Path, key: str, given: Any, seconds: float) -> None:
    (cluster,) = load(config_file, cluster_toml(**{key: given})).clusters
    assert getattr(cluster, key) == seconds


@pytest.mark.parametrize(
    "given", ["soon", "5 minutes", "-5s", "5d", "", True, float("inf"), float("nan")]
)
def test_a_duration_that_is_not_one_is_refused(config_file: Path, given: Any) -> None:
    refused(
        config_file,
        cluster_toml(interval=given),
        "clusters[0].interval",
        'expected a duration like "60s", "5m" or "500ms"',
    )


@pytest.mark.parametrize(
    ("key", "given", "minimum"),
    [("interval", "500ms", "1s"), ("interval", 0, "1s"), ("connect_timeout", "0s", "0.1s")],
)
def test_a_duration_below_its_minimum_is_refused(
    config_file: Path, key: str, given: Any, minimum: str
) -> None:
    refused(config_file, cluster_toml(**{key: given}), f"clusters[0].{key}", f"at least {minimum}")


@pytest.mark.parametrize("given", [1, 10_000])
def test_max_records_at_its_bounds_is_accepted(config_file: Path, given: int) -> None:
    assert load(config_file, cluster_toml(max_records=given)).clusters[0].max_records == given


@pytest.mark.parametrize("given", [0, -1, 10_001, "1000", 100.0, True])
def test_max_records_outside_1_to_10000_or_not_an_integer_is_refused(
    config_file: Path, given: Any
) -> None:
    refused(
        config_file,
        cluster_toml(max_records=given),
        "clusters[0].max_records",
        f"{given!r}: must be an integer from 1 to 10000",
    )


def test_retries_above_ten_are_refused(config_file: Path) -> None:
    refused(config_file, cluster_toml(retries=11), "clusters[0].retries", "from 0 to 10")


@pytest.mark.parametrize(("key", "given"), [("verify", "false"), ("insecure_http", "true")])
def test_booleans_given_as_strings_are_refused(config_file: Path, key: str, given: str) -> None:
    refused(
        config_file,
        cluster_toml(**{key: given}),
        f"clusters[0].{key}",
        f"{given!r}: must be true or false (without quotes)",
    )


def test_booleans_given_as_numbers_are_refused(config_file: Path) -> None:
    refused(config_file, cluster_toml(verify=0), "clusters[0].verify", "must be true or false")


def test_every_cluster_is_checked_and_named_by_its_position(config_file: Path) -> None:
    text = cluster_toml() + cluster_toml(name="prod-b", max_records=0)
    refused(config_file, text, "clusters[1].max_records", "from 1 to 10000")


# --- where the file is, and looking clusters up ----------------------------------------------


def test_config_path_prefers_the_option_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CONFIG_ENV, "/etc/iscsi-audit/from-env.toml")
    assert config_path("/tmp/explicit.toml") == Path("/tmp/explicit.toml")
    assert config_path(None) == Path("/etc/iscsi-audit/from-env.toml")
    monkeypatch.setenv(CONFIG_ENV, "")
    assert config_path(None) == DEFAULT_CONFIG_PATH


def test_looking_up_an_unknown_cluster_names_the_ones_configured(config_file: Path) -> None:
    config = load(config_file, cluster_toml() + cluster_toml(name="prod-b"))
    assert config.cluster("prod-b").name == "prod-b"
    with pytest.raises(ConfigError) as caught:
        config.cluster("prod-c")
    assert str(caught.value) == (
        f"{config_file}: clusters: no cluster named 'prod-c' (configured: prod-a, prod-b)"
    )


# --- secrets ------------------------------------------------------------------------------


def _values(obj: object) -> Iterator[object]:
    """Every value held anywhere inside a tree of dataclasses and tuples."""
    yield obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _values(getattr(obj, f.name))
    elif isinstance(obj, tuple):
        for item in obj:
            yield from _values(item)


def test_the_config_never_holds_a_password(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROD_A_PASSWORD", SECRET)
    secret_file = tmp_path / "prod-b.secret"
    secret_file.write_text(SECRET, encoding="utf-8")
    command = _python(f"print(open({str(secret_file)!r}).read())")
    text = (
        cluster_toml()
        + cluster_toml(name="prod-b", password_env=None, password_file=str(secret_file))
        + cluster_toml(name="prod-c", password_env=None, password_command=command)
    )
    config = load(config_file, text)
    assert [c.password.read() for c in config.clusters if c.password] == [SECRET] * 3
    assert SECRET not in repr(config)
    assert not any(isinstance(v, str) and SECRET in v for v in _values(config))


def read_error(source: PasswordSource) -> str:
    with pytest.raises(CredentialError) as caught:
        source.read()
    return str(caught.value)


def test_env_password_is_read_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    source = PasswordSource("env", "PROD_A_PASSWORD")
    monkeypatch.setenv("PROD_A_PASSWORD", "first")
    assert source.read() == "first"
    monkeypatch.setenv("PROD_A_PASSWORD", "rotated")
    assert source.read() == "rotated"


@pytest.mark.parametrize("value", [None, ""])
def test_missing_or_empty_env_password_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("PROD_A_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("PROD_A_PASSWORD", value)
    assert read_error(PasswordSource("env", "PROD_A_PASSWORD")) == (
        "environment variable PROD_A_PASSWORD is not set or empty"
    )


def test_file_password_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(f"{SECRET}\n", encoding="utf-8")
    assert PasswordSource("file", str(path)).read() == SECRET


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_password_file_names_the_file_and_why(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "secret"
    if kind == "directory":
        path.mkdir()
    reason = "Is a directory" if kind == "directory" else "No such file or directory"
    assert read_error(PasswordSource("file", str(path))) == (
        f"cannot read password_file {path}: {reason}"
    )


def test_empty_password_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("\n", encoding="utf-8")
    assert read_error(PasswordSource("file", str(path))) == f"password_file {path} is empty"


def test_password_file_that_is_not_text_is_refused_without_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"\xff\xfe" + SECRET.encode())
    assert read_error(PasswordSource("file", str(path))) == (
        f"password_file {path} is not UTF-8 text"
    )


def _python(code: str) -> str:
    return shlex.join([sys.executable, "-c", code])


def test_command_password_is_its_output_line() -> None:
    assert PasswordSource("command", _python(f"print({SECRET!r})")).read() == SECRET


def test_failing_password_command_reports_only_its_status() -> None:
    code = (
        f"import sys; print('on stdout: ' + {SECRET!r});"
        f" print('on stderr: ' + {SECRET!r}, file=sys.stderr); sys.exit(3)"
    )
    message = read_error(PasswordSource("command", _python(code)))
    assert message == "password_command exited with status 3"
    assert SECRET not in message
    assert "on stdout" not in message and "on stderr" not in message


def test_password_command_printing_nothing_is_refused() -> None:
    assert read_error(PasswordSource("command", _python("print()"))) == (
        "password_command printed nothing"
    )


def test_password_command_that_does_not_exist_fails_to_run(tmp_path: Path) -> None:
    assert read_error(PasswordSource("command", str(tmp_path / "no-such-helper"))) == (
        "password_command failed to run: FileNotFoundError"
    )


def test_relative_paths_are_relative_to_the_config_file(tmp_path, monkeypatch) -> None:
    from collector.config import load_config

    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "ca.pem").write_text("not parsed here")
    (folder / "pw").write_text("secret\n")
    config_file = folder / "iscsi-audit.toml"
    config_file.write_text(
        '[[clusters]]\nname = "a"\nurl = "https://a.example.com"\nusername = "u"\n'
        'password_file = "pw"\nca_file = "ca.pem"\n')
    monkeypatch.chdir(tmp_path)  # not the config's folder

    [cluster] = load_config(config_file).clusters

    assert cluster.ca_file == folder / "ca.pem"
    assert cluster.password is not None and cluster.password.read() == "secret"
