"""The branded 400, 403, 404 and 500 pages, with DEBUG off (production) and on (`make run`):
never Django's technical pages or a traceback, always a way back; the traceback of a 500
goes to the server log only."""
from __future__ import annotations

import logging
import types

import pytest
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404
from django.test import Client
from django.urls import path

pytestmark = pytest.mark.django_db

SECRET = "detail-that-must-stay-in-the-log-4711"
TECHNICAL = ("Traceback", "Using the URLconf", "technical", "Django tried these URL patterns", "DEBUG = True",
             "Request Method:", SECRET, "Exception Value")


def _raises(exception: Exception):  # noqa: ANN202
    def view(request):  # noqa: ANN001, ANN202
        raise exception
    return view


@pytest.fixture
def failing_urls(settings, monkeypatch):
    """The site's URLs plus views that fail in each way."""
    import config.urls

    module = types.ModuleType("error_page_test_urls")
    module.urlpatterns = [
        path("boom/", _raises(RuntimeError(SECRET))),
        path("bad/", _raises(BadRequest(SECRET))),
        path("suspicious/", _raises(SuspiciousOperation(SECRET))),
        path("forbidden/", _raises(PermissionDenied(SECRET))),
        path("gone/", _raises(Http404(SECRET))),
        *config.urls.urlpatterns,
    ]
    monkeypatch.setitem(__import__("sys").modules, module.__name__, module)
    settings.ROOT_URLCONF = module.__name__


def _page(response) -> str:  # noqa: ANN001
    text = response.content.decode()
    for word in TECHNICAL:
        assert word not in text, f"{word!r} shows on the {response.status_code} page"
    assert 'href="/"' in text, "no way back to the home page"
    return text


@pytest.fixture(params=[False, True], ids=["production", "debug"])
def debug(request, settings) -> bool:
    settings.DEBUG = request.param
    return request.param


def test_a_path_no_url_matches_gets_the_branded_404(debug, client) -> None:
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    text = _page(response)
    assert "This page does not exist" in text and 'class="skip-link"' in text  # the site's frame


def test_a_missing_slash_still_redirects_rather_than_404(debug, client) -> None:
    response = client.get("/datasets")
    assert response.status_code == 301 and response["Location"] == "/datasets/"


def test_a_view_that_raises_http404_or_not_found_gets_the_branded_404(debug, failing_urls, client, bob) -> None:
    assert "This page does not exist" in _page(client.get("/gone/"))
    client.force_login(bob)
    response = client.get("/orders/987654/")  # NotFoundError: not there, or not bob's
    assert response.status_code == 404
    assert "This page does not exist" in _page(response)
    assert "Log out bob" in response.content.decode()  # the signed-in frame


def test_a_forbidden_action_and_a_refused_form_get_the_branded_403(debug, failing_urls) -> None:
    response = Client().get("/forbidden/")
    assert response.status_code == 403
    assert "You are not allowed to do this" in _page(response)
    refused = Client(enforce_csrf_checks=True).post("/logout/")  # no CSRF token
    assert refused.status_code == 403
    assert "You are not allowed to do this" in _page(refused)


@pytest.mark.parametrize("url", ["/bad/", "/suspicious/"])
def test_a_bad_request_gets_the_branded_400(debug, failing_urls, url) -> None:
    response = Client(raise_request_exception=False).get(url)
    assert response.status_code == 400
    assert "This request could not be understood" in _page(response)


def test_a_server_error_gets_the_self_contained_500_and_the_traceback_goes_to_the_log(
        debug, failing_urls, caplog, django_assert_num_queries) -> None:
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"), django_assert_num_queries(0):
        response = client.get("/boom/")  # no database query: the database may be what failed
    assert response.status_code == 500
    text = _page(response)
    assert "Something went wrong on our side" in text
    assert "<link" not in text and "{%" not in text  # no static file, no template tag left over
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[1] is not None]
    assert logged and str(logged[0].exc_info[1]) == SECRET  # the server log keeps the traceback


def test_a_client_that_takes_no_html_gets_no_traceback_either(debug, failing_urls) -> None:
    response = Client(raise_request_exception=False).get("/boom/", HTTP_ACCEPT="application/json")
    assert response.status_code == 500
    assert SECRET not in response.content.decode() and "Traceback" not in response.content.decode()
