"""The built-in tool providers: HTTP requests, command tools, mail.

The composition root (`Runtime.build`) and the policy analysis tools hand this list to the
registry (`outbox/toolkit/registry.py`), which itself knows no tool.
"""

from __future__ import annotations

from outbox.commands.provider import provide_command_tools
from outbox.mail.provider import provide_mail_tools
from outbox.toolkit.registry import ToolProvider
from outbox.tools.http_request import provide_http_tools

BUILTIN_PROVIDERS: tuple[ToolProvider, ...] = (provide_http_tools, provide_command_tools, provide_mail_tools)
