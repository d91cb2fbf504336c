"""clients/errors.py and hub/errors.py stay in step: every problem the hub can answer
with comes back to the client as the class of the same name, status and slug.

Only tests may import both packages; the SDK itself knows the hub by its wire protocol.
"""

from __future__ import annotations

import inspect
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients import errors as client_errors
from hub import errors as hub_errors

#: Hub classes whose client class has another name, and why.
EQUIVALENTS = {
    "HubError": "InternalError",  # the hub's base class is its generic 500
}

HUB_CLASSES = sorted(
    (
        cls
        for _, cls in inspect.getmembers(hub_errors, inspect.isclass)
        if issubclass(cls, hub_errors.HubError)
    ),
    key=lambda cls: cls.slug,
)


def test_all_problems_lists_every_hub_error_class() -> None:
    assert set(hub_errors.ALL_PROBLEMS) == set(HUB_CLASSES)


@pytest.mark.parametrize("hub_class", HUB_CLASSES, ids=lambda cls: cls.slug)
def test_hub_problem_type_maps_to_the_client_class_of_the_same_name(
    hub_class: type[hub_errors.HubError],
) -> None:
    client_class = client_errors.class_for_type(hub_class.problem_type())
    assert client_class is not None, f"clients/errors.py lacks slug {hub_class.slug!r}"
    assert client_class.__name__ == EQUIVALENTS.get(hub_class.__name__, hub_class.__name__)
    assert client_class.slug == hub_class.slug
    assert client_class.default_status == hub_class.status
    assert hub_class.problem_type().startswith(client_errors.PROBLEM_PREFIX)


def test_the_client_knows_no_slug_the_hub_does_not_send() -> None:
    assert set(client_errors.BY_SLUG) == {cls.slug for cls in HUB_CLASSES}


@pytest.mark.parametrize("hub_class", HUB_CLASSES, ids=lambda cls: cls.slug)
def test_a_rendered_hub_error_comes_back_with_its_fields(
    hub_class: type[hub_errors.HubError],
) -> None:
    error = hub_class("pp-duisburg: details for the caller", retry_after=5)
    members = {
        "type": hub_class.problem_type(),
        "title": hub_class.title,
        "status": hub_class.status,
        "detail": error.detail,
        "instance": "urn:uuid:00000000-0000-0000-0000-000000000000",  # unknown members
    }
    body = json.dumps(members).encode("utf-8")
    parsed = client_errors.error_from_problem(
        hub_class.status, body, "application/problem+json", retry_after="5"
    )
    assert type(parsed).__name__ == EQUIVALENTS.get(hub_class.__name__, hub_class.__name__)
    assert (parsed.status, parsed.detail, parsed.retry_after) == (hub_class.status, error.detail, 5)
    assert parsed.problem_type == hub_class.problem_type()
    assert str(parsed).startswith("pp-duisburg: details for the caller. ")


def test_a_type_answered_with_another_status_falls_back_by_status() -> None:
    body = json.dumps({"type": hub_errors.NotMember.problem_type(), "detail": "x"}).encode()
    parsed = client_errors.error_from_problem(404, body, "application/problem+json")
    assert type(parsed) is client_errors.NotFound


def test_detail_is_cleaned_and_bounded() -> None:
    body = json.dumps({"type": "urn:siko:problem:conflict", "detail": "a\x1b[2Jb" * 1000})
    parsed = client_errors.error_from_problem(409, body.encode(), "application/problem+json")
    assert parsed.detail.isprintable()
    assert len(parsed.detail) == client_errors.MAX_DETAIL_CHARS


@pytest.mark.parametrize(
    ("header", "member", "expected"),
    [
        (None, 3, 3),
        ("12", 3, 12),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None, None),
        ("-1", -1, None),
        ("99999999999", None, client_errors.MAX_RETRY_AFTER),
        ("٣", None, None),
    ],
)
def test_retry_after_from_header_or_member(
    header: str | None, member: object, expected: int | None
) -> None:
    body = json.dumps({"type": "urn:siko:problem:unavailable", "retry_after": member}).encode()
    parsed = client_errors.error_from_problem(
        503, body, "application/problem+json", retry_after=header
    )
    assert parsed.retry_after == expected


@given(
    status=st.integers(min_value=0, max_value=1000),
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
    ),
    content_type=st.sampled_from(["application/problem+json", "text/html", "", "x;y"]),
)
def test_error_from_problem_never_raises(status: int, body: bytes, content_type: str) -> None:
    parsed = client_errors.error_from_problem(status, body, content_type)
    assert isinstance(parsed, client_errors.ClientError)
    assert parsed.detail and str(parsed)
