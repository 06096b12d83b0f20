"""Property tests of the web API: no request, whatever its route, method, parameters or body, gets a 500.

Routes and their parameters are enumerated from the app, so a new route is fuzzed without touching
this file: first every odd value for each parameter in turn, then random combinations (Hypothesis,
derandomised so every run tries the same examples, and bounded so the tests take seconds).
"""
import io
import json
import math
import re
from urllib.parse import quote

import pytest
from fastapi.params import File
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipsearch import Library, model_spec
from clipsearch.webapp import create_app

from conftest import draw_shape

ODD_VALUES = [
    "", " ", "0", "-0", "-1", "1", "2", "+1", "1.5", "1e3", "1e309", "-1e309", "1e-400", "nan", "NaN", "-nan",
    "inf", "-inf", "Infinity", "0x10", "1_000", "0b1", "9" * 19, "9" * 40, str(2**63), str(-(2**63) - 1),
    "true", "null", "None", "[]", "{}", "small", "large", "SMALL", "..", "../../etc/passwd", "%2e%2e%2f",
    "..%2F..%2Fcatalog.db", "/etc/passwd", "C:\\Windows\\win.ini", "\x00", "a\x00b", "\u202e", "🙂" * 300,
    "ünïcödé", "a" * 10_000, "\r\nX-Injected: 1", "'; DROP TABLE images; --", "*", "%", "%ff%fe",
]
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?(e-?[0-9]+)?")
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
).map(lambda x: str(x) if not isinstance(x, float) or math.isfinite(x) else str(x).lower())
VALUES = st.one_of(st.sampled_from(ODD_VALUES), NUMBERS, st.text(max_size=40),
                   st.text(st.characters(codec="utf-8"), min_size=200, max_size=2000))


def upload_bodies():
    """Bytes that are, or start like, or are mutated from, a real image; and anything else."""
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(png, "PNG")
    real = png.getvalue()
    mutated = st.tuples(st.integers(0, len(real) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda at: real[: at[0]] + at[1] + real[at[0] + len(at[1]):])
    return st.one_of(st.just(real), st.binary(max_size=300), mutated,
                     st.integers(0, len(real)).map(lambda n: real[:n]))


@pytest.fixture
def client(tmp_path, tiny):
    for i, (colour, shape) in enumerate([("red", "star"), ("blue", "circle"), ("green", "square")]):
        draw_shape(tmp_path / "photos" / f"{colour}_{shape}.png", colour, shape, seed=i)
    with Library.open(tmp_path / "lib", create=True, encoder=tiny) as lib:
        lib.index([tmp_path / "photos"], model=model_spec("clipsearch-tiny"), workers=0)
        with TestClient(create_app(lib), base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as c:
            yield c


def fuzz(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def api_routes(app):
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert {"/api/search", "/api/search/image", "/api/images/{image_id:int}/thumb", "/api/info"} <= {
        r.path for r in routes}
    return routes


def json_fields(route):
    """The fields of a route's JSON body (a pydantic model), or none."""
    models = [p.field_info.annotation for p in route.dependant.body_params if not isinstance(p.field_info, File)]
    return [name for model in models for name in model.model_fields]


def call(client, route, path_values, params, files, body=None):
    """One request to `route`: its path parameters filled in (percent-encoded), `params` as the query."""
    path = route.path_format
    for name in (p.alias for p in route.dependant.path_params):
        path = path.replace("{" + name + "}", quote(path_values.get(name, "1"), safe=""))
    response = client.request(next(iter(route.methods)), path, params=params, files=files or None, json=body)
    assert response.status_code < 500, (route.methods, path, params, body, response.text[:500])


def test_every_odd_value_of_every_parameter_gets_no_500(client):
    """Each parameter of each route in turn takes every odd value, the others left to their defaults."""
    png = io.BytesIO()
    Image.new("RGB", (40, 30)).save(png, "PNG")
    for route in api_routes(client.app):
        if route.methods == {"HEAD"}:  # the twin of a GET route: same endpoint, same parameters
            continue
        dependant = route.dependant
        files = {p.alias: ("q.png", png.getvalue(), "image/png") for p in dependant.body_params
                 if isinstance(p.field_info, File)}
        for value in ODD_VALUES:
            for name in json_fields(route):  # as text and, where it is one, as a JSON number
                number = NUMBER.fullmatch(value) and math.isfinite(float(value))
                for odd in [value, *([json.loads(value)] if number else [])]:
                    call(client, route, {}, {}, {}, {**dict.fromkeys(json_fields(route), 1), name: odd})
            for name in [p.alias for p in dependant.path_params]:
                call(client, route, {name: value}, {}, files)
            for name in [p.alias for p in dependant.query_params]:
                call(client, route, {}, {name: value}, files)
            for name in files:  # the odd value as the file's name, then as its content
                call(client, route, {}, {}, {name: (value, png.getvalue(), "image/png")})
                call(client, route, {}, {}, {name: ("q.png", value.encode(), "image/png")})


def test_random_requests_to_every_route_get_no_500(client):
    """Random combinations: every route (HEAD twins included), any subset of parameters, any values."""
    for route in api_routes(client.app):
        dependant = route.dependant

        @fuzz(examples=12)
        @given(data=st.data())
        def request_anything(data):
            path_values = {p.alias: data.draw(st.one_of(st.integers(0, 5).map(str), VALUES), label=p.alias)
                           for p in dependant.path_params}
            params = {p.alias: data.draw(VALUES, label=p.alias) for p in dependant.query_params
                      if data.draw(st.booleans())}
            files = {p.alias: (data.draw(st.text(max_size=300), label="filename"), data.draw(upload_bodies()),
                               data.draw(st.sampled_from(["image/png", "image/jpeg", "text/plain", ""])))
                     for p in dependant.body_params if isinstance(p.field_info, File) and data.draw(st.booleans())}
            numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))
            body = {n: data.draw(st.one_of(VALUES, numbers), label=n) for n in json_fields(route)} or None
            call(client, route, path_values, params, files, body)

        request_anything()


@fuzz(examples=60)
@given(path=st.one_of(
    st.text(max_size=80).map(lambda t: "/api/" + quote(t, safe="/%")),
    st.tuples(st.sampled_from(["/api/images/", "/api/images/1/", "/api/", "/", "/api/search/"]),
              st.sampled_from(ODD_VALUES + ["%zz", "%C0%AE%C0%AE/", "//", "/./", ";x", "?q=%ff", "1/full/.."]))
    .map(lambda parts: parts[0] + quote(parts[1], safe="/%?;=")),
), method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]))
def test_no_odd_path_or_method_gets_a_500(client, path, method):
    response = client.request(method, path)
    assert response.status_code < 500, (method, path, response.text[:500])
