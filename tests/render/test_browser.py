"""The flame graph and diff pages in real headless Chromium: load clean, zoom, search, hover, toggles, colours."""

from __future__ import annotations

import re

import pytest

from cloudprof.pprof import ProfileBuilder, decode
from cloudprof.query import compile_search, diff_tree, tree_of
from cloudprof.render import render_diff_html, render_flamegraph_html
from tests import support
from tests.query import data

RED_SHIFTED = lambda rgb: rgb[0] > 150 and rgb[0] > rgb[1] + 80 and rgb[0] > rgb[2] + 80  # noqa: E731
BLUE_SHIFTED = lambda rgb: rgb[2] > 150 and rgb[2] > rgb[0] + 60  # noqa: E731


def known_profile(version="2.0", weight=3):
    raw, _totals, _threads = data.window_profile(1_764_079_200_000, version=version, weight=weight)
    return decode(raw)


@pytest.fixture(scope="module")
def flame_file():
    tree = tree_of([known_profile()])
    path = support.artifact_path("flamegraph-small.html")
    path.write_text(render_flamegraph_html(tree, title="checkout \u00b7 cpu", facts=[("range", "2026-11-25 14:00 \u2192 15:00 UTC")]))
    return path, tree


@pytest.fixture(scope="module")
def diff_file():
    tree = diff_tree(known_profile("1.0", 4), known_profile("2.0", 3))
    path = support.artifact_path("diff.html")
    path.write_text(render_diff_html(tree, title="checkout \u00b7 diff", facts=[("base", "v1.0"), ("target", "v2.0")]))
    return path, tree


def test_page_loads_offline_with_no_console_errors(page, flame_file):
    path, tree = flame_file
    p = page.open(path)
    assert page.errors == []
    assert p.title() == "checkout \u00b7 cpu"
    assert page.js("window.cloudprof.drawnFrames()") == len(tree)
    assert "3 functions" not in p.inner_text("#cp-table-note")
    assert page.js("window.cloudprof.tableRows()[0]") == "pricing.slow_rule"  # biggest self first
    p.screenshot(path=str(support.artifact_path("flamegraph-small.png")))


def test_clicking_a_frame_zooms_and_reset_restores(page, flame_file):
    path, _ = flame_file
    p = page.open(path)
    node = page.js("window.cloudprof.findNode('pricing.apply_discounts')")
    before = page.js("i => window.cloudprof.rectOf(i)", node)
    width = page.js("window.cloudprof.rectOf(0).w")
    assert before["w"] < width * 0.6
    page.click_node(node)
    assert page.js("window.cloudprof.state.focus") == node
    after = page.js("i => window.cloudprof.rectOf(i)", node)
    assert after["x"] == 0 and after["w"] == pytest.approx(width)
    child = page.js("window.cloudprof.findNode('pricing.slow_rule')")
    assert page.js("i => window.cloudprof.rectOf(i).w", child) > 0.5 * width  # its child grew with it
    sibling = page.js("window.cloudprof.findNode('db.query')")
    assert page.js("i => window.cloudprof.rectOf(i)", sibling) is None  # outside the zoomed subtree
    assert "pricing.apply_discounts" in p.inner_text("#cp-crumb")
    p.screenshot(path=str(support.artifact_path("flamegraph-zoomed.png")))
    p.click("#cp-reset")
    assert page.js("window.cloudprof.state.focus") == 0
    assert page.js("i => window.cloudprof.rectOf(i)", node) == before
    page.click_node(node)
    p.keyboard.press("Escape")  # Esc resets too
    assert page.js("window.cloudprof.state.focus") == 0
    p.keyboard.press("/")  # and / jumps to the search box
    assert page.js("document.activeElement.id") == "cp-search"
    assert page.errors == []


