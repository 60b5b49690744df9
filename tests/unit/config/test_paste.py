"""parse_pasted: the web app's api block (several spellings), %env / export / os.environ lines, and errors."""

from __future__ import annotations

import pytest

from notebook_agent.config import ConfigError, PastedCredentials, parse_pasted

from .conftest import ACCESS, SECRET

WEB_APP_BLOCK = f"""api {{
  web_server: https://app.clear.ml/
  api_server: https://api.clear.ml
  files_server: https://files.clear.ml
  credentials {{
    "access_key" = "{ACCESS}"
    "secret_key" = "{SECRET}"
  }}
}}"""

EXPECTED = PastedCredentials(
    api_server="https://api.clear.ml",
    web_server="https://app.clear.ml",
    files_server="https://files.clear.ml",
    access_key=ACCESS,
    secret_key=SECRET,
)

BLOCKS = {
    "web app": WEB_APP_BLOCK,
    "colons and no quotes on keys": WEB_APP_BLOCK.replace('"access_key" =', "access_key:").replace(
        '"secret_key" =', "secret_key:"
    ),
    "without the outer api": "\n".join(WEB_APP_BLOCK.splitlines()[1:-1]),
    "quoted hosts": WEB_APP_BLOCK.replace("https://api.clear.ml", '"https://api.clear.ml/"'),
    "one-line credentials (old web app)": (
        f'credentials {{"access_key": "{ACCESS}", "secret_key": "{SECRET}"}}\n'
        "api_server: https://api.clear.ml\nweb_server: https://app.clear.ml\n"
    ),
    "missing closing braces": "\n".join(WEB_APP_BLOCK.splitlines()[:-2]),
    "inside a whole clearml.conf": (
        "# ClearML SDK configuration file\n"
        "api {\n"
        "    # api_server: https://demoapi.demo.clear.ml\n"
        "    web_server: https://app.clear.ml\n"
        "    api_server: https://api.clear.ml  # the api\n"
        "    files_server: https://files.clear.ml\n"
        f'    credentials {{"access_key": "{ACCESS}", "secret_key": "{SECRET}"}}\n'
        "}\n"
        'sdk {\n  aws { s3 { credentials: [{ host: "minio:9000", key: "k", secret: "s" }] } }\n}\n'
        "agent { worker_name: x }\n"
    ),
    "dotted keys with =": (
        f'api.api_server = "https://api.clear.ml"\napi.credentials.access_key = "{ACCESS}"\n'
        f'api.credentials.secret_key = "{SECRET}"\n'
    ),
}


@pytest.mark.parametrize("text", list(BLOCKS.values()), ids=list(BLOCKS))
def test_api_block(text: str) -> None:
    assert parse_pasted(text) == EXPECTED


def test_unquoted_secret_with_hash_and_dollar_is_kept_whole() -> None:
    text = "api_server: https://api.clear.ml\naccess_key: AK\nsecret_key: ab#cd$ef(gh)\n"
    assert parse_pasted(text).secret_key == "ab#cd$ef(gh)"


def test_quoted_value_escapes() -> None:
    text = 'api_server: "https://api.clear.ml"\naccess_key: "A\\"K"\nsecret_key: "a\\\\b"\n'
    creds = parse_pasted(text)
    assert (creds.access_key, creds.secret_key) == ('A"K', "a\\b")


JUPYTER = f"""%env CLEARML_WEB_HOST=https://app.clear.ml/
%env CLEARML_API_HOST=https://api.clear.ml
%env CLEARML_FILES_HOST=https://files.clear.ml
%env CLEARML_API_ACCESS_KEY={ACCESS}
%env CLEARML_API_SECRET_KEY={SECRET}
"""

ENV_FORMS = {
    "jupyter %env": JUPYTER,
    "%env with a space": JUPYTER.replace("=", " ", 1),
    "export": JUPYTER.replace("%env ", "export "),
    "!export with quotes": (
        "!export CLEARML_API_HOST='https://api.clear.ml'\n"
        '!export CLEARML_WEB_HOST="https://app.clear.ml"\n'
        f"!export CLEARML_API_ACCESS_KEY='{ACCESS}'\n"
        f"!export CLEARML_API_SECRET_KEY='{SECRET}'\n"
    ),
    "bare NAME=VALUE": JUPYTER.replace("%env ", ""),
    "os.environ": "import os\n"
    + "".join(
        f'os.environ["{name}"] = "{value}"\n'
        for name, value in (
            ("CLEARML_API_HOST", "https://api.clear.ml"),
            ("CLEARML_WEB_HOST", "https://app.clear.ml/"),
            ("CLEARML_FILES_HOST", "https://files.clear.ml"),
            ("CLEARML_API_ACCESS_KEY", ACCESS),
            ("CLEARML_API_SECRET_KEY", SECRET),
        )
    ),
    "os.environ single quotes, TRAINS names": (
        "os.environ['TRAINS_API_HOST'] = 'https://api.clear.ml'\n"
        f"os.environ['TRAINS_API_ACCESS_KEY']='{ACCESS}'\n"
        f"os.environ.setdefault('TRAINS_API_SECRET_KEY', '{SECRET}')\n"
    ),
}


@pytest.mark.parametrize("text", list(ENV_FORMS.values()), ids=list(ENV_FORMS))
def test_env_lines(text: str) -> None:
    assert parse_pasted(text) == EXPECTED


def test_local_server_hosts_are_derived() -> None:
    lines = [
        "CLEARML_API_HOST=http://localhost:8008/",
        "CLEARML_API_ACCESS_KEY=a",
        "CLEARML_API_SECRET_KEY=b",
    ]
    creds = parse_pasted("".join(f"%env {line}\n" for line in lines))
    assert (creds.api_server, creds.web_server, creds.files_server) == (
        "http://localhost:8008",
        "http://localhost:8080",
        "http://localhost:8081",
    )


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("hello world, this is not a config", "access_key"),
        ("", "access_key"),
        (WEB_APP_BLOCK.replace(f'"secret_key" = "{SECRET}"', ""), "secret_key"),
        (WEB_APP_BLOCK.replace('"access_key"', '"acess_key"'), "access_key"),
        (WEB_APP_BLOCK.replace("api_server: https://api.clear.ml", ""), "api_server"),
        (JUPYTER.replace("%env CLEARML_API_SECRET_KEY", "%env CLEARML_OTHER"), "secret_key"),
    ],
)
def test_errors_name_the_missing_field(text: str, missing: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pasted(text)
    message = str(info.value)
    assert f"no {missing}" in message or f", {missing}" in message
    assert info.value.key is not None and info.value.key.endswith(missing)
    assert "Create new credentials" in message and "%env CLEARML_" in message
    assert SECRET not in message and SECRET[:8] not in message
    assert ACCESS not in message


def test_error_on_missing_secret_does_not_echo_the_rest() -> None:
    text = f"access_key: {SECRET}\napi_server: https://api.clear.ml\n"  # a secret pasted as the access key
    with pytest.raises(ConfigError) as info:
        parse_pasted(text)
    assert "secret_key" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_repr_masks_the_keys() -> None:
    creds = parse_pasted(WEB_APP_BLOCK)
    for text in (repr(creds), str(creds), f"{creds}"):
        assert SECRET not in text and SECRET[:4] not in text
        assert ACCESS not in text
        assert "https://api.clear.ml" in text
