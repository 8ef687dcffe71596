"""Screenshots of the web console for the README: the inbox and one approval page.

Against a running server where the approver has at least one request waiting (the password is
read from stdin, so it stays out of the shell's history and the process list):

    echo 'correct horse battery staple' | .venv/bin/python scripts/console_screenshots.py \
        --url http://127.0.0.1:8000 --email lead@example.com --match "November news" --out docs/console

Drives Debian's chromium (/usr/bin/chromium) through Playwright; no browser is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playwright.sync_api import ViewportSize, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# Wide enough for the inbox's columns, short enough that the approval page's preview is in view.
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--email", required=True, help="an approver's address (password on stdin)")
    parser.add_argument("--match", required=True, help="text in the inbox card of the request to open")
    parser.add_argument("--out", type=Path, default=Path("docs/console"), help="where the PNGs go")
    args = parser.parse_args()
    password = sys.stdin.readline().removesuffix("\n")
    args.out.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{args.url}/console/sign-in")
        page.get_by_label("E-mail address").fill(args.email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        row = page.locator("li.card").filter(has_text=args.match)
        expect(row).to_be_visible()
        page.screenshot(path=str(args.out / "inbox.png"), full_page=True)
        row.get_by_role("link").first.click()
        page.locator("iframe.email-frame, #dry-run-output, #http-request").first.scroll_into_view_if_needed()
        page.evaluate("window.scrollTo(0, 0)")
        expect(page.get_by_role("button", name="Approve")).to_be_visible()
        page.screenshot(path=str(args.out / "approval.png"), full_page=True)
        browser.close()
    sys.stdout.write(f"wrote {args.out / 'inbox.png'} and {args.out / 'approval.png'}\n")


if __name__ == "__main__":
    main()
