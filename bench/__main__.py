"""`python -m bench [NAME ...]`: run benchmarks, print Markdown, save JSON under bench/results/."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import (
    abuse,
    access,
    alerts,
    capture,
    core,
    fleet,
    hardening,
    history,
    perf,
    processes,
    storage,
    stream,
    whole,
)

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "names",
        nargs="*",
        default=["core", "perf", "stream", "storage"],
        choices=[
            "core",
            "perf",
            "stream",
            "storage",
            "abuse",
            "hardening",
            "whole",
            "fleet",
            "processes",
            "capture",
            "alerts",
            "access",
            "history",
        ],
    )
    parser.add_argument("--ticks", type=int, default=500)
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--stream-seconds", type=float, default=30.0)
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument(
        "--database-url", help="storage, access: an external PostgreSQL (default: embedded)"
    )
    parser.add_argument(
        "--storage-capture",
        metavar="FILE",
        help="storage: snapshots to replay (python -m bench capture; default: the test "
        "fixture, 15 minutes at 1 s)",
    )
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--query-runs", type=int, default=20)
    parser.add_argument("--perf-seconds", type=float, default=60.0)
    parser.add_argument("--hold-seconds", type=float, default=60.0)
    parser.add_argument(
        "--abuse-baseline",
        metavar="DIR",
        help="hardening: also attack the perfpulse checked out in DIR (git worktree add DIR "
        "<commit>), after this one",
    )
    parser.add_argument("--whole-seconds", type=float, default=60.0)
    parser.add_argument("--whole-runs", type=int, default=3)
    parser.add_argument("--no-glances", action="store_true", help="whole: skip Glances")
    parser.add_argument(
        "--whole-baseline",
        metavar="DIR",
        help="whole: also measure the perfpulse checked out in DIR (git worktree add DIR "
        "<commit>), interleaved with this one",
    )
    parser.add_argument(
        "--process-counts",
        type=int,
        nargs="+",
        default=[100, 1000, 5000],
        help="processes: extra processes to spawn for the scan sweep",
    )
    parser.add_argument("--fleet-hosts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--fleet-interval", type=float, default=1.0)
    parser.add_argument("--fleet-seconds", type=float, default=120.0)
    parser.add_argument(
        "--fleet-agent-processes", type=int, default=2, help="fleet: processes simulating agents"
    )
    parser.add_argument(
        "--fleet-browser",
        action="store_true",
        help="fleet: also watch the Fleet page in Chromium (long tasks)",
    )
    parser.add_argument(
        "--fleet-knee",
        action="store_true",
        help="fleet: then double the hosts until the targets break, and bisect",
    )
    parser.add_argument(
        "--history-hot",
        type=int,
        default=700,
        help="history: hot rows of the host read (at 1 s up to 13 minutes are hot)",
    )
    parser.add_argument("--capture-seconds", type=float, default=900.0)
    parser.add_argument("--capture-interval", type=float, default=1.0)
    parser.add_argument(
        "--capture-out",
        default="bench/results/snapshots.jsonl.gz",
        help="capture: where to write the snapshots (JSON lines, gzip)",
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for name in args.names:
        if name == "core":
            result = core.run(args.ticks, args.scrapes, args.idle_seconds)
            text = core.report(result)
        elif name == "stream":
            result = stream.run(args.clients, args.stream_seconds, args.client_processes)
            text = stream.report(result)
        elif name == "perf":
            result = perf.run(args.perf_seconds)
            text = perf.report(result)
        elif name == "whole":
            result = whole.run(
                args.whole_seconds, args.whole_runs, not args.no_glances, args.whole_baseline
            )
            text = whole.report(result)
        elif name == "fleet":
            result = fleet.run(
                args.fleet_hosts,
                args.fleet_interval,
                args.fleet_seconds,
                args.fleet_knee,
                args.fleet_agent_processes,
                args.fleet_browser,
            )
            text = fleet.report(result)
        elif name == "abuse":  # the first round's attacks, then the second round's
            result = {
                "first_round": abuse.run(args.hold_seconds),
                "second_round": hardening.run(args.abuse_baseline),
            }
            text = "\n\n".join(
                [abuse.report(result["first_round"]), hardening.report(result["second_round"])]
            )
        elif name == "hardening":  # the second round alone
            result = hardening.run(args.abuse_baseline)
            text = hardening.report(result)
        elif name == "processes":
            result = processes.run(args.process_counts)
            text = processes.report(result)
        elif name == "alerts":
            result = alerts.run()
            text = alerts.report(result)
        elif name == "access":
            result = access.run(args.database_url)
            text = access.report(result)
        elif name == "history":
            result = history.run(args.history_hot, args.query_runs)
            text = history.report(result)
        elif name == "capture":
            result = capture.run(args.capture_seconds, args.capture_interval, args.capture_out)
            text = capture.report(result)
        elif name == "storage":
            result = storage.run(
                args.database_url, args.storage_capture, args.history_days, args.query_runs
            )
            text = storage.report(result)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        print(f"## {name}\n\n{text}\n")


if __name__ == "__main__":
    main()
