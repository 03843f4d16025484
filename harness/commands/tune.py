"""`harness tune`: search, re-check the top configurations with fresh seeds, record the seed-robust best.

tune.md and tune.json go to the report folder and onto the study's MLflow parent run; the parent's
`harness.robust_best_config` tag is what `harness predict` trains.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.commands.common import open_training


def tune(args: argparse.Namespace) -> int:
    from harness.errors import SpecError
    from harness.execution import search
    from harness.study.design import in_spec_file
    from harness.study.spec import load_spec

    spec = load_spec(args.spec)
    try:
        search.check_search(spec)
    except SpecError as err:  # a search.space key or choice the base cannot take: name the spec, as parsing does
        raise in_spec_file(spec, err) from None
    study, client, storage, count = open_training(spec, args)
    out = args.out or Path("reports") / spec.name
    result = search.tune(study, client, storage, count, not args.no_progress)
    from harness.report.sequential import sequential_sentences

    result["verdict"] += sequential_sentences(result.get("reeval_sequential"))
    record(client, result, out)
    print("\n".join(result["verdict"]))
    print(f"tune report: {out / 'tune.md'}")
    return 0


def record(client: Any, result: dict[str, Any], out_dir: Path) -> None:
    """tune.json and tune.md in the report folder and on the parent run; the robust best as parent tags (predict)."""
    from harness.files import write_atomic
    from harness.report.tune import render

    best = next((t for t in result["top"] if t["label"] == result["robust_best"]), result["top"][0])
    write_atomic(out_dir / "tune.json", json.dumps(result, indent=1, default=str))
    write_atomic(out_dir / "tune.md", render(result))
    parent_id = result["parent_run_id"]
    for name in ("tune.json", "tune.md"):
        client.log_artifact(parent_id, str(out_dir / name), "tune")
    client.set_tag(parent_id, "harness.robust_best", best["label"])
    client.set_tag(parent_id, "harness.robust_best_config", result["robust_best_config"])
    if result["best_trial_run_id"]:
        client.set_tag(result["best_trial_run_id"], "harness.best_trial", "true")
