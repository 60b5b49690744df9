"""State shared by every handler of the embedded server: the store, the clock, the company and its credentials."""

from __future__ import annotations

import hmac
import json
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from notebook_agent.masking import mask
from notebook_agent.server.registry import Identity
from notebook_agent.server.store import Store

COMPANY_NAME = "notebook-agent"
DEFAULT_QUEUE = "default"


def new_id() -> str:
    """Ids as the real server makes them: uuid4 hex, 32 characters."""
    return uuid.uuid4().hex


def _random_key(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass(frozen=True)
class KeyPair:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"KeyPair(access_key={mask(self.access_key)!r}, secret_key='****')"


class Backend:
    """Owns the store and the identity of the single company and user of an embedded server."""

    def __init__(self, store: Store, clock=time.time) -> None:
        self.store = store
        self.clock = clock
        self.company = self._setting_or("company_id", new_id)
        self.user = self._setting_or("user_id", new_id)
        self.token_secret = self._setting_or("token_secret", lambda: secrets.token_hex(32))
        self.identity = Identity(
            user=self.user, company=self.company, user_name="notebook-agent", company_name=COMPANY_NAME
        )
        # Long-poll support: waiters sleep on this until a queue gets an entry or their worker is woken.
        self._changed = threading.Condition()
        self._generation = 0
        self._worker_wakes: dict[str, int] = {}
        self._all_wakes = 0
        self.stopping = False

    def _setting_or(self, key: str, make) -> str:
        with self.store.transaction():
            value = self.store.setting(key)
            if value is None:
                value = make()
                self.store.set_setting(key, value)
            return value

    # time
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc)

    def now_iso(self) -> str:
        return self.now().isoformat(timespec="milliseconds")

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # credentials
    def key_pairs(self) -> list[KeyPair]:
        return [KeyPair(**p) for p in json.loads(self.store.setting("credentials") or "[]")]

    def ensure_credentials(self, access_key: str | None = None, secret_key: str | None = None) -> KeyPair:
        """The key pair clients should use: the given one (added if new) or the first stored or a new one."""
        with self.store.transaction():
            pairs = self.key_pairs()
            if access_key and secret_key:
                wanted = KeyPair(access_key, secret_key)
                pairs = [p for p in pairs if p.access_key != access_key]
                pairs.insert(0, wanted)
            elif not pairs:
                pairs = [
                    KeyPair(
                        _random_key(20, string.ascii_uppercase + string.digits),
                        _random_key(50, string.ascii_letters + string.digits),
                    )
                ]
            self.store.set_setting("credentials", json.dumps([p.__dict__ for p in pairs]))
            return pairs[0]

    def check_credentials(self, access_key: str, secret_key: str) -> bool:
        for pair in self.key_pairs():
            if hmac.compare_digest(pair.access_key, access_key):
                return hmac.compare_digest(pair.secret_key, secret_key)
        return False

    def known_access_key(self, access_key: str) -> bool:
        return any(hmac.compare_digest(p.access_key, access_key) for p in self.key_pairs())

    # long poll
    def notify_queues(self) -> None:
        """A queue got an entry: wake every long poll so each checks its queues."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wake_worker(self, worker_id: str) -> None:
        """The worker reported or left: end its pending long poll so it sees its own new state."""
        with self._changed:
            self._worker_wakes[worker_id] = self._worker_wakes.get(worker_id, 0) + 1
            self._generation += 1
            self._changed.notify_all()

    def wake_all(self) -> None:
        """Something every worker's pull decision reads changed (a queue's force_workers tag): end every pending
        long poll so each worker reads it again."""
        with self._changed:
            self._all_wakes += 1
            self._generation += 1
            self._changed.notify_all()

    def shutdown(self) -> None:
        with self._changed:
            self.stopping = True
            self._changed.notify_all()

    def wait_for_entries(self, queue_ids: list[str], worker_id: str, timeout: float) -> None:
        """Return once a queue in `queue_ids` has an entry, the worker is woken, or `timeout` passes.

        The store is never read while holding the condition (writers notify while holding the store's lock).
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            woken_at = self._worker_wakes.get(worker_id, 0)
            all_woken_at = self._all_wakes
        while True:
            with self._changed:
                generation = self._generation
            if any(self.store.count_entries(q) for q in queue_ids):
                return
            remaining = deadline - time.monotonic()
            with self._changed:
                woken = self._worker_wakes.get(worker_id, 0) != woken_at or self._all_wakes != all_woken_at
                if self.stopping or remaining <= 0 or woken:
                    return
                if self._generation == generation:
                    self._changed.wait(remaining)

    # initial data
    def ensure_default_queue(self) -> None:
        """The real server creates `default` (system tag `default`) on its first start."""
        with self.store.transaction():
            if self.store.setting("default_queue_created"):
                return
            if not any("default" in q.get("system_tags", []) for q in self.store.all("queue")):
                self.store.put(
                    "queue",
                    {
                        "id": new_id(),
                        "name": DEFAULT_QUEUE,
                        "display_name": DEFAULT_QUEUE,
                        "user": self.user,
                        "company": self.company,
                        "created": self.now_iso(),
                        "tags": [],
                        "system_tags": ["default"],
                        "metadata": {},
                    },
                )
            self.store.set_setting("default_queue_created", "1")
