"""`outbox approvals …`: decide approval requests without Slack (the embedded default).

`--as` names the deciding human. Whoever can run this CLI can read and write the database, so
the identity is not authenticated here; it is parsed into its canonical form (`oncall@example.com`
and `user:OnCall@Example.com` are both `user:oncall@example.com`), recorded, policy-checked like
a Slack click, and audited. Slack calls the decision causes are tried once at once; if Slack is unavailable the
decision still stands and the server retries the message update.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from outbox.approvals.schemas import ApprovalOut
from outbox.cli.context import cli_runtime

approvals_app = typer.Typer(no_args_is_help=True, help="Human approval requests: list, show, approve, deny.")


def _line(approval: ApprovalOut) -> str:
    return (
        f"{approval.id:<40} {approval.status:<10} {approval.approvals}/{approval.quorum:<3} "
        f"{approval.expires_at:%Y-%m-%d %H:%M}  {approval.tool:<16} {approval.agent}"
        + (f" for {approval.on_behalf_of}" if approval.on_behalf_of else "")
    )


def _describe(approval: ApprovalOut) -> str:
    lines = [
        f"approval   {approval.id}  ({approval.status}; action {approval.action_id} is {approval.action_status})",
        f"agent      {approval.agent}" + (f" on behalf of {approval.on_behalf_of}" if approval.on_behalf_of else ""),
        f"reason     {approval.agent_reason or '-'}",
        f"tool       {approval.tool}",
        f"targets    {len(approval.targets)}",
        *(f"           {t.get('act')} {t.get('object')}" for t in approval.targets),
        "preview    "
        + json.dumps(approval.preview if approval.preview is not None else approval.args, indent=2).replace(
            "\n", "\n           "
        ),
        "required   " + "; ".join(str(r.get("rule") or r.get("escalation") or r) for r in approval.rules),
        f"policy     {approval.policy_version}",
        f"quorum     {approval.approvals} of {approval.quorum}",
        f"expires    {approval.expires_at.isoformat()}",
        f"digest     {approval.digest}",
    ]
    for decision in approval.decisions:
        lines.append(
            f"decision   {decision.verdict} by {decision.approver} via {decision.via} at "
            f"{decision.created_at.isoformat()}" + (f": {decision.reason}" if decision.reason else "")
        )
    if approval.action_status_reason:
        lines.append(f"status     {approval.action_status_reason}")
    return "\n".join(lines)


@approvals_app.command("list")
def list_command(
    status: Annotated[str, typer.Option(help="pending, approved, rejected, expired, cancelled or all.")] = "pending",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List approval requests, newest first."""
    from outbox.approvals.service import list_approvals

    with cli_runtime() as runtime, runtime.db.session() as session:
        items = list_approvals(session, status=None if status == "all" else status)
    if as_json:
        for item in items:
            typer.echo(item.model_dump_json())
        return
    typer.echo(f"{'ID':<40} {'STATUS':<10} {'OK':<5} {'EXPIRES':<17} {'TOOL':<16} AGENT")
    for item in items:
        typer.echo(_line(item))


@approvals_app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="Approval id (apr_…) or action id (act_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show everything an approver needs: who asks, for whom, why, every target, the preview."""
    from outbox.approvals.authority import ApprovalRefused
    from outbox.approvals.service import get_approval

    try:
        with cli_runtime() as runtime, runtime.db.session() as session:
            approval = get_approval(session, ref)
    except ApprovalRefused as refusal:
        typer.echo(f"error: {refusal.message}", err=True)
        raise typer.Exit(1) from refusal
    typer.echo(approval.model_dump_json(indent=2) if as_json else _describe(approval))


def _decide(ref: str, identity: str, *, reason: str | None, may_resubmit: bool, digest: str | None) -> None:
    from outbox.approvals.authority import ApprovalRefused
    from outbox.approvals.service import decide
    from outbox.deliveries import service as delivery

    with cli_runtime() as runtime:
        try:
            result = decide(
                runtime,
                ref,
                identity,
                "deny" if reason is not None else "approve",
                via="cli",
                reason=reason,
                may_resubmit=may_resubmit,
                digest=digest,
            )
        except ApprovalRefused as refusal:
            typer.echo(f"refused ({refusal.code.value}): {refusal.message}", err=True)
            raise typer.Exit(1) from refusal
        typer.echo(f"{result.approval.id}: {result.message}")
        if result.deliveries:
            report = delivery.deliver_due(runtime, ids=result.deliveries)
            if report.errors:
                typer.echo(
                    "Slack is unavailable ("
                    + "; ".join(sorted(set(report.errors.values())))
                    + "): the decision stands; the message update is queued and will be retried.",
                    err=True,
                )


@approvals_app.command("approve")
def approve_command(
    ref: Annotated[str, typer.Argument(help="Approval id (apr_…) or action id (act_…).")],
    identity: Annotated[
        str, typer.Option("--as", help="Who approves: an e-mail address, user:<name> or slack:<user id>.")
    ],
    digest: Annotated[str | None, typer.Option(help="Refuse unless the request still has this digest.")] = None,
) -> None:
    """Approve as a named human (checked against the approver policy)."""
    _decide(ref, identity, reason=None, may_resubmit=False, digest=digest)


@approvals_app.command("deny")
def deny_command(
    ref: Annotated[str, typer.Argument(help="Approval id (apr_…) or action id (act_…).")],
    identity: Annotated[
        str, typer.Option("--as", help="Who denies: an e-mail address, user:<name> or slack:<user id>.")
    ],
    reason: Annotated[str, typer.Option(help="Why; the agent receives it verbatim.")],
    may_resubmit: Annotated[
        bool, typer.Option("--may-resubmit", help="Tell the agent it may ask again after changing the call.")
    ] = False,
    digest: Annotated[str | None, typer.Option(help="Refuse unless the request still has this digest.")] = None,
) -> None:
    """Deny as a named human, with a reason the agent receives."""
    if not reason.strip():
        typer.echo("error: --reason must not be empty", err=True)
        raise typer.Exit(2)
    _decide(ref, identity, reason=reason, may_resubmit=may_resubmit, digest=digest)
