"""``--shard auto``: this process's shard from a cluster scheduler's array index, so a sharded run is one
array job.

    SLURM job arrays     SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT (and _MIN / _STEP when present):
                         ``sbatch --array=0-7`` or ``--array=1-8`` -> shards 1/8 .. 8/8
    Kubernetes indexed   JOB_COMPLETION_INDEX (0-based), the count from ``--shard-count`` /
    Jobs                 ``shard_count:`` / TRACEGEN_SHARD_COUNT (set it to the Job's ``completions``)

The result is an ordinary ``K/N`` (1-based), recorded as such in the run's manifest, so a rerun of a task
resumes its own shard. See examples/slurm_array.sh and examples/k8s_indexed_job.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["AUTO", "shard_from_scheduler"]

AUTO = "auto"

_SLURM_ID = "SLURM_ARRAY_TASK_ID"
_SLURM_COUNT = "SLURM_ARRAY_TASK_COUNT"
_K8S_INDEX = "JOB_COMPLETION_INDEX"


def _int(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"--shard auto: environment variable {name}={raw!r} is not an integer") from None


def shard_from_scheduler(env: Mapping[str, str], count: int | None = None) -> str:
    """``K/N`` for this array task; ValueError (one line saying what to set) when there is none.

    ``count`` (``--shard-count``) overrides the scheduler's task count; a Kubernetes indexed Job needs it.
    """
    if env.get(_SLURM_ID):
        task = _int(env, _SLURM_ID)
        first = _int(env, "SLURM_ARRAY_TASK_MIN") if env.get("SLURM_ARRAY_TASK_MIN") else 0
        step = _int(env, "SLURM_ARRAY_TASK_STEP") if env.get("SLURM_ARRAY_TASK_STEP") else 1
        n = count if count is not None else (_int(env, _SLURM_COUNT) if env.get(_SLURM_COUNT) else None)
        if n is None:
            raise ValueError(f"--shard auto: {_SLURM_ID} is set but not {_SLURM_COUNT}; give --shard-count N")
        k, rest = divmod(task - first, max(step, 1))
        if rest or not 0 <= k < n:
            raise ValueError(
                f"--shard auto: SLURM array task {task} is not one of {n} evenly spaced tasks from {first}; "
                f"submit a contiguous array (sbatch --array=0-{n - 1}) or give --shard K/N"
            )
        return f"{k + 1}/{n}"
    if env.get(_K8S_INDEX):
        k = _int(env, _K8S_INDEX)
        if count is None:
            raise ValueError(
                f"--shard auto: {_K8S_INDEX}={k} but no shard count; give --shard-count N (or "
                "TRACEGEN_SHARD_COUNT) equal to the Job's completions"
            )
        if not 0 <= k < count:
            raise ValueError(
                f"--shard auto: {_K8S_INDEX}={k} is not in 0..{count - 1} (--shard-count {count})"
            )
        return f"{k + 1}/{count}"
    raise ValueError(
        f"--shard auto: no scheduler array index in the environment ({_SLURM_ID} or {_K8S_INDEX}); "
        "run it as an array job or give --shard K/N"
    )
