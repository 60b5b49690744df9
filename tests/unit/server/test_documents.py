"""Query helpers over JSON documents (pure functions): paths, projections, filters, ordering and paging."""

from __future__ import annotations

import pytest

from notebook_agent.server import documents, errors
from notebook_agent.server.documents import get_path, matches, order_and_page, project, set_path

DOC = {
    "id": "t1",
    "name": "train resnet",
    "status": "in_progress",
    "tags": ["gpu", "nightly"],
    "system_tags": [],
    "created": "2026-02-03T10:00:00.000+00:00",
    "last_iteration": 12,
    "script": {"repository": "https://example.com/r.git", "requirements": {"pip": "numpy"}},
    "execution": {"queue": "q1"},
    "parent": None,
}


class TestPaths:
    def test_get_path(self):
        assert get_path(DOC, "name") == "train resnet"
        assert get_path(DOC, "script.requirements.pip") == "numpy"
        assert get_path(DOC, "script.missing") is None
        assert get_path(DOC, "script.missing", "x") == "x"
        assert get_path(DOC, "name.deeper") is None  # through a non-dict
        assert get_path(DOC, "parent") is None

    def test_set_path_creates_parents(self):
        doc: dict = {}
        set_path(doc, "a.b.c", 1)
        set_path(doc, "a.b.d", 2)
        set_path(doc, "top", 3)
        assert doc == {"a": {"b": {"c": 1, "d": 2}}, "top": 3}

    def test_set_path_replaces_a_non_dict_parent(self):
        doc = {"a": "scalar"}
        set_path(doc, "a.b", 1)
        assert doc == {"a": {"b": 1}}


class TestProject:
    def test_no_only_fields_is_the_whole_document(self):
        assert project(DOC, None) is DOC
        assert project(DOC, []) is DOC

    def test_dotted_paths_and_id(self):
        out = project(DOC, ["status", "script.requirements.pip", "execution.queue"])
        assert out == {
            "id": "t1",
            "status": "in_progress",
            "script": {"requirements": {"pip": "numpy"}},
            "execution": {"queue": "q1"},
        }

    def test_missing_fields_are_left_out_but_null_is_kept(self):
        assert project(DOC, ["nope", "script.nope", "parent"]) == {"id": "t1", "parent": None}

    def test_does_not_change_the_source(self):
        project(DOC, ["script.repository"])
        assert DOC["script"]["requirements"] == {"pip": "numpy"}


class TestMatches:
    def test_scalar_equality(self):
        assert matches(DOC, {"status": "in_progress"})
        assert not matches(DOC, {"status": "created"})
        assert matches(DOC, {"execution.queue": "q1"})

    def test_list_is_any_of(self):
        assert matches(DOC, {"status": ["created", "in_progress"]})
        assert not matches(DOC, {"status": ["created", "queued"]})
        assert matches(DOC, {"tags": ["gpu"]})
        assert matches(DOC, {"tags": ["cpu", "nightly"]})
        assert not matches(DOC, {"tags": ["cpu"]})

    def test_minus_excludes(self):
        assert not matches(DOC, {"tags": ["-gpu"]})
        assert matches(DOC, {"tags": ["-cpu"]})
        assert not matches(DOC, {"status": ["-in_progress"]})
        assert matches(DOC, {"status": ["-created", "-queued"]})
        assert not matches(DOC, {"tags": ["nightly", "-gpu"]})

    def test_ranges(self):
        assert matches(DOC, {"created": [">=2026-01-01"]})
        assert not matches(DOC, {"created": ["<2026-01-01"]})
        assert matches(DOC, {"created": [">=2026-02-01", "<2026-03-01"]})
        assert not matches(DOC, {"created": [">=2026-02-04", "<2026-03-01"]})
        assert matches(DOC, {"last_iteration": [">10"]})
        assert not matches(DOC, {"last_iteration": [">=13"]})
        assert matches(DOC, {"last_iteration": ["<=12"]})

    def test_range_on_missing_value_does_not_match(self):
        assert not matches(DOC, {"started": [">=2026-01-01"]})

    def test_none_in_list_matches_empty(self):
        assert matches(DOC, {"system_tags": [None]})
        assert matches(DOC, {"parent": [None]})
        assert not matches(DOC, {"tags": [None]})

    def test_regex_names(self):
        assert matches(DOC, {"name": "^train resnet$"})
        assert matches(DOC, {"name": "resnet"})
        assert not matches(DOC, {"name": "^resnet"})
        assert matches({"name": "a.b"}, {"name": "^a\\.b$"})
        assert not matches({"name": "axb"}, {"name": "^a\\.b$"})

    def test_regex_only_on_regex_fields(self):
        assert not matches(DOC, {"status": "in_.*"})
        assert matches(DOC, {"status": "in_.*"}, regex_fields=("status",))

    def test_invalid_regex_is_validation_error(self):
        with pytest.raises(errors.ServerError) as info:
            matches(DOC, {"name": "(unclosed"})
        assert (info.value.code, info.value.subcode) == (400, 12)

    def test_control_fields_and_none_are_ignored(self):
        control = {"only_fields": ["x"], "order_by": ["-created"], "page": 0, "page_size": 1, "id": ["other"]}
        assert matches(DOC, {**control, "search_hidden": True, "status": None})

    def test_all_filters_must_match(self):
        assert matches(DOC, {"status": ["in_progress"], "tags": ["gpu"]})
        assert not matches(DOC, {"status": ["in_progress"], "tags": ["cpu"]})


