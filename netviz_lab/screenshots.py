"""README screenshots of a running netviz service's Dagster UI (`python -m netviz_lab screenshots`).

Read-only: the pages are only looked at (GraphQL queries, no mutation, nothing is launched). Drives
Debian's Chromium (`/usr/bin/chromium`) headless through the `playwright` package (extra `docs`):
Playwright's own browser download is not needed, and not reachable here.

- `asset-graph.png`: the global asset lineage (`/asset-groups`) with every group expanded, Dagster's
  navigation and the asset sidebar hidden, fitted to the view.
- `netflow-check.png`: the `netflow_arriving` check of `router_softflowd` (asset page, Checks tab), its
  latest evaluation's metadata (one line per router) in view.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import quote, urlencode

import requests

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying Google services, which this closed
# network refuses. Playwright gives every launch a fresh temporary profile (its own --user-data-dir,
# deleted when the browser closes), so nothing persists between runs.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
ASSET, CHECK = "router_softflowd", "netflow_arriving"
TIMEOUT_MS = 60_000

GROUPS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  locationOrLoadError { __typename ... on RepositoryLocation { repositories { assetGroups { groupName } } } } } } } }"""
CHECK_QUERY = """query ($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename ... on AssetNode {
  assetChecksOrError { __typename ... on AssetChecks { checks { name executionForLatestMaterialization {
    evaluation { metadataEntries { label } } } } } } } } }"""


def _base(url: str) -> str:
    return url.rstrip("/")


def graph_group_id(group: str) -> str:
    """The asset graph's id for a group (Dagster UI, asset-graph/Utils.tsx `groupIdForNode`, default flags)."""
    return f"global@global:{group}"


def asset_graph_url(url: str, groups: list[str]) -> str:
    """The global asset lineage with these groups expanded (query `expanded`, comma separated)."""
    page = f"{_base(url)}/asset-groups"
    if not groups:
        return page
    return page + "?" + urlencode({"expanded": ",".join(graph_group_id(g) for g in sorted(set(groups)))},
                                  safe="@:,")


