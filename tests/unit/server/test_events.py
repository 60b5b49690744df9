"""`events.*` of the embedded server: batches in, console logs and scalars out."""

from __future__ import annotations

import hashlib
import json

import pytest

BASE_MS = 1_700_000_000_000


def log_lines(task: str, timestamps: list[int]) -> list[dict]:
    return [
        {"task": task, "type": "log", "timestamp": ts, "level": "info", "worker": "w", "msg": f"line {i}"}
        for i, ts in enumerate(timestamps)
    ]


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture
def task(raw) -> str:
    task = raw.new_task("event task")
    raw.ok("tasks.started", {"task": task})
    return task


class TestAddBatch:
    def test_added_count(self, raw, task):
        data = raw.ok("events.add_batch", lines=log_lines(task, [BASE_MS + i for i in range(5)]))
        assert data == {"added": 5, "errors": 0, "errors_info": {}}

    def test_unknown_task_and_bad_type_are_counted_not_fatal(self, raw, task):
        lines = [
            *log_lines(task, [BASE_MS]),
            {"task": "0" * 32, "type": "log", "msg": "nobody"},
            {"task": task, "type": "no-such-type", "msg": "bad"},
            {"task": task, "msg": "no type"},
            *log_lines(task, [BASE_MS + 1]),
        ]
        data = raw.ok("events.add_batch", lines=lines)
        assert data["added"] == 2
        assert data["errors"] == 3
        assert sum(data["errors_info"].values()) == 3
        assert raw.ok("events.get_task_log", {"task": task})["total"] == 2

    @pytest.mark.parametrize("bad", [{"timestamp": "soon"}, {"iter": "x", "type": "training_stats_scalar"}])
    def test_bad_numbers_are_counted_not_fatal(self, raw, task, bad):
        lines = [*log_lines(task, [BASE_MS]), {**log_lines(task, [BASE_MS + 1])[0], **bad}]
        data = raw.ok("events.add_batch", lines=lines)
        assert (data["added"], data["errors"]) == (1, 1)

    def test_empty_batch_is_400_17(self, raw):
        reply = raw.call("events.add_batch", lines=[])
        assert (reply.status, reply.subcode) == (400, 17)

    def test_missing_timestamp_is_filled(self, raw, task, clock):
        raw.ok("events.add_batch", lines=[{"task": task, "type": "log", "msg": "no time"}])
        event = raw.ok("events.get_task_log", {"task": task})["events"][0]
        assert abs(event["timestamp"] - clock() * 1000) < 60_000

    def test_worker_from_header_when_absent(self, raw, task):
        lines = [{"task": task, "type": "log", "msg": "mine", "timestamp": BASE_MS}]
        lines.append({"task": task, "type": "log", "msg": "theirs", "timestamp": BASE_MS + 1, "worker": "explicit"})
        response = raw.http.post(
            raw.server.url + "/v2.23/events.add_batch",
            data="\n".join(json.dumps(line) for line in lines).encode(),
            headers={
                "Authorization": "Bearer " + raw.token(),
                "Content-Type": "application/json-lines",
                "X-ClearML-Worker": "header-worker",
            },
            timeout=30,
        )
        assert response.status_code == 200
        events = raw.ok("events.get_task_log", {"task": task, "order": "asc"})["events"]
        assert [(e["msg"], e["worker"]) for e in events] == [("mine", "header-worker"), ("theirs", "explicit")]

    def test_events_add_single(self, raw, task):
        data = raw.ok("events.add", {"task": task, "type": "log", "msg": "single"})
        assert data["added"] == 1

    def test_published_task_rejects_events_unless_allow_locked(self, raw, task):
        raw.ok("tasks.completed", {"task": task})
        raw.ok("tasks.publish", {"task": task})
        data = raw.ok("events.add_batch", lines=log_lines(task, [BASE_MS]))
        assert (data["added"], data["errors"]) == (0, 1)
        data = raw.ok("events.add_batch", lines=[{**log_lines(task, [BASE_MS])[0], "allow_locked": True}])
        assert (data["added"], data["errors"]) == (1, 0)
        assert raw.ok("events.get_task_log", {"task": task})["total"] == 1
        data = raw.ok("events.add", {**log_lines(task, [BASE_MS + 1])[0], "allow_locked": True})
        assert data["added"] == 1

    def test_events_update_last_update(self, raw, task, clock):
        before = raw.ok("tasks.get_by_id", {"task": task})["task"]["last_update"]
        clock.advance(10)
        raw.ok("events.add_batch", lines=log_lines(task, [BASE_MS]))
        assert raw.ok("tasks.get_by_id", {"task": task})["task"]["last_update"] > before


