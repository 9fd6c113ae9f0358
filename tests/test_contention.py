"""The thread policy (OpenMP wait policy set on ``import autorec``) and the contention benchmark's
plumbing: the busy neighbours it starts and stops, the table it renders from its raw file, and one
tiny end-to-end measurement.  No wall-clock time is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autorec import env
from benchmarks import contention

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, **env_vars: str) -> str:
    child_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", env.WAIT_POLICY_VAR)}
    child_env.update(env_vars)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


SHOW = "import json, os, autorec; from autorec.env import thread_counts; print(json.dumps(thread_counts()['omp_wait']))"


def test_by_default_the_runtimes_wait_policy_is_kept():
    got = json.loads(_python(SHOW))
    assert got == {"policy": "runtime", "OMP_WAIT_POLICY": None, "effective": True}


def test_import_sets_a_chosen_wait_policy_before_any_framework():
    got = json.loads(_python(SHOW, AUTOREC_OMP_WAIT_POLICY="passive"))
    assert got == {"policy": "passive", "OMP_WAIT_POLICY": "PASSIVE", "effective": True}


def test_a_users_omp_wait_policy_is_never_overridden():
    got = json.loads(_python(SHOW, OMP_WAIT_POLICY="ACTIVE"))
    assert got["OMP_WAIT_POLICY"] == "ACTIVE" and got["policy"] == "user"


@pytest.mark.parametrize("policy,expected", [("runtime", None), ("active", "ACTIVE"), ("PASSIVE", "PASSIVE")])
def test_the_policy_variable_chooses(policy, expected):
    got = json.loads(_python(SHOW, AUTOREC_OMP_WAIT_POLICY=policy))
    assert got["OMP_WAIT_POLICY"] == expected


def test_an_unknown_policy_warns_naming_the_variable_and_keeps_the_runtime_default():
    child_env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    child_env[env.WAIT_POLICY_VAR] = "sleepy"
    out = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, env=child_env, cwd=REPO)
    assert out.returncode == 0
    assert "AUTOREC_OMP_WAIT_POLICY='sleepy'" in out.stderr
    assert json.loads(out.stdout)["OMP_WAIT_POLICY"] is None


def test_a_framework_imported_first_is_recorded_as_not_effective():
    pytest.importorskip("torch")
    got = json.loads(_python("import torch; " + SHOW, AUTOREC_OMP_WAIT_POLICY="passive"))
    assert got["effective"] is False and got["loaded_before"] == ["torch"]


def test_wait_policy_env_values():
    assert env.wait_policy_env("passive") == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env.wait_policy_env("runtime") == {}
    with pytest.raises(ValueError, match="AUTOREC_OMP_WAIT_POLICY"):
        env.wait_policy_env("fast")


def test_worker_processes_inherit_the_policy():
    """A run's worker is a fresh process started from a process that imported autorec."""
    assert (
        _python(
            "import autorec, subprocess, sys; print(subprocess.check_output([sys.executable, '-c', "
            "'import os; print(os.environ.get(\"OMP_WAIT_POLICY\"))'], text=True).strip())",
            AUTOREC_OMP_WAIT_POLICY="passive",
        )
        == "PASSIVE"
    )


# ---------------------------------------------------------------------- the neighbours
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_neighbours_are_started_and_stopped():
    with contention.neighbours(2) as procs:
        pids = [p.pid for p in procs]
        assert len(pids) == 2 and all(p.poll() is None for p in procs)
    assert not any(_alive(pid) for pid in pids)


def test_neighbours_are_stopped_when_the_block_fails():
    with pytest.raises(RuntimeError), contention.neighbours(1) as procs:
        pid = procs[0].pid
        raise RuntimeError("boom")
    assert not _alive(pid)


# ---------------------------------------------------------------------- the table
def _doc(measurements):
    return {
        "created_at": "2026-12-05T00:00:00+0000",
        "wall_s": 1.0,
        "dataset": "ml-100k",
        "split": "d2l-random",
        "cores": 2,
        "default_wait_policy": {"OMP_WAIT_POLICY": "PASSIVE"},
        "settings": [{"id": "1 thread"}, {"id": "2 threads"}, {"id": "default"}],
        "cases": [{"id": "a"}, {"id": "b"}],
        "target_ratio": 1.3,
        "environment": {"cpu_model": "x", "threads": {}},
        "measurements": measurements,
    }


def _m(n, case, setting, fit_s=None, error=None):
    return {
        "neighbours": n,
        "case": case,
        "setting": setting,
        **({"fit_s": fit_s} if error is None else {"error": error}),
    }


def test_summary_takes_medians_and_judges_the_default_against_the_best():
    ms = [_m(1, "a", "1 thread", s) for s in (2.0, 2.2, 9.0)]
    ms += [_m(1, "a", "2 threads", s) for s in (8.0, 8.5, 7.9)]
    ms += [_m(1, "a", "default", s) for s in (2.5, 2.4, 2.6)]
    ms += [_m(0, "b", "1 thread", 4.0), _m(0, "b", "2 threads", 2.0), _m(0, "b", "default", 3.0)]
    rows = contention.summarise(_doc(ms))
    assert [(r["neighbours"], r["case"]) for r in rows] == [(0, "b"), (1, "a")]
    a = rows[1]
    assert a["medians"] == {"1 thread": 2.2, "2 threads": 8.0, "default": 2.5}
    assert a["best"] == 2.2 and a["ratio"] == pytest.approx(2.5 / 2.2) and a["met"] is True
    b = rows[0]
    assert b["ratio"] == pytest.approx(1.5) and b["met"] is False