def test_search_highlights_matches_and_reports_their_share(page, flame_file):
    path, tree = flame_file
    p = page.open(path)
    p.fill("#cp-search", "pricing")
    p.wait_for_function("window.cloudprof.state.matched !== null")
    expected = tree.match_share(compile_search("pricing"))
    assert page.js("window.cloudprof.state.matchShare") == pytest.approx(expected)
    assert f"Matched {expected * 100:.1f}%" in p.inner_text("#cp-match")
    hit = page.js("window.cloudprof.findNode('pricing.slow_rule')")
    miss = page.js("window.cloudprof.findNode('db.query')")
    hit_rect = page.js("i => window.cloudprof.rectOf(i)", hit)
    miss_rect = page.js("i => window.cloudprof.rectOf(i)", miss)
    assert page.pixel(hit_rect["x"] + hit_rect["w"] / 2, hit_rect["y"] + 1) == [181, 23, 158]
    assert page.pixel(miss_rect["x"] + miss_rect["w"] / 2, miss_rect["y"] + 1) == [226, 228, 232]
    rows = p.locator("#cp-table tbody tr.hit")
    assert rows.count() == 2
    p.screenshot(path=str(support.artifact_path("flamegraph-search.png")))
    # A regular expression, then a bad one: reported, not thrown.
    p.check("#cp-regex")
    p.fill("#cp-search", r"^json\.")
    p.wait_for_function("window.cloudprof.state.search === '^json\\\\.'")
    assert page.js("window.cloudprof.state.matchShare") == pytest.approx(tree.match_share(re.compile(r"^json\.")))
    p.fill("#cp-search", "(")
    p.wait_for_function("window.cloudprof.state.searchError !== ''")
    assert p.inner_text("#cp-match") == "bad regex"
    assert page.errors == []


