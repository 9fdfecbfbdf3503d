"""The sidebar's source and store boxes carry the session's choice as their default, so a box
the browser mounts late (its code still loading when the next run starts, e.g. a click within
a second of opening a link) shows and sends back that choice instead of a blank one.

Streamlit sends a value set through `st.session_state` to the browser once (`set_value`);
a box that mounts after that run reads the proto's `default`. With the old preset state and no
`value=`, that default was "", and the next page then failed with "cannot read the source ''"
(found by bench.pages: a navigation right after opening Compare in a new session)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP


def boxes(at: AppTest):
    by_label = {box.label: box for box in at.sidebar.text_input}
    return by_label["Source"], by_label["Store"]


def test_the_boxes_default_to_the_sessions_choice(
    store_path, tiny_bundle_path, monkeypatch
) -> None:
    spec = f"demo:{tiny_bundle_path}"
    monkeypatch.setenv("EXPLORER_SOURCE", spec)
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    at = AppTest.from_file(APP, default_timeout=120).run()
    source, store = boxes(at)
    assert (source.value, store.value) == (spec, str(store_path))
    assert (source.proto.default, store.proto.default) == (spec, str(store_path))
    assert not at.error, [e.value for e in at.error]

    # a choice typed in the box becomes the default of the next runs, page switches included
    at = source.set_value("warp:drive").run()
    source, _ = boxes(at)
    assert source.value == "warp:drive"
    assert source.proto.default == "warp:drive"
    assert any("cannot read the source 'warp:drive'" in e.value for e in at.error)
    at = at.switch_page("app_pages/methods.py").run()
    source, store = boxes(at)
    assert (source.proto.default, store.proto.default) == ("warp:drive", str(store_path))

    # and typing the deployment's source back recovers the session
    at = source.set_value(spec).run()
    assert not at.error, [e.value for e in at.error]
    assert boxes(at)[0].proto.default == spec
