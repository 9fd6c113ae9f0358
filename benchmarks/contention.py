"""Thread count and OpenMP wait policy under contention: is a run ever slower with more threads?

``python -m benchmarks.contention`` (``make bench-threads``) trains every training path (AutoRec:
torch dense, torch sparse, native kernels, MXNet dense; the MF baselines) on ML-100K's ``d2l-random``
split, each measurement in a fresh process, in four settings:

- ``1 thread``;
- ``N threads``: every core, OpenMP's own wait policy (libgomp's workers spin a while before they
  sleep): what the suite did by default before it chose the count (:func:`autorec.env.auto_threads`);
- ``N threads, passive wait``: every core, ``AUTOREC_OMP_WAIT_POLICY=passive`` (workers sleep at once);
- ``default``: what a user gets with no option at all (no thread variable set: the cores other work
  leaves idle when the fit starts, :func:`autorec.env.default_thread_count`; the default wait policy);

with 0, then 1 (then 2) busy neighbours: single-threaded busy loops this command starts before and
stops after their measurements (``--neighbours 0,1,2``).  Measurements are interleaved (repeat after
repeat over every setting), the table shows medians, and each row compares the default with the best
setting on that row: the target is ``default <= 1.3 x best`` with a core busy, and on a quiet machine.

Everything measured goes to one raw file (``results/contention.json``: every measurement, the load
average around it, the threads each run chose and why, the environment); ``results/contention.md`` is
rendered from it (``--render-only`` renders again without measuring).  Timings need a quiet machine
apart from the neighbours this command starts: it warns when the load average says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.3


@dataclass(frozen=True)
class Case:
    """One training path: a registered model in one backend with the parameters it is built with
    (sized so that a fit takes a few seconds here)."""

    id: str
    model: str
    backend: str
    params: dict[str, Any] = field(default_factory=dict)


#: the D2L AutoRec configuration (AutoRecConfig defaults, 25 epochs) in each training path, then the
#: MF baselines at their defaults with the iteration counts cut to a few seconds
CASES = [
    Case("autorec-torch-dense", "i-autorec", "torch", {"path": "dense"}),
    Case("autorec-torch-sparse", "i-autorec", "torch", {"path": "sparse", "extra": {"sparse_kernel": "torch"}}),
    Case("autorec-torch-native", "i-autorec", "torch", {"path": "sparse", "extra": {"sparse_kernel": "native"}}),
    Case("autorec-mxnet-dense", "i-autorec", "mxnet", {"path": "dense"}),
    Case("d2l-mf-torch", "d2l-mf", "torch"),
    Case("biased-mf-torch", "biased-mf", "torch", {"epochs": 10}),
    Case("biased-mf-numpy", "biased-mf", "numpy", {"epochs": 10}),
    Case("als-numpy", "als", "numpy", {"epochs": 10, "factors": 64}),
    Case("bayesian-mf", "bayesian-mf", "myfm", {"n_iter": 100}),
    Case("surprise-svd", "surprise-svd", "surprise", {"n_epochs": 20}),
]
CASE_IDS = [c.id for c in CASES]


@dataclass(frozen=True)
class Setting:
    """How a measurement's process is started: its thread count (``None``: the default) and the
    suite's wait policy (``None``: the default)."""

    id: str
    threads: int | None
    wait_policy: str | None

    def env(self) -> dict[str, str]:
        """The child's environment: the policy variable set or removed, ``OMP_WAIT_POLICY`` removed
        (so that the policy decides it), and no thread-count variable (the default must choose)."""
        drop = ("OMP_WAIT_POLICY", "AUTOREC_OMP_WAIT_POLICY", "OMP_NUM_THREADS", "AUTOREC_THREADS")
        out = {k: v for k, v in os.environ.items() if k not in drop}
        if self.wait_policy is not None:
            out["AUTOREC_OMP_WAIT_POLICY"] = self.wait_policy
        out["PYTHONPATH"] = str(REPO) + (os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else "")
        return out


def settings(cores: int) -> list[Setting]:
    return [
        Setting("1 thread", 1, None),
        Setting(f"{cores} threads", cores, "runtime"),
        Setting(f"{cores} threads, passive wait", cores, "passive"),
        Setting("default", None, None),
    ]


