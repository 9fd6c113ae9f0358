"""The scale benchmark: AutoRec on synthetic data of the real datasets' shapes, sparse vs dense.

Each row of a spec (a shape x I-/U-AutoRec x path [x kernel]) is decided from its memory estimate
or measured in a fresh worker process by the harness's launcher, and leaves one
:class:`~benchmarks.record.RunRecord` with a ``scale`` section; ``autorec-bench report`` renders
``results/scale.md`` (+ csv and a log-log plot) from them.

==============  ===========================================================================
module          job
==============  ===========================================================================
``spec``        :func:`load_spec` -> :class:`Row` s (``benchmarks/specs/scale.toml``)
``records``     a row's plan and record, outcomes, reading a raw folder, contention
``runner``      :func:`run_spec`: decide or measure every row, resumably
``job``         the worker job (kind ``scale``): data, timed epochs, probes, profile
``probes``      the machine's dense matmul rate and memory bandwidth
``targets``     the targets of the scale work, checked against the rows
``render``      :func:`render_scale`: scale.md and scale.csv
``plot``        the log-log plot of seconds per epoch against ratings
``upgrade``     the one-time conversion of schema-1 scale records
``cli``         ``python -m benchmarks.scale``
==============  ===========================================================================

The FLOP, traffic and memory models are :mod:`autorec.scale`; the measurements are discussed in
``results/scale.md``.
"""

from benchmarks.scale.records import contended, load_records
from benchmarks.scale.render import render_scale
from benchmarks.scale.runner import run_spec
from benchmarks.scale.spec import DEFAULT_SPEC, Row, load_spec
from benchmarks.scale.targets import target_results

__all__ = [
    "DEFAULT_SPEC",
    "Row",
    "contended",
    "load_records",
    "load_spec",
    "render_scale",
    "run_spec",
    "target_results",
]