class TestTaskLog:
    def walk(self, raw, task: str, batch: int, earlier: bool) -> list[list[str]]:
        """Page through the whole log the way the UI and SDK do: from_timestamp = the far edge of the last page."""
        pages: list[list[str]] = []
        since = None
        for _ in range(50):
            request = {"task": task, "batch_size": batch, "navigate_earlier": earlier, "order": "asc"}
            if since is not None:
                request["from_timestamp"] = since
            data = raw.ok("events.get_task_log", request)
            if not data["events"]:
                return pages
            assert data["returned"] == len(data["events"])
            stamps = [e["timestamp"] for e in data["events"]]
            assert stamps == sorted(stamps), "asc within a page"
            pages.append([e["msg"] for e in data["events"]])
            since = stamps[0] if earlier else stamps[-1]
        raise AssertionError("paging did not end")

    def test_total_and_default_newest_first(self, raw, task):
        raw.ok("events.add_batch", lines=log_lines(task, [BASE_MS + i for i in range(10)]))
        data = raw.ok("events.get_task_log", {"task": task, "batch_size": 3})
        assert data["total"] == 10
        assert data["returned"] == 3
        assert [e["msg"] for e in data["events"]] == ["line 9", "line 8", "line 7"]

    def test_order_asc_within_a_page(self, raw, task):
        raw.ok("events.add_batch", lines=log_lines(task, [BASE_MS + i for i in range(10)]))
        data = raw.ok("events.get_task_log", {"task": task, "batch_size": 3, "order": "asc"})
        assert [e["msg"] for e in data["events"]] == ["line 7", "line 8", "line 9"]

    @pytest.mark.parametrize(
        "stamps",
        [
            [BASE_MS + i for i in range(23)],
            # equal timestamps straddling page boundaries (the SDK bumps them, other writers may not)
            [BASE_MS + i // 4 for i in range(23)],
        ],
        ids=["distinct", "repeated"],
    )
    def test_navigate_earlier_walks_back_without_loss_or_duplicates(self, raw, task, stamps):
        raw.ok("events.add_batch", lines=log_lines(task, stamps))
        pages = self.walk(raw, task, batch=5, earlier=True)
        seen = [msg for page in reversed(pages) for msg in page]
        assert seen == [f"line {i}" for i in range(23)]

    @pytest.mark.parametrize(
        "stamps",
        [[BASE_MS + i for i in range(23)], [BASE_MS + i // 4 for i in range(23)]],
        ids=["distinct", "repeated"],
    )
    def test_navigate_later_walks_forward(self, raw, task, stamps):
        raw.ok("events.add_batch", lines=log_lines(task, stamps))
        pages = self.walk(raw, task, batch=5, earlier=False)
        seen = [msg for page in pages for msg in page]
        assert seen == [f"line {i}" for i in range(23)]

    def test_only_log_events(self, raw, task):
        raw.ok("events.add_batch", lines=log_lines(task, [BASE_MS]))
        raw.ok("events.add_batch", lines=[{"task": task, "type": "training_stats_scalar", "metric": "m", "value": 1}])
        data = raw.ok("events.get_task_log", {"task": task})
        assert data["total"] == 1
        assert [e["type"] for e in data["events"]] == ["log"]

    def test_unknown_task(self, raw):
        assert raw.call("events.get_task_log", {"task": "0" * 32}).subcode == 101


class TestTaskEvents:
    @pytest.mark.parametrize("order", ["asc", "desc"])
    def test_scroll_pages_through_everything(self, raw, task, order):
        raw.ok("events.add_batch", lines=log_lines(task, [BASE_MS + i // 3 for i in range(17)]))
        scalars = [
            {"task": task, "type": "training_stats_scalar", "metric": "loss", "variant": "total", "value": i, "iter": i}
            for i in range(4)
        ]
        raw.ok("events.add_batch", lines=scalars)
        seen: list[dict] = []
        scroll = None
        for _ in range(20):
            request = {"task": task, "batch_size": 4, "order": order}
            if scroll:
                request["scroll_id"] = scroll
            data = raw.ok("events.get_task_events", request)
            assert data["total"] == 21
            if not data["events"]:
                break
            assert data["returned"] == len(data["events"])
            seen += data["events"]
            scroll = data["scroll_id"]
        assert len(seen) == 21
        assert len({(e["type"], e.get("msg"), e.get("iter")) for e in seen}) == 21
        stamps = [e["timestamp"] for e in seen]
        assert stamps == sorted(stamps, reverse=order == "desc")

    def test_event_type_filter(self, raw, task):
        raw.ok("events.add_batch", lines=log_lines(task, [BASE_MS, BASE_MS + 1]))
        raw.ok("events.add_batch", lines=[{"task": task, "type": "training_stats_scalar", "metric": "m", "value": 1}])
        data = raw.ok("events.get_task_events", {"task": task, "event_type": "training_stats_scalar"})
        assert data["total"] == 1
        assert [e["type"] for e in data["events"]] == ["training_stats_scalar"]

    def test_bad_scroll_id(self, raw, task):
        assert raw.call("events.get_task_events", {"task": task, "scroll_id": "garbage"}).subcode == 12


class TestScalars:
    @pytest.fixture
    def reported(self, raw, task):
        lines = [
            {"task": task, "type": "training_stats_scalar", "metric": "loss", "variant": "train", "value": v, "iter": i}
            for i, v in enumerate([0.9, 0.5, 0.7])
        ]
        lines.append(
            {"task": task, "type": "training_stats_scalar", "metric": "acc", "variant": "val", "value": 0.8, "iter": 2}
        )
        assert raw.ok("events.add_batch", lines=lines)["added"] == 4
        return task

    def test_last_iteration_and_last_metrics(self, raw, reported):
        doc = raw.ok("tasks.get_by_id", {"task": reported})["task"]
        assert doc["last_iteration"] == 2
        loss = doc["last_metrics"][md5("loss")][md5("train")]
        assert loss["metric"] == "loss"
        assert loss["variant"] == "train"
        assert loss["value"] == 0.7
        assert loss["min_value"] == 0.5
        assert loss["max_value"] == 0.9
        assert doc["last_metrics"][md5("acc")][md5("val")]["value"] == 0.8

    def test_iter_histogram(self, raw, reported):
        data = raw.ok("events.scalar_metrics_iter_histogram", {"task": reported})
        assert data["loss"]["train"]["x"] == [0, 1, 2]
        assert data["loss"]["train"]["y"] == [0.9, 0.5, 0.7]
        assert data["acc"]["val"]["x"] == [2]
        assert data["acc"]["val"]["y"] == [0.8]

    def test_metrics_and_variants(self, raw, reported):
        metrics = raw.ok("events.get_scalar_metrics_and_variants", {"task": reported})["metrics"]
        assert set(metrics) == {"loss", "acc"}
        assert set(metrics["loss"]) == {"train"}

    def test_iter_out_of_range_is_counted(self, raw, task):
        line = {"task": task, "type": "training_stats_scalar", "metric": "m", "value": 1, "iter": 2**63}
        data = raw.ok("events.add_batch", lines=[line])
        assert (data["added"], data["errors"]) == (0, 1)


class TestLogEventIds:
    """Our extension: a log event with an `id` is stored once per task, so a re-sent batch adds nothing."""

    def with_ids(self, task: str, count: int, prefix: str = "run") -> list[dict]:
        events = log_lines(task, [BASE_MS + i for i in range(count)])
        return [{**e, "id": f"{prefix}-{i}"} for i, e in enumerate(events)]

    def test_the_token_advertises_the_claim(self, raw):
        import jwt

        claims = jwt.decode(raw.token(), options={"verify_signature": False})
        assert claims["notebook_agent_event_ids"] == 1

    def test_a_resent_batch_adds_nothing(self, raw, task):
        batch = self.with_ids(task, 3)
        assert raw.ok("events.add_batch", lines=batch)["added"] == 3
        again = raw.ok("events.add_batch", lines=[*batch, *self.with_ids(task, 1, prefix="other")])
        assert (again["added"], again["duplicates"], again["errors"]) == (1, 3, 0)
        log = raw.ok("events.get_task_log", {"task": task, "navigate_earlier": False})
        assert sorted(e["msg"] for e in log["events"]) == ["line 0", "line 0", "line 1", "line 2"]

    def test_deleting_a_tasks_events_forgets_its_ids(self, raw, task):
        other = raw.new_task("keeps its ids")
        raw.ok("events.add_batch", lines=[*self.with_ids(task, 2), *self.with_ids(other, 2)])
        raw.ok("events.delete_for_task", {"task": task})
        assert raw.ok("events.add_batch", lines=self.with_ids(task, 2))["added"] == 2
        assert raw.ok("events.add_batch", lines=self.with_ids(other, 2))["added"] == 0

    def test_ids_are_per_task_and_events_without_ids_are_all_stored(self, raw, task):
        other = raw.new_task("another")
        raw.ok("events.add_batch", lines=self.with_ids(task, 2))
        assert raw.ok("events.add_batch", lines=self.with_ids(other, 2))["added"] == 2
        plain = log_lines(task, [BASE_MS, BASE_MS])
        assert raw.ok("events.add_batch", lines=plain)["added"] == 2

    def test_switched_off_it_stores_every_event_like_a_real_server(self, raw, task, monkeypatch):
        import jwt

        from notebook_agent.server.auth import EVENT_IDS_ENV

        monkeypatch.setenv(EVENT_IDS_ENV, "0")
        raw._token = None  # a fresh login: the claim is decided when the token is issued
        assert "notebook_agent_event_ids" not in jwt.decode(raw.token(), options={"verify_signature": False})
        batch = self.with_ids(task, 2)
        raw.ok("events.add_batch", lines=batch)
        assert raw.ok("events.add_batch", lines=batch)["added"] == 2
        assert raw.ok("events.get_task_log", {"task": task})["total"] == 4
