"""Production runs the checkpointer from Celery beat: an entry every interval, a task that writes
a checkpoint when the head moved and nothing otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from outbox.audit.checkpointer import checkpoint_file
from outbox.config import get_settings
from outbox.runtime import Runtime
from tests.support.audit import make_events, verify


@pytest.fixture
def task_env(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from workers import tasks  # noqa: PLC0415 - the worker backend (Celery reads the settings at import) loads only in the tests that run it

    monkeypatch.setenv("OUTBOX_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("OUTBOX_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("OUTBOX_POLICY_DIR", str(runtime.settings.policy_dir))
    monkeypatch.setenv("OUTBOX_POLICY_WATCH", "false")
    monkeypatch.setenv("OUTBOX_AUDIT_CHECKPOINT_INTERVAL_SECONDS", "0.5")
    get_settings.cache_clear()
    tasks.runtime.cache_clear()
    tasks.checkpointer.cache_clear()
    yield
    tasks.runtime().db.dispose()
    tasks.runtime.cache_clear()
    tasks.checkpointer.cache_clear()
    get_settings.cache_clear()


def test_beat_schedules_the_checkpoint_task_every_interval(task_env: None) -> None:
    from workers.celery_app import CHECKPOINT_TASK, make_celery  # noqa: PLC0415 - the worker backend (Celery reads the settings at import) loads only in the tests that run it

    entry = make_celery("memory://").conf.beat_schedule["audit-checkpoint"]
    assert entry["task"] == CHECKPOINT_TASK
    assert entry["schedule"] == timedelta(seconds=0.5)
    assert entry["options"]["expires"] == 2.5  # a tick that waited too long is dropped, the next one covers it


def test_the_task_writes_one_checkpoint_per_new_head(runtime: Runtime, task_env: None) -> None:
    from workers.tasks import audit_checkpoint  # noqa: PLC0415 - the worker backend (Celery reads the settings at import) loads only in the tests that run it

    make_events(runtime, 4)
    assert audit_checkpoint.run() == {"written": 1}
    assert audit_checkpoint.run() == {"written": 0}
    make_events(runtime, 2)
    assert audit_checkpoint.run() == {"written": 1}
    assert len(checkpoint_file(runtime.settings).read_text().splitlines()) == 2
    report = verify(runtime)
    assert report.ok and report.latest_checkpoint is not None and report.latest_checkpoint.event_count == 6
