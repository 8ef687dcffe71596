"""Signed checkpoints of the audit chain's head: the format, its signature and its own chain.

A hash chain shows an edited or removed event in its middle, but not a missing tail: delete the
newest events (or all of them, or delete and append forged ones with recomputed hashes) and what
remains is a valid chain. A checkpoint records the head (how many events, the last one's id and
hash) at a moment, signed with a key the database does not hold, in a place the database writer
cannot rewrite. Checkpoints chain too (`prev` is the previous checkpoint's digest), so a rewritten
or forked checkpoint history shows.

What is signed is the checkpoint object serialised with RFC 8785 (JSON Canonicalization Scheme),
so that a third party can check it with any JCS implementation (docs/audit.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from outbox.audit.signing import CheckpointSigner, verify_signature

FORMAT = "agent-outbox/audit-checkpoint/v1"
GENESIS_DIGEST = "0" * 64
LOG_EVENT = "audit.checkpoint"
_HEX = frozenset("0123456789abcdef")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and `Z`, e.g. 2026-12-04T15:40:00.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain head at `at`: `event_count` events, the last one `last_event_id` with `last_hash`."""

    seq: int
    event_count: int
    last_event_id: int
    last_hash: str
    at: datetime
    prev: str
    key_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "seq": self.seq,
            "event_count": self.event_count,
            "last_event_id": self.last_event_id,
            "last_hash": self.last_hash,
            "at": format_time(self.at),
            "prev": self.prev,
            "key_id": self.key_id,
        }

    def canonical(self) -> bytes:
        """The exact bytes that are signed and hashed: RFC 8785."""
        return rfc8785.dumps(self.to_json())

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def describe(self) -> str:
        return (
            f"checkpoint #{self.seq} at {format_time(self.at)} covers {self.event_count} events "
            f"up to id {self.last_event_id} hash {self.last_hash}"
        )


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signature: str

    def line(self) -> str:
        """One line of the file sink: RFC 8785 of {"checkpoint": ..., "signature": ...}."""
        return rfc8785.dumps({"checkpoint": self.checkpoint.to_json(), "signature": self.signature}).decode()


def sign_checkpoint(signer: CheckpointSigner, checkpoint: Checkpoint) -> SignedCheckpoint:
    return SignedCheckpoint(checkpoint, signer.sign(checkpoint.canonical()))


class CheckpointFormatError(ValueError):
    pass


