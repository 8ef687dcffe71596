"""What a tool is (`base.py`: the contract, its optional capabilities, outcomes) and how the tools
of a policy directory are loaded (`registry.py`). A foundation: the policy engine and every domain
that provides tools build on it; the tools themselves live in their domains and `outbox/tools/`."""
