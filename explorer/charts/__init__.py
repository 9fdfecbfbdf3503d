"""Charts: functions `DataFrame -> altair.Chart`, testable without streamlit.

One module per family of views (e.g. `specialists`, `feature`). Every chart has axis
titles, tooltips and a sensible default sort; charts that name a feature carry an `href`
to its page (see `explorer.ui.links.feature_url` for the URL scheme, mirrored here by
`feature_href` so charts need no streamlit import). `click_to_open` turns those hrefs into
click selections, which the app follows in the same tab (`explorer.ui.links.feature_chart`).
"""

from urllib.parse import parse_qs, urlencode, urlsplit

import altair as alt
from altair.utils.schemapi import disable_debug_mode

# Altair's debug mode validates every schema object against the Vega-Lite schema as it is
# created (each encoding, mark, scale...); the whole spec is still validated once when
# Streamlit converts the chart (`to_dict`). Off, a chart-heavy page run spends ~0.2-0.5 s
# less CPU (bench/README.md, "page runs").
disable_debug_mode()

CLICK_PARAM = "open_feature"


def feature_href(sae: str, feature: int) -> str:
    """Relative URL of a feature's page (same scheme as `explorer.ui.links.feature_url`)."""
    return f"feature?{urlencode({'sae': sae, 'feature': int(feature)})}"


def feature_of_href(href: str) -> tuple[str, int] | None:
    """(sae, feature) named by a `feature_href`, or None for any other URL."""
    parts = urlsplit(str(href))
    query = parse_qs(parts.query)
    if parts.path != "feature" or len(query.get("sae", [])) != 1:
        return None
    feature = query.get("feature", [""])
    if len(feature) != 1 or not feature[0].isdigit():
        return None
    return query["sae"][0], int(feature[0])


def click_to_open(chart: alt.TopLevelMixin) -> tuple[alt.TopLevelMixin, list[str]]:
    """A copy of `chart` where every mark encoding an `href` selects its point on click
    instead (a point selection on the `href` field, one per such mark, a pointer cursor), and
    the names of those selections; a chart without href comes back unchanged with no names."""
    chart = chart.copy(deep=True)
    names: list[str] = []

    def visit(spec) -> None:
        for attribute in ("layer", "hconcat", "vconcat", "concat"):
            parts = getattr(spec, attribute, alt.Undefined)
            for part in [] if parts is alt.Undefined else parts:
                visit(part)
        inner = getattr(spec, "spec", alt.Undefined)
        if inner is not alt.Undefined:
            visit(inner)
        encoding = getattr(spec, "encoding", alt.Undefined)
        if encoding is alt.Undefined or getattr(encoding, "href", alt.Undefined) is alt.Undefined:
            return
        encoding.href = alt.Undefined
        name = f"{CLICK_PARAM}_{len(names)}"
        names.append(name)
        spec.params = [
            *([] if spec.params is alt.Undefined else spec.params),
            alt.selection_point(name=name, fields=["href"], on="click", empty=False).param,
        ]
        mark = spec.mark if isinstance(spec.mark, alt.MarkDef) else alt.MarkDef(type=spec.mark)
        mark.cursor = "pointer"
        spec.mark = mark

    visit(chart)
    return chart, names
