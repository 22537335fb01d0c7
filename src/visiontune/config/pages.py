"""The one writer of visiontune's plotly pages (the heatmap, the tuner's history and
importances, the LR range test).

Every page inlines plotly.js (about 5 MB): it draws with no network, and still draws when
copied alone (attached to an issue, uploaded as one CI artifact), where a page that shares
a plotly.min.js beside it breaks as soon as it moves without it. The pages are git-ignored
workspace files, in neither git nor DVC's cache, so the size costs local disk only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go


def write_plotly_page(figure: go.Figure, out: Path, **options: Any) -> None:
    """Write ``figure`` to ``out`` as a self-contained HTML page, its folder made;
    ``options`` go to plotly's ``write_html`` (``div_id`` for a reproducible file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(out, include_plotlyjs=True, **options)
