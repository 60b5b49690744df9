"""The engine acceptance fixtures (offline wheelhouse, agent config and environment) for the notebook face."""

from tests.integration.engine.conftest import agent_config, agent_env, wheelhouse  # noqa: F401
