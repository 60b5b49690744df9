"""A stand-in `docker` executable: records every call, and for `run` executes the agent command on this host.

No docker engine runs where the tests run. The stand-in appends each call's argv (one JSON list per line) to a
record file and exits 0, except for `run`, which it emulates:

- the `-e NAME=value` variables are applied (a bare `-e NAME` takes NAME from the stand-in's own environment, as
  docker does), on top of this host's environment without its CLEARML_*/TRAINS_* variables (a container does not
  inherit the agent's server settings), with HOME set to a folder of its own (the container's /root);
- bind mounts are emulated by translating container paths to their host paths: in the variables, and in the
  clearml.conf that CLEARML_CONFIG_FILE names (a translated copy is used);
- of the `bash -c` script, only the last " ; " part runs: the agent command. The bootstrap before it (apt-get, the
  agent's pip install) is what a real image needs and must not touch this host; LOCAL_PYTHON is this interpreter,
  which has notebook-agent installed, as an image made by `build --docker` would.

So a task really runs end to end through the stand-in, while what real docker would do with the arguments (GPUs,
networks, the bootstrap inside an image) stays untested.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

_SCRIPT = r"""#!{python}
import json, os, subprocess, sys

RECORD = {record!r}
HOME = {home!r}
FLAGS = {{"-t", "-i", "-it", "-d", "--rm", "--tty", "--interactive", "--detach", "--privileged", "--init"}}

argv = sys.argv[1:]
with open(RECORD, "a") as out:
    out.write(json.dumps(argv) + "\n")
if argv[:1] != ["run"]:
    sys.exit(0)

env_args, mounts, rest = [], [], argv[1:]
while rest and rest[0].startswith("-"):
    option = rest.pop(0)
    if option in FLAGS or "=" in option:
        continue
    value = rest.pop(0)
    if option in ("-e", "--env"):
        env_args.append(value)
    elif option in ("-v", "--volume"):
        host, inside = value.split(":")[:2]
        mounts.append((inside, host))
image, command = rest[0], rest[1:]
mounts.sort(key=lambda m: -len(m[0]))


def on_host(text):
    for inside, host in mounts:
        if text == inside or text.startswith(inside + "/"):
            return host + text[len(inside):]
    return text


env = {{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}}
os.makedirs(HOME, exist_ok=True)
env.update(HOME=HOME, LOCAL_PYTHON=sys.executable)
for item in env_args:
    name, sep, value = item.partition("=")
    if sep:
        env[name] = on_host(value)
    elif name in os.environ:
        env[name] = os.environ[name]
conf = env.get("CLEARML_CONFIG_FILE")
if conf and os.path.isfile(conf):
    text = open(conf).read()
    for inside, host in mounts:
        text = text.replace('"' + inside, '"' + host)
    conf = os.path.join(HOME, "translated.clearml.conf")
    with open(conf, "w") as out:
        out.write(text)
    env["CLEARML_CONFIG_FILE"] = conf
if command[:2] != ["bash", "-c"]:
    sys.exit(subprocess.call(command, env=env, cwd=HOME))
agent_command = command[2].split(" ; ")[-1]
sys.exit(subprocess.call(["bash", "-c", agent_command], env=env, cwd=HOME))
"""


def install_docker_standin(bin_dir: Path, record: Path, home: Path) -> Path:
    """Write the stand-in as `bin_dir/docker` (put bin_dir first on PATH); calls go to `record`, and `home` is
    the emulated container's home folder. Returns the executable's path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(_SCRIPT.format(python=sys.executable, record=str(record), home=str(home)))
    docker.chmod(0o755)
    return docker


def recorded_calls(record: Path) -> list[list[str]]:
    """Every call's argv (without `docker`), in order."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
