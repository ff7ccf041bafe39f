"""Plan the bundled FLAN v2 sample with Orca 2 style templates and print the dry-run estimate.

Offline and free: nothing is sent to any model. Run from anywhere:

    python examples/api_example.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tracegen import estimate
from tracegen.config import RunConfig
from tracegen.planning.plan import build_plan, iter_plan, write_plan
from tracegen.planning.sources import Rejection

HERE = Path(__file__).resolve().parent


def main() -> None:
    config = RunConfig(
        source=[str(HERE / "flan_sample")],
        n=400,
        seed=0,
        model="gpt-4o-mini",
        max_tokens=1024,
        budget_usd=0.05,
        templates=str(HERE / "templates_orca2.yaml"),
    )
    rejected: list[Rejection] = []  # a real run appends these to rejected.jsonl
    with build_plan(config, on_reject=rejected.append) as plan, tempfile.TemporaryDirectory() as run_dir:
        stats = write_plan(plan, run_dir)  # plan.jsonl, requests.jsonl (Batch API format), plan_stats.json
        first = next(iter_plan(run_dir))
        est = estimate(plan, config)

    print("planned per submix:", stats.planned, "shortfall:", stats.shortfall)
    print("dropped:", stats.dropped, "rejected:", len(rejected))
    print(f"first request: {first.id} [{first.task_name}] system={first.system_prompt[:60]!r}")
    print(json.dumps(est.to_dict(), indent=2))


if __name__ == "__main__":
    main()