# ---------------------------------------------------------------------- the busy neighbour
@contextmanager
def neighbours(n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` single-threaded busy loops running for the duration of the block, stopped (and reaped)
    on the way out, whatever happens inside."""
    from autorec.env import die_with_parent  # a killed benchmark takes its neighbours along

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        for _ in range(n)
    ]
    try:
        if procs:
            time.sleep(0.5)  # let them reach their cores
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


# ---------------------------------------------------------------------- one measurement (child)
def measure_here(case: Case, threads: int | None, dataset: str, data_dir: str | None) -> dict[str, Any]:
    """Train ``case`` in this process and time the fit: ``{"fit_s", "threads", "thread_counts"}``.
    Runs in a fresh child process per measurement (the wait policy is read when OpenMP loads)."""
    from autorec.env import set_threads, thread_counts
    from autorec.models import registry
    from autorec.splits import SplitSpec
    from benchmarks.harness import DataSource, load_data, parse_dataset

    ref = registry.get(case.model, case.backend)
    cls = ref.load()  # imports the framework (mxnet before torch where it is the backend)
    params = dict(case.params)
    if "threads" in cls.Config.field_names():
        params["threads"] = threads
    model = ref.build(params)
    n = set_threads(threads)  # every framework now imported, BLAS included
    source = DataSource(data_dir=data_dir, offline=True)
    split = load_data(
        parse_dataset(dataset), SplitSpec.parse("d2l-random:test_ratio=0.1"), seed=0, valid_ratio=0.0, source=source
    )
    t0 = time.perf_counter()
    model.fit(split.train, None)
    fit_s = time.perf_counter() - t0
    return {"fit_s": round(fit_s, 4), "threads": n, "thread_counts": thread_counts()}


def measure(case: Case, setting: Setting, dataset: str, data_dir: str | None, timeout: float) -> dict[str, Any]:
    """One measurement in a fresh process; the record has the load average around it, or the error."""
    from autorec.env import load_average

    cmd = [sys.executable, "-m", "benchmarks.contention", "--measure", case.id, "--dataset", dataset]
    if setting.threads is not None:
        cmd += ["--threads", str(setting.threads)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    load_before = load_average()
    try:
        out = subprocess.run(cmd, env=setting.env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s", "load_before": load_before}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: " + " | ".join(tail), "load_before": load_before}
    return {**json.loads(lines[-1]), "load_before": load_before, "load_after": load_average()}


# ---------------------------------------------------------------------- the whole benchmark
def run(
    cases: Sequence[Case],
    neighbour_counts: Sequence[int],
    repeats: int,
    dataset: str,
    data_dir: str | None,
    timeout: float = 600.0,
    log=print,
) -> dict[str, Any]:
    """Every (neighbours, case, setting) ``repeats`` times, interleaved; the raw document."""
    from autorec.env import DEFAULT_WAIT_POLICY, default_threads, environment, load_average, wait_policy_env

    cores = default_threads()
    sets = settings(cores)
    if load_average() and load_average()[0] > 0.5:
        log(f"warning: load average {load_average()[0]:.2f} before any neighbour: timings will be noisy")
    measurements: list[dict[str, Any]] = []
    total = len(neighbour_counts) * repeats * len(cases) * len(sets)
    done = 0
    t_start = time.perf_counter()
    for n in neighbour_counts:
        with neighbours(n):
            for r in range(repeats):
                for case in cases:
                    for s in sets:
                        m = measure(case, s, dataset, data_dir, timeout)
                        measurements.append({"neighbours": n, "repeat": r, "case": case.id, "setting": s.id, **m})
                        done += 1
                        what = f"{m['fit_s']:.2f} s" if "fit_s" in m else m["error"]
                        elapsed = time.perf_counter() - t_start
                        log(
                            f"[{done}/{total}, {elapsed:.0f} s] {n} busy, {case.id}, {s.id}: {what}",
                        )
    return {
        "benchmark": "contention",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": dataset,
        "split": "d2l-random:test_ratio=0.1 (seed 0, no validation)",
        "cores": cores,
        "default_wait_policy": wait_policy_env(DEFAULT_WAIT_POLICY),
        "settings": [vars(s) for s in sets],
        "cases": [vars(c) for c in cases],
        "target_ratio": TARGET_RATIO,
        "environment": environment(),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "measurements": measurements,
    }


def update_conflict(
    old: dict[str, Any], *, dataset: str, settings: list[dict[str, Any]], neighbours: Sequence[int]
) -> str | None:
    """Why rows measured on ``dataset`` with ``settings`` beside ``neighbours`` busy neighbours
    cannot replace rows of ``old`` (``--update``), or None when they can: the same dataset, thread
    settings (so the same cores) and busy-neighbour counts as the file's."""
    for key, now in (("dataset", dataset), ("settings", settings)):
        if old.get(key) != now:
            return f"{key} differs ({old.get(key)!r} in the file, {now!r} now)"
    had, now_counts = sorted({m["neighbours"] for m in old["measurements"]}), sorted(set(neighbours))
    if had != now_counts:
        return f"busy neighbours {now_counts} now, {had} in the file"
    return None


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with every measurement of ``new``'s cases replaced by ``new``'s (``--update``: some
    rows re-measured, e.g. after their code changed); refused (``ValueError``) where
    :func:`update_conflict` says they were not measured the same way.  Each row's ratio compares
    settings measured together, so a re-measured row is judged on its own measurements;
    ``updates`` says which rows and when."""
    why = update_conflict(
        old,
        dataset=new["dataset"],
        settings=new["settings"],
        neighbours=[m["neighbours"] for m in new["measurements"]],
    )
    if why is not None:
        raise ValueError(f"cannot update: {why}")
    cases = [c["id"] for c in new["cases"]]
    known = [c["id"] for c in old["cases"]]
    kept = [m for m in old["measurements"] if m["case"] not in cases]
    update = {
        "cases": cases,
        "created_at": new["created_at"],
        "wall_s": new["wall_s"],
        "environment": new["environment"],
    }
    return {
        **old,
        "cases": old["cases"] + [c for c in new["cases"] if c["id"] not in known],
        "measurements": kept + new["measurements"],
        "updates": [*old.get("updates", []), update],
    }


# ---------------------------------------------------------------------- the table
def summarise(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (neighbours, case): the median fit seconds of each setting, the best, and the
    default's ratio to it (``None`` where a setting has no successful measurement)."""
    setting_ids = [s["id"] for s in doc["settings"]]
    groups: dict[tuple[int, str], dict[str, list[float]]] = {}
    errors: dict[tuple[int, str], list[str]] = {}
    for m in doc["measurements"]:
        key = (m["neighbours"], m["case"])
        if "fit_s" in m:
            groups.setdefault(key, {}).setdefault(m["setting"], []).append(float(m["fit_s"]))
        else:
            errors.setdefault(key, []).append(f"{m['setting']}: {m['error']}")
    rows = []
    for key in sorted({*groups, *errors}, key=lambda k: (k[0], [c["id"] for c in doc["cases"]].index(k[1]))):
        med = {s: statistics.median(v) for s, v in groups.get(key, {}).items()}
        best = min(med.values()) if med else None
        default = med.get("default")
        ratio = default / best if default is not None and best else None
        rows.append(
            {
                "neighbours": key[0],
                "case": key[1],
                "medians": {s: med.get(s) for s in setting_ids},
                "n": {s: len(groups.get(key, {}).get(s, [])) for s in setting_ids},
                "best": best,
                "ratio": ratio,
                "met": None if ratio is None else ratio <= doc["target_ratio"],
                "errors": errors.get(key, []),
            }
        )
    return rows


def render(doc: dict[str, Any]) -> str:
    """``results/contention.md`` from the raw document (a pure function of it)."""
    rows = summarise(doc)
    setting_ids = [s["id"] for s in doc["settings"]]
    env = doc["environment"]
    reps = max((max(r["n"].values(), default=0) for r in rows), default=0)
    lines = [
        "# Threads under contention",
        "",
        f"Regenerated from `contention.json` by `python -m benchmarks.contention --render-only`; measured by "
        f"`make bench-threads` on {doc['created_at']} ({doc['wall_s']:.0f} s). Fit seconds, median of {reps} "
        f"interleaved measurements, each in a fresh process: {doc['dataset']}, {doc['split']}, the D2L AutoRec "
        f"configuration (25 epochs) in each training path and the MF baselines with short iteration counts "
        f"(`benchmarks/contention.py`). {doc['cores']} cores ({env.get('cpu_model')}); a busy neighbour is a "
        f"single-threaded busy loop the benchmark starts and stops.",
        "",
        "`default` is what a user gets with no option: the cores that other work leaves idle when the fit "
        "starts (`autorec.env.auto_threads`; `AUTOREC_THREADS` or `OMP_NUM_THREADS` override it) and the "
        f"default OpenMP wait policy (`{json.dumps(doc['default_wait_policy'])}`, i.e. the runtime's own: "
        "libgomp's workers spin a while, then sleep). `passive wait` sets `AUTOREC_OMP_WAIT_POLICY=passive` "
        "(workers sleep at once). The all-cores setting with the runtime's policy is what the suite did "
        f"before it chose the count. Target: `default` within {doc['target_ratio']}x of the row's best.",
        *[
            f"\nRe-measured on {u['created_at']} ({u['wall_s']:.0f} s) with `--update`, the same settings and "
            f"neighbours: {', '.join(u['cases'])} (their rows are from that run; each row compares settings "
            "measured together)."
            for u in doc.get("updates", [])
        ],
        "",
        "| busy neighbours | path | " + " | ".join(setting_ids) + " | default / best | target |",
        "|---|---|" + "---|" * len(setting_ids) + "---|---|",
    ]
    for r in rows:
        failed_settings = {e.split(":", 1)[0] for e in r["errors"]}
        cells = [
            f"{r['medians'][s]:.2f}" if r["medians"][s] is not None else "failed" if s in failed_settings else "-"
            for s in setting_ids
        ]
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        met = {True: "met", False: "**missed**", None: "-"}[r["met"]]
        lines.append(f"| {r['neighbours']} | {r['case']} | " + " | ".join(cells) + f" | {ratio} | {met} |")
    failed = [(r["neighbours"], r["case"], e) for r in rows for e in r["errors"]]
    if failed:
        lines += ["", "Failed measurements:", ""] + [f"- {n} busy, {c}, {e}" for n, c, e in failed]
    worst = max((r["ratio"] for r in rows if r["ratio"] is not None), default=None)
    if worst is not None:
        lines += [
            "",
            f"Worst default / best over every row: {worst:.2f} (target {doc['target_ratio']}).",
        ]
        spare = [r for r in rows if r["neighbours"] < doc["cores"] and r["ratio"] is not None]
        if spare and len(spare) < len([r for r in rows if r["ratio"] is not None]):
            worst_spare = max(r["ratio"] for r in spare)
            lines += [
                "",
                f"With at least one core left idle by the neighbours (the target's condition): worst "
                f"{worst_spare:.2f}. With {doc['cores']} or more busy neighbours no core is idle: the default "
                "then takes 1 thread, and since the scheduler shares the CPU per thread, a process with more "
                "threads gets a larger share of it, so all-core settings can be faster there.",
            ]
    lines += ["", f"Environment: `{json.dumps(env.get('threads'))}`.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.contention", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASE_IDS), help=f"comma-separated, from: {', '.join(CASE_IDS)}")
    p.add_argument("--neighbours", default="0,1", help="busy neighbour counts to measure with (default 0,1)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved measurements per cell (default 3)")
    p.add_argument("--dataset", default="ml-100k", help="ml-100k (default) or synthetic:NU,NI,NR")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset (default: ../shared/data if present)")
    p.add_argument("--out", default="results", help="folder for contention.json and contention.md")
    p.add_argument("--render-only", action="store_true", help="render contention.md from contention.json")
    p.add_argument(
        "--update",
        action="store_true",
        help="re-measure only --cases and replace their rows in the existing contention.json (same settings)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement before it counts as failed")
    p.add_argument("--measure", metavar="CASE", help=argparse.SUPPRESS)  # the child's entry point
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    by_id = {c.id: c for c in CASES}
    from benchmarks.harness import shared_data_dir

    data_dir = args.data_dir or shared_data_dir()
    if args.measure:
        print(json.dumps(measure_here(by_id[args.measure], args.threads, args.dataset, data_dir)))
        return 0
    if args.render_only:
        raw = out / "contention.json"
        if not raw.is_file():
            p.error(f"{raw} does not exist: run the benchmark first (make bench-threads)")
        (out / "contention.md").write_text(render(json.loads(raw.read_text())))
        print(f"wrote {out / 'contention.md'}")
        return 0
    unknown = [c for c in args.cases.split(",") if c not in by_id]
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {CASE_IDS}")
    try:
        counts = [int(x) for x in args.neighbours.split(",")]
    except ValueError:
        p.error(f"--neighbours {args.neighbours!r}: comma-separated integers, e.g. 0,1")
    if args.repeats < 1 or min(counts) < 0:
        p.error("--repeats must be >= 1 and --neighbours >= 0")
    raw = out / "contention.json"
    previous = None
    if args.update:
        if not raw.is_file():
            p.error(f"--update: {raw} does not exist: run the whole benchmark first (make bench-threads)")
        previous = json.loads(raw.read_text())
        from autorec.env import default_threads

        why = update_conflict(
            previous,
            dataset=args.dataset,
            settings=[vars(x) for x in settings(default_threads())],
            neighbours=counts,
        )
        if why is not None:
            p.error(f"--update: {why}: measure everything instead")
    doc = run([by_id[c] for c in args.cases.split(",")], counts, args.repeats, args.dataset, data_dir, args.timeout)
    if previous is not None:
        try:
            doc = merge(previous, doc)
        except ValueError as exc:
            print(f"error: {exc}; nothing written", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "contention.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(out / "contention.json")
    (out / "contention.md").write_text(render(doc))
    print(f"wrote {out / 'contention.json'} and {out / 'contention.md'}")
    failed = sum("error" in m for m in doc["measurements"])
    if failed:
        print(f"{failed} measurement(s) failed: see {out / 'contention.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
