from tests.approvals.support import approver_policy, callback_receiver, fake_slack, gate_runtime, slack_runtime

__all__ = ["approver_policy", "callback_receiver", "fake_slack", "gate_runtime", "slack_runtime"]
