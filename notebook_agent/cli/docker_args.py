"""The docker-mode options that `daemon`, `execute` and `build` share (clearml-agent's "Docker support" group)."""

from __future__ import annotations

import argparse

DOCKER_HELP = (
    "run tasks inside a container: --docker alone uses agent.default_docker.image/arguments; --docker IMAGE; "
    'or --docker "IMAGE --ipc=host ..." with its arguments in one quoted string. A task\'s own container.image wins. '
    "Needs a docker engine (only tested through a stand-in docker)"
)


def add_docker_arguments(parser: argparse.ArgumentParser, help: str = DOCKER_HELP) -> None:
    parser.add_argument("--docker", nargs="*", default=None, metavar="IMAGE", help=help)
    parser.add_argument(
        "--force-current-version",
        action="store_true",
        help="accepted for clearml-agent compatibility: the container always runs this agent's own version",
    )
