"""Submit the mining job to a Ray cluster's Jobs API, once per configuration.

python -m jobs.submit [--address URL] [--resubmit] [--follow] [overlay.yaml ...] key=value ...

The arguments are those of `python -m jobs.mine`. The submission id is derived from the config
hash and the manifests' sizes and modification times (`lookbook-miner-<hash>`), so submitting the
same configuration and input twice is harmless: while the first is pending, running or succeeded,
the second is refused. After a failure or a stop,
`--resubmit` deletes the old job record and submits again under the same id; the job resumes from
its committed work shards. The runtime environment is `conf/runtime_env.yaml`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shlex
import sys
import time

from omegaconf import OmegaConf
from ray.job_submission import JobStatus, JobSubmissionClient

from core.config import CONF_DIR, config_hash, load_config
from core.storage import fingerprint

RUNTIME_ENV_FILE = CONF_DIR / "runtime_env.yaml"
REPO = CONF_DIR.parent
RESUBMITTABLE = (JobStatus.FAILED, JobStatus.STOPPED)
TERMINAL = (JobStatus.SUCCEEDED, *RESUBMITTABLE)


def submission_id(job_args: list[str]) -> str:
    """`lookbook-miner-<hash>` of the configuration (the output folder included) and of the two
    manifests' sizes and modification times: one id per configuration and input, so a manifest
    with rows added is a new submission (which redoes only the shards whose rows changed)."""
    cfg = load_config(job_args)
    inputs = [config_hash(cfg), *(fingerprint(uri, cfg.storage) for uri in (cfg.lookbook, cfg.garments))]
    return f"lookbook-miner-{hashlib.sha256('|'.join(inputs).encode()).hexdigest()[:16]}"


def runtime_env() -> dict:
    """`conf/runtime_env.yaml` with `working_dir` resolved against the repository root."""
    env = OmegaConf.to_container(OmegaConf.load(RUNTIME_ENV_FILE))
    env["working_dir"] = str((REPO / env["working_dir"]).resolve())
    return env


def existing_status(client: JobSubmissionClient, job_id: str) -> JobStatus | None:
    return next((job.status for job in client.list_jobs() if job.submission_id == job_id), None)


def submit(client: JobSubmissionClient, job_args: list[str], resubmit: bool) -> tuple[str, bool]:
    """(submission id, whether a new submission was made). Raises SystemExit with the reason
    when the id is taken by a job that `resubmit` may not replace."""
    job_id = submission_id(job_args)
    status = existing_status(client, job_id)
    if status is not None:
        if status not in RESUBMITTABLE:
            print(f"[lookbook-miner] {job_id} is already {status.value}: not submitted again", flush=True)
            return job_id, False
        if not resubmit:
            raise SystemExit(
                f"{job_id} ended {status.value}; rerun with --resubmit to resume it from its committed shards"
            )
        client.delete_job(job_id)
    client.submit_job(
        entrypoint=shlex.join(["python", "-m", "jobs.mine", *job_args]),
        submission_id=job_id,
        runtime_env=runtime_env(),
        metadata={"job": "lookbook-miner"},
    )
    print(f"[lookbook-miner] submitted {job_id}; follow with: ray job logs --follow {job_id}", flush=True)
    return job_id, True


def wait(client: JobSubmissionClient, job_id: str, follow: bool, poll_s: float = 2.0) -> JobStatus:
    """Block until the job ends (printing its log as it grows when `follow`); its final status."""
    if follow:
        asyncio.run(_print_log(client, job_id))
    while (status := client.get_job_status(job_id)) not in TERMINAL:
        time.sleep(poll_s)
    return status


async def _print_log(client: JobSubmissionClient, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=None, help="Jobs API URL (default: RAY_API_SERVER_ADDRESS / RAY_ADDRESS)")
    parser.add_argument("--resubmit", action="store_true", help="replace a FAILED or STOPPED job of this config")
    parser.add_argument(
        "--follow", action="store_true", help="print the job log until it ends; exit 1 unless it succeeds"
    )
    args, job_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    client = JobSubmissionClient(args.address)
    job_id, _ = submit(client, job_args, args.resubmit)
    if not args.follow:
        return 0
    status = wait(client, job_id, follow=True)
    print(f"[lookbook-miner] {job_id} {status.value}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
