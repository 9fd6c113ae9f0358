"""The scale spec (``benchmarks/specs/scale.toml``): which rows to measure, and how.

A spec is a ``[scale]`` table of settings, a ``[scale.model]`` table of AutoRec parameters shared by
every row, and ``[[scale.rows]]`` grids of ``shapes`` x ``based`` x ``paths`` (x ``kernels`` for the
sparse path), each optionally overriding settings (``epochs = 5``, ``tag = "b256"``) or model keys
(``model = { batch_size = 256 }``).  :func:`load_spec` expands the grids into :class:`Row` s and
checks everything (settings, shapes, paths, kernels, every row's model configuration) before
anything runs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from autorec import scale as sc
from autorec.errors import ConfigError
from autorec.models.autorec.config import AutoRecConfig
from autorec.splits import SplitSpec
from benchmarks.harness.data import parse_dataset

DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "specs" / "scale.toml"
#: sparse-path kernels: the native kernels, the same with the wide weights' Adam step fused into their
#: gradient passes (``extra.fused_step``, the same algorithm), torch's sparse operators
KERNELS = ("native", "native-fused", "torch")
#: the order of rows in every table: shapes by size, then item before user, sparse before dense
SHAPE_ORDER = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "netflix")
PATH_ORDER = ("sparse", "dense", "dense-full")
#: model parameters a row sets itself (from its grid and settings), never [scale.model]
ROW_SET = ("based", "path", "epochs", "seed", "threads", "cold_start", "devices")


@dataclass(frozen=True)
class Row:
    """One measurement: a dataset shape, I-/U-AutoRec, a path (``sparse``, ``dense`` or the
    estimate-only ``dense-full``), for the sparse path its kernels, and how it is measured."""

    shape: str
    n_users: int
    n_items: int
    n_ratings: int
    based: str
    path: str
    kernel: str = "native"  # "-" on the dense paths
    model: dict[str, Any] = field(default_factory=dict)  # the spec's [scale.model], with the grid's overrides
    epochs: int = 3
    seed: int = 0
    split: str = "random:test_ratio=0.1"
    valid_ratio: float = 0.05
    threads: int | None = None
    dense_epoch_budget_s: float = 120.0
    checkpoint: bool = False
    evaluate: bool = True
    profile_steps: int = 0
    probe_n: int = 2048
    tag: str = ""  # distinguishes variant rows (e.g. "b256")

    @property
    def row_id(self) -> str:
        kern = f"-{self.kernel}" if self.path == "sparse" else ""
        return f"{self.shape}-{self.based}-{self.path}{kern}" + (f"-{self.tag}" if self.tag else "")

    @property
    def sort_key(self) -> tuple:
        """Tables list rows by shape (by size), model (item first), path, kernel (native first)."""
        return (
            *shape_key(self.shape)[:1],
            self.n_ratings,
            self.shape,
            0 if self.based == "item" else 1,
            PATH_ORDER.index(self.path),
            KERNELS.index(self.sparse_kernel) if self.sparse_kernel else 0,
            self.row_id,
        )

    @property
    def model_label(self) -> str:
        return "I-AutoRec" if self.based == "item" else "U-AutoRec"

    @property
    def path_label(self) -> str:
        if self.path == "sparse" and self.kernel == "native-fused":
            return "sparse (native kernels, Adam fused into the gradient passes)"
        if self.path == "sparse":
            return f"sparse ({self.kernel} kernels)"
        if self.path == "dense-full":
            return "dense-full (seed: whole matrix densified)"
        return "dense (masked, per-batch densified)"

    @property
    def sparse_kernel(self) -> str | None:
        """The sparse path's kernels (``native`` / ``torch``); ``None`` on the dense paths."""
        return self.kernel if self.path == "sparse" else None

    @property
    def hidden(self) -> tuple[int, ...]:
        h = self.model.get("hidden", (500,))
        return tuple(int(x) for x in ([h] if isinstance(h, int) else h))

    @property
    def batch_size(self) -> int:
        return int(self.model.get("batch_size", 256))

    @property
    def model_name(self) -> str:
        return "i-autorec" if self.based == "item" else "u-autorec"

    @property
    def dataset(self) -> str:
        """The synthetic dataset the row's worker generates, as the harness names it:
        ``synthetic:ml-1m@1,0`` for a named shape (its rating scale included), else
        ``synthetic:NU,NI,NR,SEED``."""
        if sc.SHAPES.get(self.shape) == (self.n_users, self.n_items, self.n_ratings):
            return parse_dataset(f"synthetic:{self.shape}@1,{self.seed}").name
        return parse_dataset(f"synthetic:{self.n_users},{self.n_items},{self.n_ratings},{self.seed}").name

    def params(self) -> dict[str, Any]:
        """The row's model parameters: ``[scale.model]`` with the row's ``based``, training path,
        ``epochs`` and (sparse) ``extra.sparse_kernel``; the seed and threads are the run's."""
        extra = dict(self.model.get("extra", {}))
        if self.path == "sparse":
            extra["sparse_kernel"] = "native" if self.kernel == "native-fused" else self.kernel
            if self.kernel == "native-fused":
                extra["fused_step"] = True
        path = "sparse" if self.path == "sparse" else "dense"
        return {**self.model, "based": self.based, "path": path, "epochs": int(self.epochs), "extra": extra}

    def workload(self, nnz: int) -> sc.Workload:
        return sc.Workload.from_shape(
            self.n_users, self.n_items, nnz, based=self.based, hidden=self.hidden, batch_size=self.batch_size
        )

    def estimate(self, batch_nnz: int | None = None) -> sc.MemoryEstimate:
        """The row's peak memory (:func:`autorec.scale.estimate_memory`); ``batch_nnz``: the worst
        batch's ratings once the data exists."""
        test_ratio = float(SplitSpec.parse(self.split).args.get("test_ratio", 0.1))
        return sc.estimate_memory(
            self.n_users,
            self.n_items,
            self.n_ratings,
            based=self.based,
            hidden=self.hidden,
            batch_size=self.batch_size,
            path=self.path,
            optimizer=str(self.model.get("optimizer", "adam")),
            test_ratio=test_ratio,
            valid_ratio=self.valid_ratio,
            batch_nnz=batch_nnz,
            checkpoint=self.checkpoint,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        return cls(**d)


def shape_key(shape: str) -> tuple[int, str]:
    """Known shapes by size, then any other by name."""
    return (SHAPE_ORDER.index(shape) if shape in SHAPE_ORDER else len(SHAPE_ORDER), shape)


def _shape_counts(shape: Any) -> tuple[str, int, int, int]:
    if isinstance(shape, str):
        if shape not in sc.SHAPES:
            raise ConfigError(
                f"scale spec: unknown shape {shape!r}; known: {', '.join(sc.SHAPES)} "
                "(or a table {name=..., n_users=..., n_items=..., n_ratings=...})"
            )
        return (shape, *sc.SHAPES[shape])
    if isinstance(shape, dict):
        try:
            counts = (str(shape["name"]), int(shape["n_users"]), int(shape["n_items"]), int(shape["n_ratings"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"scale spec: a custom shape needs name, n_users, n_items, n_ratings; got {shape!r}"
            ) from None
        if counts[0] in sc.SHAPES and sc.SHAPES[counts[0]] != counts[1:]:
            raise ConfigError(f"scale spec: custom shape {counts[0]!r} has the name of a known shape; rename it")
        return counts
    raise ConfigError(f"scale spec: a shape is a name or a table, got {shape!r}")


#: settings of [scale] (and of each [[scale.rows]] grid) and their types
SETTINGS = {
    "epochs": int,
    "seed": int,
    "split": str,
    "valid_ratio": float,
    "threads": int,
    "dense_epoch_budget_s": float,
    "checkpoint_min_ratings": int,
    "evaluate": bool,
    "profile_steps": int,
    "probe_n": int,
    "max_memory": str,
    "tag": str,
}


def _read(p: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"scale spec {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scale spec {p} is not valid TOML: {exc}") from None
    top = doc.get("scale")
    if not isinstance(top, dict):
        raise ConfigError(f"scale spec {p}: needs a [scale] table")
    return top


def _grid_rows(p: Path, gi: int, grid: dict, settings: dict, model: dict) -> list[Row]:
    """The rows of one ``[[scale.rows]]`` grid."""
    g = dict(grid)
    shapes = g.pop("shapes", None)
    based = g.pop("based", ["item", "user"])
    paths = g.pop("paths", ["sparse", "dense"])
    kernels = g.pop("kernels", ["native"])
    gmodel = {**model, **g.pop("model", {})}
    over = {**settings, **g}
    for k in over:
        if k not in SETTINGS:
            raise ConfigError(f"scale spec {p}: rows[{gi}] has unknown key {k!r}")
    for k in gmodel:
        if k in ROW_SET:
            raise ConfigError(f"scale spec {p}: model parameter {k!r} is set per row (a grid key or a [scale] setting)")
    if not shapes:
        raise ConfigError(f"scale spec {p}: rows[{gi}] needs shapes = [...]")
    rows = []
    for shape in shapes:
        name, nu, ni, nr = _shape_counts(shape)
        for b in based:
            if b not in ("item", "user"):
                raise ConfigError(f"scale spec {p}: based {b!r} must be 'item' or 'user'")
            for path in paths:
                if path not in sc.PATHS:
                    raise ConfigError(f"scale spec {p}: path {path!r} is not one of {list(sc.PATHS)}")
                for kern in kernels if path == "sparse" else ["-"]:
                    if path == "sparse" and kern not in KERNELS:
                        raise ConfigError(f"scale spec {p}: kernel {kern!r} must be one of {list(KERNELS)}")
                    rows.append(
                        Row(
                            shape=name,
                            n_users=nu,
                            n_items=ni,
                            n_ratings=nr,
                            based=b,
                            path=path,
                            kernel=kern,
                            model=gmodel,
                            epochs=int(over.get("epochs", 3)),
                            seed=int(over.get("seed", 0)),
                            split=str(over.get("split", "random:test_ratio=0.1")),
                            valid_ratio=float(over.get("valid_ratio", 0.05)),
                            threads=over.get("threads"),
                            dense_epoch_budget_s=float(over.get("dense_epoch_budget_s", 120.0)),
                            checkpoint=nr >= int(over.get("checkpoint_min_ratings", 10**12)),
                            evaluate=bool(over.get("evaluate", True)),
                            profile_steps=int(over.get("profile_steps", 0)),
                            probe_n=int(over.get("probe_n", 2048)),
                            tag=str(over.get("tag", "")),
                        )
                    )
    return rows


def load_spec(path: str | os.PathLike) -> tuple[dict[str, Any], list[Row]]:
    """``(settings, rows)`` of a scale spec; :class:`ConfigError` naming the file and the problem
    (an unknown setting or shape, fewer than 3 timed epochs, a row twice, an invalid model
    configuration of any row)."""
    p = Path(path)
    top = _read(p)
    settings = {k: v for k, v in top.items() if k not in ("model", "rows")}
    for k in settings:
        if k not in SETTINGS:
            raise ConfigError(f"scale spec {p}: unknown setting {k!r}; known: {sorted(SETTINGS)}")
    grids = top.get("rows")
    if not grids:
        raise ConfigError(f"scale spec {p}: needs at least one [[scale.rows]] table")
    rows: list[Row] = []
    seen: set[str] = set()
    for gi, grid in enumerate(grids):
        for row in _grid_rows(p, gi, grid, settings, dict(top.get("model", {}))):
            if row.epochs < 3:
                raise ConfigError(f"scale spec {p}: epochs={row.epochs}: the median needs >= 3 timed epochs")
            if row.row_id in seen:
                raise ConfigError(f"scale spec {p}: row {row.row_id} appears twice")
            seen.add(row.row_id)
            rows.append(row)
    for row in rows:  # every model configuration, before anything runs
        AutoRecConfig.from_dict({**row.params(), "seed": row.seed}, model=f"scale spec {p}: row {row.row_id}")
    return settings, rows
