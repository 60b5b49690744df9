"""Clone a task's repository at its commit, tag or branch, and apply the task's uncommitted diff."""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from notebook_agent.environment.commands import CommandResult, mask_text, run
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.reporter import BuildReporter, NullReporter
from notebook_agent.environment.vcs_cache import MirrorUnavailable, locked_mirror
from notebook_agent.masking import mask_url

logger = logging.getLogger(__name__)

_GIT = ("git", "-c", "advice.detachedHead=false")
_SHA = re.compile(r"[0-9a-fA-F]{40}")
_BRANCH_PREFIXES = ("refs/remotes/origin/", "remotes/origin/", "origin/", "refs/heads/")
_NOT_FOUND = ("not found", "does not exist", "does not appear to be a git repository", "returned error: 404")
_AUTH = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "permission denied",
    "returned error: 403",
)
_UNREACHABLE = ("could not resolve", "failed to connect", "connection refused", "timed out", "unreachable", "no route")


def checkout(
    repository: str,
    dest: Path,
    *,
    commit: str = "",
    tag: str = "",
    branch: str = "",
    env: Mapping[str, str],
    reporter: BuildReporter,
    git_user: str = "",
    git_pass: str = "",
    git_host: str = "",
    mirror_root: Path | None = None,
    fetch_args: Sequence[str] = (),
) -> str:
    """Clone `repository` into `dest` (which must not exist or be empty) and check out `commit`, else `tag`,
    else `branch`, else the default branch. Returns the checked-out commit sha.

    With `mirror_root` (agent.vcs_cache) the clone comes from a local mirror fetched first (`fetch_args`:
    agent.git_fetch_args); the checkout's origin is still `repository`.
    """
    genv = git_env(env)
    secrets = [git_pass, _password(repository)]
    shown = mask_url(repository)
    for name, value in (("commit", commit), ("tag", tag), ("branch", branch)):
        if value.startswith("-") or any(c.isspace() for c in value):
            # Refuse anything git could read as an option.
            raise EnvironmentSetupError(f"invalid {name} {value!r} for {shown}")
    # A password in the URL goes through GIT_ASKPASS too: in the URL it would be in git's argv and in .git/config.
    clone_url, url_user, url_pass = _split_password(repository)
    if url_pass:  # the URL's own credentials are more specific than agent.git_user/git_pass
        git_user, git_pass, git_host = url_user, url_pass, ""
    askpass = _askpass(clone_url, git_user, git_pass, genv, dest.parent, git_host)
    dest.parent.mkdir(parents=True, exist_ok=True)
    cloned = None
    if mirror_root is not None:
        cloned = _clone_from_mirror(repository, dest, mirror_root, genv, reporter, secrets, fetch_args)
    if cloned is None:
        # --no-checkout: the work tree is written once, at the revision we want, not first at the default branch.
        cloned = run(
            [*_GIT, "clone", "--no-checkout", clone_url, str(dest)],
            cwd=dest.parent,
            env=genv,
            reporter=reporter,
            secrets=secrets,
        )
    if cloned.returncode != 0:
        _remove(askpass)
        raise EnvironmentSetupError(_clone_failure(shown, cloned.stdout), cloned.stdout, logged=True)
    try:
        return _checkout_revision(dest, genv, clone_url, shown, secrets, reporter, commit, tag, branch)
    finally:
        _remove(askpass)