def _hex64(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX:
        raise CheckpointFormatError(f"{name} is not 64 lowercase hex digits")
    return value


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CheckpointFormatError(f"{name} is not an integer >= {minimum}")
    return value


def parse_checkpoint(document: Any) -> SignedCheckpoint:
    """A signed checkpoint from a parsed line (the file sink's, or a structured log line's)."""
    if not isinstance(document, dict):
        raise CheckpointFormatError("not a JSON object")
    body, signature = document.get("checkpoint"), document.get("signature")
    if not isinstance(body, dict) or not isinstance(signature, str):
        raise CheckpointFormatError("expected {checkpoint: {...}, signature: ...}")
    expected = {"format", "seq", "event_count", "last_event_id", "last_hash", "at", "prev", "key_id"}
    if set(body) != expected:
        raise CheckpointFormatError(f"checkpoint fields are {sorted(body)}, expected {sorted(expected)}")
    if body["format"] != FORMAT:
        raise CheckpointFormatError(f"unknown format {body['format']!r}")
    if not isinstance(body["at"], str) or not isinstance(body["key_id"], str):
        raise CheckpointFormatError("at and key_id are strings")
    try:
        at = parse_time(body["at"])
    except ValueError as exc:
        raise CheckpointFormatError(f"at is not an RFC 3339 UTC time: {body['at']!r}") from exc
    checkpoint = Checkpoint(
        seq=_count(body["seq"], "seq", 1),
        event_count=_count(body["event_count"], "event_count", 1),
        last_event_id=_count(body["last_event_id"], "last_event_id", 1),
        last_hash=_hex64(body["last_hash"], "last_hash"),
        at=at,
        prev=_hex64(body["prev"], "prev"),
        key_id=body["key_id"],
    )
    if format_time(checkpoint.at) != body["at"]:
        raise CheckpointFormatError(f"at is not in the canonical form: {body['at']!r}")
    return SignedCheckpoint(checkpoint, signature)


@dataclass
class CheckpointLog:
    """What a checkpoint file (or an extract of the structured log) says, once checked by itself:
    every line signed by a known key, and the checkpoints forming one chain."""

    source: str
    checkpoints: list[Checkpoint] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def latest(self) -> Checkpoint | None:
        return max(self.checkpoints, key=lambda c: c.seq, default=None)


def read_checkpoint_log(source: str, text: str, public_keys: dict[str, Ed25519PublicKey]) -> CheckpointLog:
    """Check every line's signature and the chain between them.

    Lines of a structured log that are not `audit.checkpoint` events are skipped (and text lines
    that do not mention a checkpoint), so a witness may be the sink file, a copy of it, or log
    lines exported from wherever logs are kept.

    Two lines may carry the same `seq` and `prev`: a writer whose database commit failed after it
    had written the line retries with the same number. A gap in `seq` (checkpoints written to
    another process's file) is noted; a `prev` that does not match its predecessor is a break.
    """
    result = CheckpointLog(source)
    digests: dict[int, set[str]] = {}
    previous: Checkpoint | None = None
    skipped = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{source} line {number}"
        try:
            document = json.loads(raw)
        except ValueError:
            if '"checkpoint"' in raw:
                result.failures.append(f"{where} is not JSON: the checkpoint line was damaged or edited")
            else:
                skipped += 1  # a log file's other lines (a process's banner, say)
            continue
        if isinstance(document, dict) and "checkpoint" not in document and "event" in document:
            continue  # another structured log line
        try:
            signed = parse_checkpoint(document)
        except CheckpointFormatError as exc:
            result.failures.append(f"{where} is not a checkpoint record: {exc}")
            continue
        checkpoint = signed.checkpoint
        signature_failure = _signature_failure(where, signed, public_keys)
        if signature_failure is not None:
            result.failures.append(signature_failure)
            continue
        _check_chain(result, where, checkpoint, previous, digests)
        digests.setdefault(checkpoint.seq, set()).add(checkpoint.digest)
        result.checkpoints.append(checkpoint)
        previous = checkpoint
    if skipped:
        result.notes.append(f"{skipped} lines of {source} are neither JSON nor checkpoints and were skipped")
    return result


def _signature_failure(where: str, signed: SignedCheckpoint, public_keys: dict[str, Ed25519PublicKey]) -> str | None:
    """Why a line's signature cannot be trusted (an unknown key, or a signature that does not verify), or None."""
    checkpoint = signed.checkpoint
    key = public_keys.get(checkpoint.key_id)
    if key is None:
        return (
            f"{where}: checkpoint #{checkpoint.seq} is signed by key {checkpoint.key_id}, which is not a "
            f"known verification key (pass its public key with --public-key)"
        )
    if not verify_signature(key, checkpoint.canonical(), signed.signature):
        return (
            f"{where}: the signature of checkpoint #{checkpoint.seq} is INVALID: the line was altered "
            f"or not written by the holder of key {checkpoint.key_id}"
        )
    return None


def _check_chain(
    result: CheckpointLog,
    where: str,
    checkpoint: Checkpoint,
    previous: Checkpoint | None,
    digests: dict[int, set[str]],
) -> None:
    """Record in `result` how a correctly signed checkpoint links to the ones read before it."""
    if previous is not None and checkpoint.seq < previous.seq:
        result.failures.append(
            f"{where}: checkpoint #{checkpoint.seq} follows #{previous.seq}: the checkpoint chain goes backwards"
        )
    elif checkpoint.seq == 1 and checkpoint.prev != GENESIS_DIGEST:
        result.failures.append(f"{where}: checkpoint #1 does not start from the genesis digest")
    elif checkpoint.seq - 1 in digests:
        if checkpoint.prev not in digests[checkpoint.seq - 1]:
            result.failures.append(
                f"{where}: checkpoint #{checkpoint.seq} does not chain to checkpoint #{checkpoint.seq - 1} "
                f"(prev {checkpoint.prev}): the checkpoint chain is BROKEN (a rewritten or forked history)"
            )
    elif checkpoint.seq > 1:
        first = previous.seq + 1 if previous is not None else 1
        result.notes.append(
            f"{where}: checkpoints #{first}..#{checkpoint.seq - 1} are not in {result.source} "
            "(written to another sink?); the chain across them is not checked"
        )
    if (
        previous is not None
        and checkpoint.seq > previous.seq
        and (checkpoint.event_count < previous.event_count or checkpoint.last_event_id < previous.last_event_id)
    ):
        result.failures.append(
            f"{where}: checkpoint #{checkpoint.seq} covers fewer events than #{previous.seq} "
            f"({checkpoint.event_count} < {previous.event_count}): the checkpointed chain shrank"
        )
