"""Headless Chromium from the system, driven by Playwright (which downloads no browser of its
own here), opening a local page with the network refused: only ``file:``, ``data:`` and
``blob:`` URLs load, every other request is aborted and recorded."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Route

# Debian's chromium-headless-shell first (the smallest install), then any Chrome or Chromium.
BINARIES = ("chromium-headless-shell", "chromium", "google-chrome", "chromium-browser")
NOT_FOUND = (
    "no Chromium binary found (Debian package chromium-headless-shell, or chromium or "
    "google-chrome on PATH); .ci/run installs it"
)
ARGS = [
    "--no-sandbox",  # CI containers run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # behind the routing: no name resolves either
]
LOCAL = ("file:", "data:", "blob:")
# Before the page's own scripts: count what failed (a script or other resource that did not
# load, an uncaught exception or rejected promise), so that waiting stops at the first one.
WATCH = """window.__failures = 0;
window.addEventListener("error", () => { window.__failures += 1; }, true);
window.addEventListener("unhandledrejection", () => { window.__failures += 1; });"""
# The chart containers and those with a drawn chart inside: [containers, drawn].
COUNT = """([container, mark]) => {
    const all = [...document.querySelectorAll(container)];
    return [all.length, all.filter((c) => c.querySelector(mark) !== null).length];
}"""
# Done waiting: every expected chart drawn, or something failed.
SETTLED = f"""([container, mark, expected]) =>
    ({COUNT})([container, mark])[1] >= expected || window.__failures > 0"""


def chromium_binary() -> Path | None:
    """The first of :data:`BINARIES` on PATH, or None."""
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


@dataclass
class Visit:
    """What a page did with the network refused, and how many of its charts it drew."""

    containers: int = 0
    drawn: int = 0
    refused: list[str] = field(default_factory=list)  # requests aborted: "type url"
    failed: list[str] = field(default_factory=list)  # requests that failed: "type url error"
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


def visit_offline(
    browser: Browser, page_file: Path, container: str, mark: str, expected: int
) -> Visit:
    """Open ``page_file`` in a fresh context with the network refused; wait until ``expected``
    elements matching ``container`` hold an element matching ``mark``, or something fails
    (or 30 s pass), then count."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    visit = Visit()
    context = browser.new_context(service_workers="block")

    def route(route: Route) -> None:
        request = route.request
        if request.url.startswith(LOCAL):
            route.continue_()
        else:
            visit.refused.append(f"{request.resource_type} {request.url}")
            route.abort("internetdisconnected")

    try:
        context.route("**/*", route)
        page = context.new_page()
        page.add_init_script(WATCH)
        page.on(
            "requestfailed",
            lambda r: visit.failed.append(f"{r.resource_type} {r.url} {r.failure}"),
        )
        page.on("console", lambda m: m.type == "error" and visit.errors.append(m.text))
        page.on("pageerror", lambda error: visit.errors.append(str(error)))
        page.goto(page_file.resolve().as_uri(), wait_until="load")
        with contextlib.suppress(PlaywrightTimeout):  # counted below, and asserted on
            page.wait_for_function(SETTLED, arg=[container, mark, expected], timeout=30_000)
        visit.containers, visit.drawn = page.evaluate(COUNT, [container, mark])
    finally:
        context.close()
    return visit