def _clone_from_mirror(
    repository: str,
    dest: Path,
    mirror_root: Path,
    genv: Mapping[str, str],
    reporter: BuildReporter,
    secrets: list[str],
    fetch_args: Sequence[str],
) -> CommandResult | None:
    """Clone `dest` from the repository's mirror and point its origin back at `repository`; None (after a log
    line) when the mirror can't be used, so the caller clones directly."""
    if _password(repository):
        reporter.log("vcs cache: not used for a URL that carries a password (it would be stored in the mirror)")
        return None
    try:
        with locked_mirror(
            mirror_root, repository, genv=genv, reporter=reporter, secrets=secrets, fetch_args=fetch_args
        ) as mirror:
            cloned = run(
                [*_GIT, "clone", "--no-checkout", "--quiet", str(mirror), str(dest)],
                cwd=dest.parent,
                env=genv,
                reporter=reporter,
                secrets=secrets,
            )
    except (MirrorUnavailable, OSError) as exc:
        reporter.log(f"vcs cache: {mask_text(str(exc), secrets)}; cloning directly")
        logger.warning("vcs cache unusable for %s: %s", mask_url(repository), mask_text(str(exc), secrets))
        return None
    if cloned.returncode != 0:
        reporter.log(f"vcs cache: clone from the mirror failed ({_telling(cloned.stdout)}); cloning directly")
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        return None
    run([*_GIT, "remote", "set-url", "origin", repository], cwd=dest, env=genv, reporter=reporter, quiet=True)
    return cloned


def _checkout_revision(
    dest: Path,
    genv: Mapping[str, str],
    clone_url: str,
    shown: str,
    secrets: list[str],
    reporter: BuildReporter,
    commit: str,
    tag: str,
    branch: str,
) -> str:

    if commit:
        sha = _resolve(dest, genv, commit)
        if not sha and _SHA.fullmatch(commit):
            # A commit no branch or tag reaches may still be fetchable by sha (most hosting services allow it).
            run([*_GIT, "fetch", "--quiet", clone_url, commit], cwd=dest, env=genv, reporter=reporter, secrets=secrets)
            sha = _resolve(dest, genv, commit)
        if not sha:
            raise EnvironmentSetupError(f"commit {commit} not found in {shown}")
        target = [sha]
    elif tag:
        sha = _resolve(dest, genv, f"refs/tags/{tag}")
        if not sha:
            raise EnvironmentSetupError(f"tag {tag} not found in {shown}")
        target = [sha]
    elif branch:
        name, sha = _find_branch(dest, genv, branch)
        if not sha:
            raise EnvironmentSetupError(f"branch {branch} not found in {shown}")
        # A named local branch (not a detached head), so the task's own `git` calls see the branch it ran from.
        target = ["-B", name, f"refs/remotes/origin/{name}"]
    else:
        sha = _resolve(dest, genv, "HEAD")
        if not sha:
            raise EnvironmentSetupError(f"repository has no commits: {shown}")
        target = ["HEAD"]

    checked = run([*_GIT, "checkout", "--force", "--quiet", *target], cwd=dest, env=genv, reporter=reporter)
    if checked.returncode != 0:
        raise EnvironmentSetupError(f"git checkout failed: {_telling(checked.stdout)}", checked.stdout, logged=True)
    if (dest / ".gitmodules").is_file():
        sub = run(
            [*_GIT, "submodule", "update", "--init", "--recursive"],
            cwd=dest,
            env=genv,
            reporter=reporter,
            secrets=secrets,
        )
        if sub.returncode != 0:
            # Not fatal: many tasks never import their submodules; the log says what is missing if one does.
            warning = f"WARNING: git submodule update failed: {_telling(sub.stdout)}"
            reporter.log(warning)
            logger.warning("%s (%s)", warning, shown)
    return sha


def apply_diff(repo_dir: Path, diff: str, *, env: Mapping[str, str], reporter: BuildReporter) -> None:
    """Apply the task's uncommitted changes (a `git diff` from the repository root) to the checked-out tree."""
    if not diff.strip():
        return
    genv = git_env(env)
    # git apply rejects a patch whose last line lacks its newline ("corrupt patch"); the stored text may.
    text = diff if diff.endswith("\n") else diff + "\n"
    # --unidiff-zero as clearml-agent does: diffs made with -U0 carry no context lines.
    base = [*_GIT, "apply", "--unidiff-zero", "--whitespace=nowarn"]
    result = run([*base, "-"], cwd=repo_dir, env=genv, reporter=reporter, input=text)
    if result.returncode != 0 and not _has_ab_prefixes(text):
        # Made with diff.noprefix=true: the paths carry no a/ b/ component to strip.
        result = run([*base, "-p0", "-"], cwd=repo_dir, env=genv, reporter=reporter, input=text)
    if result.returncode != 0:
        head = _resolve(repo_dir, genv, "HEAD")[:7] or "the checked-out tree"
        why = _telling(result.stdout)
        raise EnvironmentSetupError(
            f"git apply failed: the uncommitted diff does not apply to {head}" + (f" ({why})" if why else ""),
            result.stdout,
            logged=True,
        )


