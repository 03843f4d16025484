"""The short chaos run: 2 workers, 3 SIGKILLs of random workers or the parent, resumes, then the end state
against an undisturbed run by one worker (benchmarks/chaos.py does the same with 20+ kills). The weights equal
the one-worker run's: two workers and their restarts change nothing (this replaced a test of two workers
against one without kills)."""

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_random_kills_lose_nothing_run_nothing_twice_and_change_no_weights():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/chaos.py"), "--kills", "3", "--repeats", "4",
                           "--epochs", "2", "--window", "2"], capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {line.split()[1]: int(line.split()[3]) for line in done.stdout.splitlines()
               if line.startswith("RESULT ")}
    assert results["chaos_kills"] == 3, done.stdout
    for key in ("chaos_lost", "chaos_duplicated", "chaos_hash_mismatches", "chaos_orphans"):
        assert results[key] == 0, done.stdout
