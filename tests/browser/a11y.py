"""Accessibility and phone-width checks for the browser tests: axe-core (vendored, test-only)
and the page's sideways overflow, each returning findings precise enough to fix from the
failure message alone (rule, help, the CSS selectors of the offending elements).

The pages' CSP (script-src 'self') refuses an injected script: open pages to check in a
context made by `a11y_context` (bypass_csp=True), used for nothing else.
"""
from __future__ import annotations

from pathlib import Path

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = ("serious", "critical")

_RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target.join(" "), summary: (n.failureSummary || "").split("\\n").slice(1, 3).join(" ")})),
  }));
}"""

# The elements sticking out past the right edge of the window, outermost first: what makes
# a page scroll sideways, named by a short CSS path.
_OVERFLOW = """() => {
  const width = window.innerWidth;
  const name = el => {
    const parts = [];
    for (let e = el; e && e.nodeType === 1 && parts.length < 4; e = e.parentElement) {
      let part = e.tagName.toLowerCase();
      if (e.id) { parts.unshift(part + "#" + e.id); break; }
      if (e.classList.length) part += "." + Array.from(e.classList).slice(0, 2).join(".");
      parts.unshift(part);
    }
    return parts.join(" > ");
  };
  const offenders = [];
  for (const el of document.body.querySelectorAll("*")) {
    const right = el.getBoundingClientRect().right + window.scrollX;
    if (right <= width + 0.5) continue;
    // Content inside a box that scrolls or clips by itself does not widen the page.
    let clipped = false;
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const overflowX = getComputedStyle(p).overflowX;
      if (overflowX !== "visible") { clipped = true; break; }
    }
    if (clipped || offenders.some(o => o.el.contains(el))) continue;
    offenders.push({el, right: Math.round(right)});
  }
  return {
    overflow: document.documentElement.scrollWidth - width,
    offenders: offenders.slice(0, 5).map(o => `${name(o.el)} (right edge at ${o.right} px)`),
  };
}"""


def a11y_context(browser, *, viewport: dict, cookies: list[dict] | None = None):  # noqa: ANN001, ANN201
    """A browser context that may inject axe-core (bypass_csp), with the given cookies."""
    context = browser.new_context(bypass_csp=True, viewport=viewport)
    if cookies:
        context.add_cookies(cookies)
    return context


def axe_violations(page, *, impacts: tuple[str, ...] = BLOCKING_IMPACTS) -> list[dict]:  # noqa: ANN001
    """The axe-core violations of the page as loaded, of the given impacts (serious and
    critical by default): [{id, impact, help, helpUrl, nodes: [{target, summary}]}]."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    return [v for v in page.evaluate(_RUN_AXE) if v["impact"] in impacts]


def describe_violations(where: str, violations: list[dict]) -> str:
    """One line per rule and up to five offending elements each: what to fix, and where."""
    lines = []
    for v in violations:
        lines.append(f"{where}: [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"][:5]:
            lines.append(f"    at {node['target']}" + (f" — {node['summary']}" if node["summary"] else ""))
        if len(v["nodes"]) > 5:
            lines.append(f"    … and {len(v['nodes']) - 5} more")
    return "\n".join(lines)


def assert_no_serious_violations(page, where: str) -> None:  # noqa: ANN001
    """Fails with every serious or critical axe-core violation of the page, its rule id,
    help text and the selectors of the elements at fault."""
    violations = axe_violations(page)
    assert not violations, "axe-core found serious/critical violations:\n" + describe_violations(where, violations)


def sideways_overflow(page) -> tuple[int, list[str]]:  # noqa: ANN001
    """How many pixels the page scrolls sideways at its current width (0 or less: none),
    and the outermost elements that stick out past the window's right edge."""
    found = page.evaluate(_OVERFLOW)
    return found["overflow"], found["offenders"]
