"""One metric across all ranks as a band: min and max as the band's edges, the median and the
mean inside it, one chart however many ranks (:class:`tui.rank_summary.RankBands` feeds it).

A :class:`~tui.widgets.chart.Chart` whose main line is the median and whose overlays are the
min, max and mean: the same decimation, autoscale and cached strips as every chart, four lines
instead of one per rank. The title says which line is which.
"""

from __future__ import annotations

import numpy as np

from tui.rank_summary import RankBands
from tui.widgets.chart import Chart

EDGE_STYLE = "blue"
MEAN_STYLE = "yellow"


class RankBand(Chart):
    """The band across ranks of the metric given to :meth:`show`."""

    DEFAULT_CSS = """
    RankBand { height: 1fr; min-height: 8; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("band", color="cyan", id=id)
        self.shown_metric: str | None = None
        self.ranks_in_band = 0

    def show(self, bands: RankBands, metric: str) -> None:
        """Draw ``metric``'s band (an empty chart until a step has closed)."""
        band = bands.band(metric)
        self.shown_metric = metric
        self.metric = f"{metric} across ranks: min/max ━ p50 ━ mean"
        if not band:
            self.set_overlays([])
            self.set_data(np.empty(0), np.empty(0))
            return
        self.set_overlays(
            [
                ("min", EDGE_STYLE, *band["min"]),
                ("max", EDGE_STYLE, *band["max"]),
                ("mean", MEAN_STYLE, *band["mean"]),
            ]
        )
        self.set_data(*band["p50"])
