"""The raw records that ``report`` and ``verify`` read, each with the name of the file it came from.

Reading goes through :func:`benchmarks.record.read` (the one parser of raw files), so an unreadable
file is a :class:`~autorec.errors.DataError` naming the file and the problem.  Two checks run on
what was read, before any number is computed:

- a record that says ``ok`` must carry its metrics (otherwise it is refused, naming the file);
- **split integrity**: every record carries the SHA-256 of the split it trained on; the records of
  one split (dataset, spec, seed, validation share) must agree.  A file that disagrees with the
  majority of its split is refused with a :class:`SplitMismatchError` naming it (with no majority,
  all of the split's files are named).

:func:`recompute_splits` (``report --recompute-splits``) goes further: it materialises each split
again where its data is at hand and refuses every file whose hash differs from it.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from autorec.errors import AutoRecBenchError, DataError
from benchmarks import record
from benchmarks.harness import data, store
from benchmarks.record import RunRecord


class SplitMismatchError(DataError):
    """A raw file's split SHA-256 does not match the other files of its split."""


@dataclass(frozen=True)
class RawRun:
    """One raw record and the name of its file (inside the raw folder), for messages and tables."""

    file: str
    rec: RunRecord

    @property
    def contended(self) -> bool:
        """Whether its timings were measured on a machine busier than the run itself."""
        return self.rec.conditions is not None and self.rec.conditions.contended


@dataclass(frozen=True)
class RawSet:
    ok: list[RawRun]
    failed: list[RawRun]
    duplicates: list[str]  # "file repeats run ... of file", ignored

    @property
    def all(self) -> list[RawRun]:
        return self.ok + self.failed


def load_raw(raw_dir: str | os.PathLike) -> RawSet:
    """Every raw record of ``raw_dir`` (sorted by file name).  A second file of the same run is
    ignored and listed in ``duplicates``.  A folder that does not exist is an error (a mistyped
    ``--raw`` would otherwise regenerate an empty report, or no verdict, over the real ones)."""
    if not os.path.isdir(raw_dir):
        raise DataError(f"raw folder {raw_dir} does not exist (--raw names the folder of raw result files)")
    ok: list[RawRun] = []
    failed: list[RawRun] = []
    duplicates: list[str] = []
    seen: dict[str, str] = {}
    for path in store.raw_files(raw_dir):
        rec = record.read(path)
        if rec.ok and rec.metrics is None:
            raise DataError(f"raw result {path}: status 'ok' but it has no metrics")
        if rec.run_id in seen:
            duplicates.append(f"{path.name} repeats run {rec.run_id[:16]} of {seen[rec.run_id]}")
            continue
        seen[rec.run_id] = path.name
        (ok if rec.ok else failed).append(RawRun(path.name, rec))
    _check_one_version(ok)
    return RawSet(ok, failed, duplicates)


def _check_one_version(ok: list[RawRun]) -> None:
    """Refuse two successful records of one run that differ only in the model's version: a version
    bump gives its runs new ids, and the old files stay beside the new ones, where tables and the
    verdict would average (or pair) the old numbers with the new."""
    by_run: dict[str, list[RawRun]] = defaultdict(list)
    for r in ok:
        by_run[r.rec.identity.versionless_id].append(r)
    clashes = [rs for rs in by_run.values() if len(rs) > 1]
    if clashes:
        lines = [", ".join(f"{r.file} (version {r.rec.identity.model_version})" for r in rs) for rs in clashes[:10]]
        raise DataError(
            f"{len(clashes)} run(s) have successful records of several versions of their model; delete the "
            "outdated files (or rerun them) so that each run counts once:\n  " + "\n  ".join(lines)
        )


def check_splits(runs: Iterable[RawRun]) -> None:
    """Refuse files whose split SHA-256 disagrees with the other files of the same split."""
    groups: dict[tuple, list[RawRun]] = defaultdict(list)
    for r in runs:
        s = r.rec.split
        if s.sha256:
            groups[(r.rec.dataset, s.spec, s.seed, s.valid_ratio)].append(r)
    bad: list[str] = []
    for (dataset, spec, seed, _), members in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        counts = Counter(r.rec.split.sha256 for r in members)
        if len(counts) < 2:
            continue
        ranked = counts.most_common()
        where = f"split {spec} (seed {seed}) of {dataset}"
        if ranked[0][1] == ranked[1][1]:
            names = ", ".join(sorted(r.file for r in members))
            bad.append(f"{names}: {where} has {len(counts)} different split SHA-256 values and no majority")
            continue
        majority = str(ranked[0][0])
        for r in sorted(members, key=lambda r: r.file):
            sha = str(r.rec.split.sha256)
            if sha != majority:
                bad.append(
                    f"{r.file}: split SHA-256 {sha[:16]}... does not match the {ranked[0][1]} other file(s) "
                    f"of {where} ({majority[:16]}...)"
                )
    if bad:
        raise SplitMismatchError("refusing raw files whose split does not match:\n  " + "\n  ".join(bad))


def recompute_splits(runs: Iterable[RawRun], *, data_dir: str | None = None) -> list[str]:
    """Recompute every split whose data is at hand (no download) and refuse the files that do not
    match it (:class:`SplitMismatchError`).  Returns notes on the splits that could not be recomputed."""
    from autorec.splits import SplitSpec

    groups: dict[tuple, list[RawRun]] = defaultdict(list)
    for r in runs:
        s = r.rec.split
        if s.sha256:
            groups[(r.rec.dataset, s.spec, s.seed, s.valid_ratio)].append(r)
    source = data.DataSource(data_dir=data_dir, offline=True)
    bad, notes = [], set()
    for (dataset, spec, seed, valid_ratio), members in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        ref = data.parse_dataset(dataset)
        where = data.availability(ref, source)
        if not where.local:
            notes.add(f"{dataset}: not recomputed ({where.where})")
            continue
        try:
            split = data.load_data(ref, SplitSpec.parse(spec), seed=seed, valid_ratio=valid_ratio, source=source)
        except AutoRecBenchError as exc:
            notes.add(f"{dataset} {spec} seed {seed}: not recomputed ({type(exc).__name__}: {exc})")
            continue
        sha = split.split.sha256
        bad += [
            f"{r.file}: split SHA-256 {str(r.rec.split.sha256)[:16]}... but split {spec} (seed {seed}) of {dataset} "
            f"hashes to {sha[:16]}..."
            for r in sorted(members, key=lambda r: r.file)
            if r.rec.split.sha256 != sha
        ]
    if bad:
        raise SplitMismatchError("refusing raw files whose split does not match:\n  " + "\n  ".join(bad))
    return sorted(notes)
