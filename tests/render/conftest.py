from __future__ import annotations

import pytest

from tests import support

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, driven by playwright-python (never a downloaded browser)."""
    executable = support.chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        support.missing("playwright-python is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A page that records console errors and uncaught exceptions."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))

    def open(self, path):
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_function("window.cloudprof && window.cloudprof.ready")
        return self.page

    def js(self, expression, arg=None):
        return self.page.evaluate(expression, arg)

    def settle(self):
        """Wait until pending redraws (coalesced into animation frames) have run."""
        self.js("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def pixel(self, x, y):
        self.settle()
        return self.js("""([x, y]) => { const c = document.getElementById('cp-canvas'), r = window.devicePixelRatio || 1;
                      return Array.from(c.getContext('2d').getImageData(Math.round(x * r), Math.round(y * r), 1, 1).data).slice(0, 3); }""",
                       [x, y])

    def click_node(self, index):
        rect = self.js("i => window.cloudprof.rectOf(i)", index)
        box = self.page.locator("#cp-canvas").bounding_box()
        self.page.mouse.click(box["x"] + rect["x"] + rect["w"] / 2, box["y"] + rect["y"] + rect["h"] / 2)
        return rect

    def hover_node(self, index):
        rect = self.js("i => window.cloudprof.rectOf(i)", index)
        box = self.page.locator("#cp-canvas").bounding_box()
        self.page.mouse.move(box["x"] + rect["x"] + min(rect["w"] / 2, 40), box["y"] + rect["y"] + rect["h"] / 2)
        return rect


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, offline=True)
    try:
        yield Page(context.new_page())
    finally:
        context.close()
