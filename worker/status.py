"""The fleet at a glance: workers online, queue length, running jobs with their rate, the last worker errors.

Exit status 0, or 1 when the broker or the database cannot be read (the line says which). The same line shows in
the demo's Batch tab (`jobs.fleet.status_line`).
"""

from __future__ import annotations

import sys

import cli
from jobs.fleet import fleet_status, heal_note, status_line
from worker.broker import RedisBroker


def main(argv: list[str] | None = None) -> int:
    from settings import get_settings

    settings = get_settings()
    parser = cli.parser("python -m worker.status", __doc__)
    parser.add_argument("--queue", help="queue to measure (default: Celery's default queue)")
    cli.add_database_url(parser, settings)
    cli.add_redis_url(parser, settings)
    args = parser.parse_args(argv)
    status = fleet_status(broker=RedisBroker(args.redis_url), database_url=args.database_url, queue=args.queue)
    print(status_line(status))
    for worker in status["workers"]:
        print(f"  worker {worker}")
    for job in status["jobs"] or []:
        print(f"  job {job['job_id']}: {job['status']}, {job['done']:,}/{job['total']:,}, {job['errors']:,} errors, "
              f"{job['unknown']:,} unknown{heal_note(job)}, folder {job['folder']}")
    for err in status["errors"]:
        print(f"  recent worker error: {err['time']} {err['worker']} job {err['job_id']}: {err['error']}")
    return 0 if status["queue"] is not None and status["jobs"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
