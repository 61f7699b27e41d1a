// A box that scrolls by itself (a wide table on a phone, the agreement text) must be reachable
// from the keyboard: it gets a tab stop while it overflows, and wrappers a name to announce.
(function () {
  const SELECTOR = ".table-scroll, .dua, main table";
  const nameOf = function (box) {
    const card = box.closest(".card, section, main");
    const heading = card && card.querySelector("h1, h2, h3");
    return box.dataset.label || (heading ? heading.textContent.trim() : "") || "Scrollable content";
  };
  const update = function () {
    document.querySelectorAll(SELECTOR).forEach(function (box) {
      const scrolls = box.scrollWidth > box.clientWidth || box.scrollHeight > box.clientHeight;
      if (scrolls && !box.hasAttribute("tabindex")) {
        box.setAttribute("tabindex", "0");
        box.dataset.scrollStop = "1";
        if (box.tagName !== "TABLE") {  // a table keeps its own role
          box.setAttribute("role", "region");
          box.setAttribute("aria-label", nameOf(box));
        }
      } else if (!scrolls && box.dataset.scrollStop) {
        box.removeAttribute("tabindex");
        delete box.dataset.scrollStop;
      }
    });
  };
  update();
  let pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(update, 150);
  });
})();
