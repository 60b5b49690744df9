"""The Connect section: paste the web app's credentials (or type them), Test them against the server, Save them to
clearml.conf (0600, merge-safe), or use the embedded server. Secrets live only in the Password field."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable

import ipywidgets as w
from traitlets import Unicode

from notebook_agent.api.session import Session
from notebook_agent.config import ConfigError, PastedCredentials, config_path, load_config, parse_pasted
from notebook_agent.config.writer import write_credentials
from notebook_agent.masking import mask, mask_url
from notebook_agent.notebook.agent import Agent
from notebook_agent.notebook.widgets.card import ServerInfo
from notebook_agent.notebook.widgets.common import Actions, assign, note, reporter

logger = logging.getLogger(__name__)

# The variables the web app's JUPYTER NOTEBOOK tab sets, by form field; Colab secrets use the same names.
FIELD_VARS = {
    "api_server": "CLEARML_API_HOST",
    "web_server": "CLEARML_WEB_HOST",
    "files_server": "CLEARML_FILES_HOST",
    "access_key": "CLEARML_API_ACCESS_KEY",
    "secret_key": "CLEARML_API_SECRET_KEY",
}
LABELS = {"api_server": "API server", "access_key": "access key", "secret_key": "secret key"}
TEST_RETRY_SEC = 5.0  # a wrong host should fail in seconds, not after the session's minute of retries

Secrets = Callable[[str], "str | None"]


class PasteBox(w.Textarea):
    """The paste box. ipywidgets 8 echoes a value the browser sent back to every view of the widget; a paste holds
    the secret key, which must not travel again (the box is emptied at once, the key moves to the Password field)."""

    value = Unicode(help="String value").tag(sync=True, echo_update=False)


def colab_secret(name: str) -> str | None:
    """A Colab secret (the key icon in Colab's sidebar), None outside Colab or when it is not there or not
    shared with this notebook."""
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return userdata.get(name) or None
    except Exception:  # SecretNotFoundError, NotebookAccessError (not shared), a timeout: all mean "none"
        return None


def server_info(agent: Agent) -> ServerInfo:
    """Which server the agent uses, without starting one: reading `agent.config` with nothing configured would
    start the embedded server, so a plain load_config tells first whether anything is configured."""
    if not agent.connected:
        if agent.embedded:
            return ServerInfo(source="the embedded server (it starts with the agent)", embedded=True)
        try:
            probe = load_config(env=agent.env)
        except ConfigError as exc:
            return ServerInfo(error=str(exc))
        if not probe.api.configured:
            return ServerInfo()
    try:
        config = agent.config  # configured (or connected already): loading starts nothing
    except ConfigError as exc:
        return ServerInfo(error=str(exc))
    embedded = agent.embedded or agent.server is not None
    source = "the embedded server" if embedded else (str(config.path) if config.path else "CLEARML_* variables")
    return ServerInfo(config.api.api_server, config.api.web_server, source, embedded)


class ConnectForm:
    """The credentials form. `on_changed` runs after Save or the embedded choice (the panel re-reads the server)."""

    def __init__(
        self,
        agent: Agent,
        actions: Actions,
        *,
        secrets: Secrets | None = colab_secret,
        on_changed: Callable[[], None] | None = None,
    ) -> None:
        self.agent = agent
        self.actions = actions
        self.on_changed = on_changed
        style = {"description_width": "90px"}
        wide = w.Layout(width="98%", max_width="640px")
        self.status = w.HTML()
        self.paste = PasteBox(
            placeholder=(
                "Paste the api { ... } block from the web app (Settings > Workspace > Create new credentials),\n"
                "or its %env CLEARML_* lines: the fields below fill in."
            ),
            rows=5,
            layout=wide,
        )
        self.api_server = w.Text(description="API server", placeholder="https://api.clear.ml", style=style, layout=wide)
        self.web_server = w.Text(description="Web app", placeholder="(derived)", style=style, layout=wide)
        self.files_server = w.Text(description="Files", placeholder="(derived)", style=style, layout=wide)
        self.access_key = w.Text(description="Access key", style=style, layout=wide)
        self.secret_key = w.Password(description="Secret key", style=style, layout=wide)
        self.test = w.Button(description="Test", tooltip="log in with these credentials; nothing is saved")
        self.save = w.Button(
            description="Save", button_style="primary", tooltip="write them to clearml.conf (readable by you only)"
        )
        self.embedded = w.Button(
            description="Use embedded server", layout=w.Layout(width="auto"), tooltip="a local ClearML server"
        )
        self.message = w.HTML()
        self.box = w.VBox(
            [
                self.status,
                self.paste,
                w.HTML("<span style='color:#666;font-size:90%'>or type them:</span>"),
                self.api_server,
                self.web_server,
                self.files_server,
                self.access_key,
                self.secret_key,
                w.HBox([self.test, self.save, self.embedded]),
                self.message,
            ]
        )
        self.paste.observe(self._pasted, names="value")
        self.test.on_click(lambda _b: self.run_test())
        self.save.on_click(lambda _b: self.run_save())
        self.embedded.on_click(lambda _b: self.run_embedded())
        self._report = reporter(self.message)
        self._prefill(secrets)

    # fields -------------------------------------------------------------------------------------------------
    def _fields(self) -> dict[str, w.Text]:
        return {name: getattr(self, name) for name in FIELD_VARS}

    def _prefill(self, secrets: Secrets | None) -> None:
        """CLEARML_* variables first; Colab secrets only when nothing is configured (reading one may ask the
        user to share it with this notebook, which is noise when clearml.conf already works)."""
        env = self.agent.env
        for name, field in self._fields().items():
            field.value = env.get(FIELD_VARS[name], "").strip()
        if secrets is None or server_info(self.agent).configured:
            return
        for name, field in self._fields().items():
            if not field.value:
                field.value = (secrets(FIELD_VARS[name]) or "").strip()

    def fill(self, creds: PastedCredentials) -> None:
        for name, field in self._fields().items():
            assign(field, "value", getattr(creds, name))

    def credentials(self) -> PastedCredentials:
        """The form's credentials, hosts normalised as for a paste; ConfigError naming what is missing."""
        values = {name: field.value.strip() for name, field in self._fields().items()}
        missing = [LABELS[name] for name in LABELS if not values[name]]
        if missing:
            raise ConfigError(f"fill in {', '.join(missing)} (or paste the credentials above)")
        # The %env form reuses the paste rules: a host without scheme, web/files hosts derived from the api host.
        lines = [f"%env {FIELD_VARS[name]}={value}" for name, value in values.items() if value]
        return parse_pasted("\n".join(lines))

    def _pasted(self, change: dict) -> None:
        text = change["new"]
        if not text.strip():
            return
        try:
            creds = parse_pasted(text)
        except ConfigError as exc:
            self._report("info", f"{exc.problem} yet." + (f" {exc.fix}." if exc.fix else ""))
            return
        self.fill(creds)
        # The secret is in the Password field now; the paste box (a plain text value) must not keep it.
        self.paste.value = ""
        self._report(
            "ok",
            f"Read credentials for {mask_url(creds.api_server)} (access key {mask(creds.access_key)}): "
            "Test them, then Save.",
        )

    # actions ------------------------------------------------------------------------------------------------
    def run_test(self) -> None:
        try:
            creds = self.credentials()
        except ConfigError as exc:
            self._report("error", str(exc))
            return
        self.actions.run("test", lambda: _login(creds), self._report, f"logging in to {mask_url(creds.api_server)}")

    def run_save(self) -> None:
        """Write clearml.conf here, in the click handler: it is a small local file, and the result is at once
        visible to the next action (Start)."""
        try:
            creds = self.credentials()
            result = write_credentials(creds, config_path(self.agent.env))
            config = load_config(env=self.agent.env)
        except ConfigError as exc:
            self._report("error", str(exc))
            return
        self.agent.embedded = False
        self.agent.use_config(config if config.api.configured else None)
        message = result.message
        if config.api.api_server and config.api.api_server != creds.api_server:
            message += (
                f" CLEARML_* variables point the agent at {mask_url(config.api.api_server)}; they win over the file."
            )
        if self.agent.running:
            message += " The running worker keeps its server until you Stop and Start it."
        in_effect = config.api.credentials is not None and config.api.credentials.access_key == creds.access_key
        self._report("ok" if in_effect else "info", message)
        self._changed()

    def run_embedded(self) -> None:
        def work() -> str:
            self.agent.embedded = True
            self.agent.use_config(None)
            config = self.agent.config  # starts the embedded server, or finds the one already running
            said = " ".join(self.agent.messages) or f"using the embedded server at {config.api.api_server}"
            if self.agent.running:
                said += ". The running worker keeps its server until you Stop and Start it."
            self._changed()
            return said

        self.actions.run("embedded", work, self._report, "starting the embedded server")

    def render_status(self, info: ServerInfo) -> None:
        if info.error:
            text = note("error", info.error)
        elif info.api_server:
            text = (
                f"Using <code>{html.escape(mask_url(info.api_server))}</code> "
                f"<span style='color:#666'>({html.escape(info.source)})</span>. Paste new credentials to change it."
            )
        elif info.embedded:
            text = "Using the embedded server: it starts with the agent."
        else:
            text = (
                "<b style='color:#ef6c00'>No ClearML server is configured.</b> Paste your credentials and Save, or "
                "use the embedded server (Start uses it too when nothing is configured)."
            )
        assign(self.status, "value", text)

    def _changed(self) -> None:
        if self.on_changed is not None:
            self.on_changed()


def _login(creds: PastedCredentials) -> str:
    with Session(
        creds.api_server, creds.access_key, creds.secret_key, retry_total_seconds=TEST_RETRY_SEC, timeout=10.0
    ) as session:
        session.login()
        version = session.server_version
    server = f" (server {version})" if version else ""
    return (
        f"OK: logged in to {mask_url(creds.api_server)} as {mask(creds.access_key)}{server}. "
        "Nothing is saved until you click Save."
    )
