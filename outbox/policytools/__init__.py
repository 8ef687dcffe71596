"""The policy analysis tools behind `outbox policy check|test|diff|status`: static checks, the
policy test cases, version diffs, the tools' target shapes. They read the policy the way the
runtime engine (`outbox/policy/`) decides it and answer with the same functions; they sit above
the domains because they load the tools and ask the approvals domain who may approve."""