def check_url(url: str, asset: str = ASSET, check: str = CHECK) -> str:
    """An asset's Checks tab with one check selected (ui-core `assetDetailsPathForAssetCheck`)."""
    path = "/".join(quote(part, safe="") for part in asset.split("/"))
    return f"{_base(url)}/assets/{path}?" + urlencode({"view": "checks", "checkDetail": check})


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    resp = requests.post(f"{_base(url)}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    resp.raise_for_status()
    body = resp.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors from {url}: {body['errors']}")
    return body["data"]


def asset_groups(url: str) -> list[str]:
    data = _graphql(url, GROUPS_QUERY)["workspaceOrError"]
    if data["__typename"] != "Workspace":
        raise RuntimeError(f"{url}: workspace not loaded ({data['__typename']})")
    return sorted({g["groupName"] for entry in data["locationEntries"]
                   if (loc := entry["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
                   for repo in loc["repositories"] for g in repo["assetGroups"]})


def latest_metadata_labels(url: str, asset: str = ASSET, check: str = CHECK) -> list[str]:
    """The metadata labels of the check's latest evaluation, as the UI's Checks tab shows them."""
    node = _graphql(url, CHECK_QUERY, {"key": {"path": asset.split("/")}})["assetNodeOrError"]
    if node["__typename"] != "AssetNode":
        raise RuntimeError(f"{url}: no asset {asset} ({node['__typename']})")
    checks = node["assetChecksOrError"]
    for c in checks.get("checks") or []:
        if c["name"] == check:
            evaluation = (c["executionForLatestMaterialization"] or {}).get("evaluation") or {}
            return [m["label"] for m in evaluation.get("metadataEntries") or []]
    raise RuntimeError(f"{url}: asset {asset} has no check {check}")


def _settle(page) -> None:
    """Wait for the UI's queries to finish (it polls every 15 s, so idle comes between polls)."""
    with contextlib.suppress(Exception):  # a poll landing at the wrong moment only costs the timeout
        page.wait_for_load_state("networkidle", timeout=15_000)


def _hide_navigation(page) -> None:
    nav = page.get_by_text("Hide navigation", exact=True)
    if nav.count() and nav.first.is_visible():
        nav.first.click()


def _graph_rects(page) -> dict | None:
    """Screen rectangles of the rendered graph (its <svg>), its viewport and the toolbar over it."""
    return page.evaluate("""(name) => {
      const svg = [...document.querySelectorAll('svg')].find((e) => e.textContent.includes(name));
      const viewport = svg && svg.parentElement && svg.parentElement.parentElement;
      if (!viewport) return null;
      const box = (e) => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
      const search = document.querySelector("input[placeholder^='Search and filter']");
      // The drawn content (nodes, group boxes, edges): the <svg> itself has empty margins.
      const parts = [...svg.children].map((e) => e.getBoundingClientRect()).filter((b) => b.width && b.height);
      const x0 = Math.min(...parts.map((b) => b.left)), y0 = Math.min(...parts.map((b) => b.top));
      const content = {x: x0, y: y0, w: Math.max(...parts.map((b) => b.right)) - x0,
                       h: Math.max(...parts.map((b) => b.bottom)) - y0};
      return {graph: parts.length ? content : box(svg), scale: svg.getBoundingClientRect().width / Number(svg.getAttribute('width')),
              viewport: box(viewport), toolbar_bottom: search ? search.getBoundingClientRect().bottom : 0};
    }""", ASSET)


def fit_graph(page, margin: int = 24, controls: int = 56) -> None:
    """Fit the whole graph into the free part of the viewport, centred (below the search toolbar,
    left of the zoom controls). Dagster's own fit (double-click, `autocenter`) fits the width only."""
    page.mouse.move(1, VIEWPORT["height"] - 1)
    for _ in range(12):
        r = _graph_rects(page)
        if not r:
            return
        g, v = r["graph"], r["viewport"]
        top = max(v["y"], r["toolbar_bottom"]) + margin
        free = {"x": v["x"] + margin, "y": top, "w": v["w"] - 2 * margin - controls, "h": v["y"] + v["h"] - margin - top}
        ratio = min(free["w"] / g["w"], free["h"] / g["h"], 1.0 / r["scale"])  # not past 100 %
        centre = (g["x"] + g["w"] / 2, g["y"] + g["h"] / 2)
        if abs(ratio - 1) > 0.005:  # ctrl+wheel zooms about the cursor: scale * (1 - deltaY * 0.01), |deltaY| <= 30
            page.mouse.move(*centre)
            page.keyboard.down("Control")
            page.mouse.wheel(0, max(-30.0, min(30.0, (1 - ratio) / 0.01)))
            page.keyboard.up("Control")
            page.wait_for_timeout(150)
            continue
        dx = free["x"] + free["w"] / 2 - centre[0]
        dy = free["y"] + free["h"] / 2 - centre[1]
        if abs(dx) < 2 and abs(dy) < 2:
            break
        page.mouse.move(*centre)  # a plain wheel pans by -0.7 * delta
        page.mouse.wheel(-dx / 0.7, -dy / 0.7)
        page.wait_for_timeout(150)
    page.mouse.move(1, VIEWPORT["height"] - 1)  # no hover highlight in the picture


def shoot_asset_graph(page, url: str, out: Path) -> str:
    groups = asset_groups(url)
    target = asset_graph_url(url, groups)
    page.goto(target, wait_until="domcontentloaded")
    # Asset nodes (not only group boxes) carry the asset's name once the layout is rendered.
    page.get_by_text(ASSET, exact=True).first.wait_for(state="visible", timeout=TIMEOUT_MS)
    _hide_navigation(page)
    hide = page.locator("button:has([aria-label='panel_show_right'])")  # the asset sidebar's "Hide sidebar"
    if hide.count():
        hide.first.click()
    _settle(page)
    fit_graph(page)
    page.get_by_text(ASSET, exact=True).first.wait_for(state="visible", timeout=TIMEOUT_MS)
    _settle(page)
    page.screenshot(path=str(out))
    return target


def shoot_check(page, url: str, out: Path) -> str:
    labels = latest_metadata_labels(url)
    if not labels:
        raise SystemExit(f"{ASSET}/{CHECK} has no evaluation with metadata yet: let the sensor run first")
    target = check_url(url)
    page.goto(target, wait_until="domcontentloaded")
    page.get_by_text("Latest execution", exact=True).first.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.get_by_text(labels[0], exact=True).first.wait_for(state="visible", timeout=TIMEOUT_MS)
    _hide_navigation(page)
    _settle(page)
    page.get_by_text(labels[-1], exact=True).first.scroll_into_view_if_needed()
    page.mouse.move(0, VIEWPORT["height"] - 1)
    page.screenshot(path=str(out))
    return target


def take(url: str, out_dir: str | Path, chromium: str = CHROMIUM) -> list[tuple[Path, str]]:
    """Both screenshots into out_dir; returns (file, page URL) pairs."""
    try:
        from playwright.sync_api import sync_playwright  # extra `docs`: only this command needs it
    except ImportError:
        raise SystemExit("playwright missing: pip install -e '.[docs]' (or `make screenshots`)") from None

    if not Path(chromium).exists():
        raise SystemExit(f"{chromium} missing: apt-get install chromium (or `make screenshots`)")
    requests.get(f"{_base(url)}/server_info", timeout=10).raise_for_status()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for name, shoot in (("asset-graph.png", shoot_asset_graph), ("netflow-check.png", shoot_check)):
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(TIMEOUT_MS)
                done.append((out / name, shoot(page, url, out / name)))
                page.close()
        finally:
            browser.close()
    return done