def git_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for git: never prompt (nobody can answer in a headless build), English messages."""
    genv = dict(env)
    genv["GIT_TERMINAL_PROMPT"] = "0"
    genv["LC_ALL"] = "C"  # _clone_failure reads git's messages
    if "GIT_SSH_COMMAND" not in genv and "GIT_SSH" not in genv:
        genv["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"  # fail instead of asking for a passphrase or host key
    return genv


def _git(repo: Path, genv: Mapping[str, str], *args: str) -> str:
    result = run([*_GIT, *args], cwd=repo, env=genv, reporter=NullReporter(), quiet=True, capture=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def _resolve(repo: Path, genv: Mapping[str, str], rev: str) -> str:
    return _git(repo, genv, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")


def _find_branch(repo: Path, genv: Mapping[str, str], branch: str) -> tuple[str, str]:
    # The SDK stores a plain name, but tasks edited by hand often say origin/main or refs/heads/main.
    names = [branch] + [branch[len(p) :] for p in _BRANCH_PREFIXES if branch.startswith(p)]
    for name in names:
        sha = _resolve(repo, genv, f"refs/remotes/origin/{name}")
        if sha:
            return name, sha
    return branch, ""


_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$NOTEBOOK_AGENT_GIT_USER" ;;
  *) printf '%s\\n' "$NOTEBOOK_AGENT_GIT_PASS" ;;
esac
"""


def _askpass(url: str, user: str, password: str, genv: dict[str, str], scratch: Path, host: str = "") -> Path | None:
    """Hand git the credentials through GIT_ASKPASS: never in a URL, a process argument or a log line.

    The script reads them from its environment (readable only by this user), so nothing secret is on disk.
    With `host` (agent.git_host) the credentials go to that host only.
    """
    parts = urlsplit(url)
    if not (user and password) or parts.scheme not in ("http", "https") or "@" in parts.netloc:
        return None  # ssh and local repositories authenticate otherwise; a URL's own userinfo is more specific
    if host and (parts.hostname or "").lower() != host.strip().lower().split(":")[0]:
        return None
    scratch.mkdir(parents=True, exist_ok=True)
    script = scratch / f".git-askpass-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as handle:
        handle.write(_ASKPASS)
    genv.update(GIT_ASKPASS=str(script), NOTEBOOK_AGENT_GIT_USER=user, NOTEBOOK_AGENT_GIT_PASS=password)
    return script


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _split_password(url: str) -> tuple[str, str, str]:
    """(url without its userinfo, user, password) of an http(s) URL with a password; else (url, "", "")."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, "", ""
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    if not (user and password):
        return url, "", ""  # a token as the user name (or no user): git needs it in the URL
    return urlunsplit(parts._replace(netloc=host)), unquote(user), unquote(password)


def _password(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return ""
    return unquote(parts.netloc.rsplit("@", 1)[0].partition(":")[2])


def _has_ab_prefixes(diff: str) -> bool:
    return any(line.startswith(("--- a/", "+++ b/", "diff --git a/")) for line in diff.splitlines())


def _telling(output: str) -> str:
    """The line that says why git failed: its last fatal/error line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                return line[len(prefix) :]
    return lines[-1] if lines else ""


def _clone_failure(shown: str, output: str) -> str:
    low = output.lower()
    if any(s in low for s in _NOT_FOUND):
        return f"git clone failed: repository not found: {shown}"
    if any(s in low for s in _AUTH):
        return f"git clone failed: authentication failed for {shown}"
    if any(s in low for s in _UNREACHABLE):
        return f"git clone failed: repository not reachable: {shown} ({_telling(output)})"
    return f"git clone failed: {_telling(output)}"