class TestOrderAndPage:
    DOCS = [
        {"id": "a", "name": "charlie", "created": "2026-01-03", "n": 2},
        {"id": "b", "name": "alpha", "created": "2026-01-01", "n": 10},
        {"id": "c", "name": "bravo", "created": "2026-01-02", "n": None},
    ]

    def ids(self, data: dict) -> list[str]:
        return [d["id"] for d in order_and_page([dict(d) for d in self.DOCS], data)]

    def test_no_order_keeps_the_input(self):
        assert self.ids({}) == ["a", "b", "c"]

    def test_ascending_and_descending(self):
        assert self.ids({"order_by": ["name"]}) == ["b", "c", "a"]
        assert self.ids({"order_by": ["-created"]}) == ["a", "c", "b"]
        assert self.ids({"order_by": ["+created"]}) == ["b", "c", "a"]

    def test_numbers_sort_numerically_and_none_last(self):
        assert self.ids({"order_by": ["n"]}) == ["a", "b", "c"]

    def test_several_keys(self):
        docs = [{"id": "1", "s": "x", "t": 2}, {"id": "2", "s": "y", "t": 1}, {"id": "3", "s": "x", "t": 1}]
        out = order_and_page(docs, {"order_by": ["s", "-t"]})
        assert [d["id"] for d in out] == ["1", "3", "2"]

    def test_pages(self):
        order = {"order_by": ["name"]}
        assert self.ids({**order, "page": 0, "page_size": 2}) == ["b", "c"]
        assert self.ids({**order, "page": 1, "page_size": 2}) == ["a"]
        assert self.ids({**order, "page": 2, "page_size": 2}) == []
        assert self.ids({**order, "page_size": 1}) == ["b"]
        assert self.ids({**order, "size": 2}) == ["b", "c"]

    @pytest.mark.parametrize("paging", [{"page_size": "ten"}, {"page": "first", "page_size": 2}])
    def test_bad_paging_is_validation_error(self, paging):
        with pytest.raises(errors.ServerError) as info:
            order_and_page([{"id": "a"}], paging)
        assert (info.value.code, info.value.subcode) == (400, 12)

    def test_page_size_is_capped(self):
        docs = [{"id": str(i)} for i in range(documents.MAX_PAGE_SIZE + 10)]
        assert len(order_and_page(docs, {"page_size": 10_000})) == documents.MAX_PAGE_SIZE


class TestHelpers:
    def test_is_hidden(self):
        assert documents.is_hidden({"system_tags": ["hidden"]})
        assert not documents.is_hidden({"system_tags": None})
        assert not documents.is_hidden({})

    def test_search_text(self):
        assert documents.search_text(DOC, "RESNET", ["name"])
        assert not documents.search_text(DOC, "resnet", ["status"])
        assert documents.search_text(DOC, "", ["name"])

    def test_public_drops_hidden_fields(self):
        assert documents.public({"id": "x", "enqueue_status": "created"}, ["enqueue_status"]) == {"id": "x"}