def test_render_marks_misses_and_lists_failures():
    ms = [_m(0, "b", "1 thread", 4.0), _m(0, "b", "2 threads", 2.0), _m(0, "b", "default", 3.0)]
    ms.append(_m(0, "a", "default", error="exit 1: boom"))
    text = contention.render(_doc(ms))
    assert "| 0 | b | 4.00 | 2.00 | 3.00 | 1.50 | **missed** |" in text
    assert "| 0 | a | - | - | failed | - | - |" in text
    assert "- 0 busy, a, default: exit 1: boom" in text
    assert "Worst default / best over every row: 1.50" in text


def test_render_only_needs_the_raw_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        contention.main(["--render-only", "--out", str(tmp_path)])
    assert "make bench-threads" in capsys.readouterr().err
    (tmp_path / "contention.json").write_text(json.dumps(_doc([_m(0, "b", "default", 1.0)])))
    assert contention.main(["--render-only", "--out", str(tmp_path)]) == 0
    assert "| 0 | b | - | - | 1.00 | 1.00 | met |" in (tmp_path / "contention.md").read_text()


def test_update_replaces_only_the_remeasured_cases_rows():
    old = _doc([_m(0, "a", "default", 5.0), _m(0, "a", "1 thread", 5.0), _m(0, "b", "default", 9.0)])
    new = {**_doc([_m(0, "b", "default", 2.0), _m(0, "b", "1 thread", 2.5)]), "created_at": "2026-12-07T06:00:00+0000"}
    new["cases"] = [{"id": "b"}]
    merged = contention.merge(old, new)
    assert sorted((m["case"], m["setting"], m["fit_s"]) for m in merged["measurements"]) == [
        ("a", "1 thread", 5.0),
        ("a", "default", 5.0),
        ("b", "1 thread", 2.5),
        ("b", "default", 2.0),
    ]
    assert merged["created_at"] == old["created_at"] and [c["id"] for c in merged["cases"]] == ["a", "b"]
    assert merged["updates"][0]["cases"] == ["b"] and merged["updates"][0]["created_at"].startswith("2026-12-07")
    text = contention.render(merged)
    assert "Re-measured on 2026-12-07T06:00:00+0000" in text and "with `--update`" in text
    assert "| 0 | b | 2.50 | - | 2.00 | 1.00 | met |" in text
    with pytest.raises(ValueError, match="settings differs"):
        contention.merge(old, {**new, "settings": [{"id": "1 thread"}]})
    with pytest.raises(ValueError, match="busy neighbours"):
        contention.merge(old, {**new, "measurements": [_m(1, "b", "default", 2.0)]})


def test_update_needs_the_file_and_the_same_plan(tmp_path, capsys):
    with pytest.raises(SystemExit):
        contention.main(["--update", "--cases", "biased-mf-numpy", "--out", str(tmp_path)])
    assert "make bench-threads" in capsys.readouterr().err
    (tmp_path / "contention.json").write_text(json.dumps(_doc([_m(0, "b", "default", 1.0)])))
    with pytest.raises(SystemExit):  # the file's settings are not this machine's: nothing is measured
        contention.main(["--update", "--cases", "biased-mf-numpy", "--neighbours", "0", "--out", str(tmp_path)])
    assert "--update: settings differs" in capsys.readouterr().err


def test_bad_options_are_messages(capsys):
    for argv in (["--cases", "nope"], ["--neighbours", "one"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            contention.main(argv)
    err = capsys.readouterr().err
    assert "unknown case(s) ['nope']" in err and "comma-separated integers" in err and "--repeats" in err


@pytest.mark.slow
def test_one_case_end_to_end_on_synthetic_data(tmp_path):
    """Three fresh processes (one per setting) train the numpy SGD baseline; the raw file records
    each measurement's threads and wait policy, and the table is rendered from it."""
    code = contention.main(
        [
            "--cases",
            "biased-mf-numpy",
            "--neighbours",
            "0",
            "--repeats",
            "1",
            "--dataset",
            "synthetic:60,40,1500",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    doc = json.loads((tmp_path / "contention.json").read_text())
    by = {m["setting"]: m for m in doc["measurements"]}
    assert len(by) == 4
    assert by["1 thread"]["threads"] == 1 and 1 <= by["default"]["threads"] <= doc["cores"]
    assert by["default"]["thread_counts"]["omp_wait"]["OMP_WAIT_POLICY"] is None  # the runtime's own
    assert by["default"]["thread_counts"]["auto"]["cores"] == doc["cores"]  # chosen, and why, recorded
    passive = next(m for s, m in by.items() if "passive" in s)
    assert passive["thread_counts"]["omp_wait"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert all(m["fit_s"] > 0 for m in doc["measurements"])
    assert "| 0 | biased-mf-numpy |" in (tmp_path / "contention.md").read_text()