def test_hover_shows_self_total_share_and_file_line(page, flame_file):
    path, _ = flame_file
    p = page.open(path)
    node = page.js("window.cloudprof.findNode('pricing.slow_rule')")
    page.hover_node(node)
    tip = p.locator("#cp-tip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert "pricing.slow_rule" in text and "app/pricing.py:60" in text
    assert re.search(r"Self\s+240\.0 ms \(40\.0%\)", text), text
    assert re.search(r"Total\s+240\.0 ms \(40\.0%\)", text), text
    p.screenshot(path=str(support.artifact_path("flamegraph-hover.png")))


def test_icicle_toggle_sample_type_switch_and_sortable_table(page, flame_file):
    path, tree = flame_file
    p = page.open(path)
    assert page.js("window.cloudprof.rectOf(0).y") > 0  # flame: root at the bottom
    p.click("#cp-mode button[data-mode=icicle]")
    assert page.js("window.cloudprof.state.mode") == "icicle"
    assert page.js("window.cloudprof.rectOf(0).y") == 0
    assert page.pixel(10, 1) == [190, 196, 204]  # the root row is drawn at the top now
    wall = tree.types.index("wall/nanoseconds")
    p.select_option("#cp-type", str(wall))
    assert page.js("window.cloudprof.state.type") == wall
    assert "wall" in p.inner_text("#cp-meta") and "720.0 ms" in p.inner_text("#cp-meta")
    p.click("#cp-table th[data-k=total]")
    totals = [s.name for s in tree.function_stats("wall")]
    assert page.js("window.cloudprof.tableRows()")[:3] == totals[:3]
    p.click("#cp-table th[data-k=name]")
    names = page.js("window.cloudprof.tableRows()")
    assert names == sorted(names, key=str.lower)
    p.locator("#cp-table tbody tr").first.click()  # a row click searches for that function
    assert page.js("window.cloudprof.state.search") == "^" + re.escape(names[0]).replace("\\_", "_") + "$"
    assert page.errors == []


def test_diff_page_colours_the_regression_red_and_shrinkage_blue(page, diff_file):
    path, tree = diff_file
    p = page.open(path)
    assert page.errors == []
    assert page.js("window.cloudprof.diff") is True
    grew = page.js("window.cloudprof.findNode('pricing.slow_rule')")
    shrank = page.js("window.cloudprof.findNode('sqlalchemy.orm.Query.all')")
    assert page.js("i => window.cloudprof.delta(i)", grew) > 0.3
    g, s = (page.js("i => window.cloudprof.rectOf(i)", n) for n in (grew, shrank))
    assert RED_SHIFTED(page.pixel(g["x"] + g["w"] / 2, g["y"] + 1)), page.pixel(g["x"] + g["w"] / 2, g["y"] + 1)
    assert BLUE_SHIFTED(page.pixel(s["x"] + s["w"] / 2, s["y"] + 1)), page.pixel(s["x"] + s["w"] / 2, s["y"] + 1)
    assert page.js("window.cloudprof.tableRows()[0]") == "pricing.slow_rule"  # the biggest mover leads
    page.hover_node(grew)
    text = p.locator("#cp-tip").inner_text()
    assert "+" in text and "pp" in text and "Base total" in text
    p.screenshot(path=str(support.artifact_path("diff.png")))
    p.click("#cp-layout button[data-set='0']")  # lay out by base: the new function has no width there
    assert page.js("window.cloudprof.state.set") == 0
    assert page.js("i => window.cloudprof.rectOf(i).w", grew) == 0


@pytest.mark.slow
def test_fifty_thousand_frames_stay_interactive(page):
    builder = ProfileBuilder()
    stacks = data.synthetic_stacks(6000, functions=600, depth=(8, 24))
    for i, stack in enumerate(stacks):
        n = 1 + (i * 7919) % 50
        builder.add_frames(list(reversed(stack)), [n, n * data.PERIOD, n * data.PERIOD])
    tree = tree_of([builder.build()])
    assert len(tree) >= 50_000
    path = support.artifact_path("flamegraph-50k.html")
    path.write_text(render_flamegraph_html(tree, title="50,000 frames"))
    p = page.open(path)
    assert page.errors == []
    timing = page.js("""() => { const t0 = performance.now();
        for (let k = 0; k < 10; k++) { window.cloudprof.setMode(k % 2 ? 'icicle' : 'flame'); }
        return new Promise(r => requestAnimationFrame(() => r(performance.now() - t0))); }""")
    print(f"50k frames: {len(tree)} nodes, redraw after 10 toggles {timing:.0f} ms")
    p.fill("#cp-search", "fn_1")
    p.wait_for_function("window.cloudprof.state.matched !== null")
    assert page.js("window.cloudprof.state.matchShare") == pytest.approx(tree.match_share(compile_search("fn_1")))
    node = page.js("window.cloudprof.findNode('views.fn_0')")
    page.click_node(node)
    assert page.js("window.cloudprof.state.focus") == node
    p.screenshot(path=str(support.artifact_path("flamegraph-50k.png")))
    assert page.errors == []


@pytest.mark.parametrize("name", ["python-cpu-sdk-pyroscope.pb.gz", "java-cpu-asyncprofiler-pyroscope.pb.gz",
                                  "go-heap-flameshow.pb.gz"])
def test_third_party_profiles_render(page, testdata, name):
    tree = tree_of([decode((testdata / "pprof" / name).read_bytes())])
    path = support.artifact_path(f"third-party-{name.split('.')[0]}.html")
    path.write_text(render_flamegraph_html(tree, title=name))
    p = page.open(path)
    assert page.errors == []
    assert page.js("window.cloudprof.drawnFrames()") > 1
    kinds = [o.split(" ")[0] for o in p.locator("#cp-type option").all_inner_texts()]
    assert kinds and all(t.split("/")[0] in kinds or tree.grand_total(i) == 0 for i, t in enumerate(tree.types))
    p.screenshot(path=str(support.artifact_path(f"third-party-{name.split('.')[0]}.png")))


def test_hostile_frame_names_stay_text(page):
    evil = "</script><script>window.pwned=1</script><img src=x onerror=window.pwned=2>{{data}}"
    builder = ProfileBuilder()
    builder.add_frames([(evil, "<b>x.py</b>", 1, 1), ("main", "m.py", 1, 1)], [1, 10, 10])
    tree = tree_of([builder.build()])
    path = support.artifact_path("hostile-names.html")
    path.write_text(render_flamegraph_html(tree, title=evil))
    p = page.open(path)
    assert page.errors == []
    assert page.js("window.pwned === undefined")
    assert page.js("window.cloudprof.tableRows()")[0] in (evil, "main")
    assert evil in page.js("window.cloudprof.tableRows()")
    assert p.title() == evil


def test_page_works_served_from_s3_with_nothing_else_fetched(browser, flame_file, moto_server):
    """The page as an object on (moto's) S3, opened over HTTP; every other request is refused and recorded."""
    path, _ = flame_file
    bucket = moto_server.new_bucket("pages")
    moto_server.client().put_object(Bucket=bucket, Key="reports/flamegraph.html", Body=path.read_bytes(),
                                    ContentType="text/html; charset=utf-8")
    # A presigned GET, the way a report is shared from a private bucket.
    url = moto_server.client().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "reports/flamegraph.html"},
                                                      ExpiresIn=600)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        other: list[str] = []
        context.route("**/*", lambda route: route.continue_() if route.request.url == url
                      else (other.append(route.request.url), route.abort()))
        from tests.render.conftest import Page

        page = Page(context.new_page())
        page.page.goto(url)
        page.page.wait_for_function("window.cloudprof && window.cloudprof.ready")
        assert other == [] or other == [f"{moto_server.endpoint_url}/favicon.ico"]
        assert [e for e in page.errors if "favicon" not in e] == []
        assert page.js("window.cloudprof.drawnFrames()") > 5
    finally:
        context.close()
