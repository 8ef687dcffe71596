"""Make the replay fixture the policy workflow replays: real traffic, exported.

Starts an embedded runtime on a temporary SQLite database with the repository's policies/, a
loopback HTTP server and a loopback Maildir sink, makes the quickstart's calls through the real
HTTP face (tests/policytools/replay_support.py: reads allowed and denied, a write, a delete
approved and run, one left waiting for two approvers, mail to the quickstart and the send-window
subdomains), and writes `outbox audit export` of it. Nothing leaves this machine.

    .venv/bin/python scripts/make_replay_fixture.py [--output tests/fixtures/recordings/quickstart.jsonl]

Make it again when the export format changes (tests/policytools/test_replay_fixture.py says so).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the shared traffic lives with the tests that use it too

from outbox.config import Settings  # noqa: E402
from outbox.migrations import upgrade  # noqa: E402
from outbox.runtime import Runtime  # noqa: E402
from tests.policytools.replay_support import export_text, mail_settings, mail_sink, quickstart_traffic, traffic_on  # noqa: E402
from tests.support.http_target import TargetServer  # noqa: E402

DEFAULT_OUTPUT = ROOT / "tests" / "fixtures" / "recordings" / "quickstart.jsonl"


def make_fixture(output: Path) -> int:
    """Record the traffic and write the export; returns how many actions it holds."""
    with tempfile.TemporaryDirectory(prefix="outbox-replay-fixture-") as scratch:
        work = Path(scratch)
        target = TargetServer()
        target.start()
        try:
            with mail_sink(work / "maildir") as sink:
                settings = Settings(
                    database_url=f"sqlite:///{work / 'outbox.db'}",
                    policy_dir=ROOT / "policies",
                    data_dir=work / "data",
                    policy_watch=False,
                    log_json=False,
                    log_level="WARNING",
                    **mail_settings(work, sink),
                )
                upgrade(settings)
                runtime = Runtime.build(settings)
                try:
                    with traffic_on(runtime) as traffic:
                        ids = quickstart_traffic(traffic, target.base_url)
                    text = export_text(runtime)
                finally:
                    runtime.db.dispose()
        finally:
            target.stop()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the export goes")
    options = parser.parse_args()
    count = make_fixture(options.output)
    print(f"{options.output}: {count} recorded actions")


if __name__ == "__main__":
    main()
