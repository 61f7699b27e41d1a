// Polls a JSON progress endpoint for elements with data-progress-url and updates them
// until the job reaches a final state, then reloads so the full result list shows.
// The bar, the "done / total" line and every [data-count] number are set from the same
// answer, so they never disagree; [data-announce] (aria-live) speaks a short summary when
// the status changes and at every tenth of the way, not at every poll.
(function () {
  const FINAL = new Set(["done", "failed"]);
  const number = function (n) { return typeof n === "number" ? n.toLocaleString("en-US") : String(n); };
  document.querySelectorAll("[data-progress-url]").forEach(function (box) {
    const url = box.dataset.progressUrl;
    if (FINAL.has(box.dataset.status)) return;
    let spoken = { status: box.dataset.status, tenth: -1 };
    const announce = function (p) {
      const live = box.querySelector("[data-announce]");
      const tenth = Math.floor(p.percent / 10);
      if (!live || (p.status === spoken.status && tenth === spoken.tenth)) return;
      spoken = { status: p.status, tenth: tenth };
      let text = p.status_label + ": " + number(p.done) + " of " + number(p.total) + " files";
      if ("ok" in p) text += ", " + number(p.ok) + " ingested, " + number(p.failed) + " rejected";
      live.textContent = text + ".";
    };
    const tick = function () {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (p) {
        const bar = box.querySelector(".progress > div");
        if (bar) bar.style.width = p.percent + "%";
        const meter = box.querySelector("[role=progressbar]");
        if (meter) {
          meter.setAttribute("aria-valuenow", String(p.percent));
          meter.setAttribute("aria-valuetext", p.percent + "% (" + number(p.done) + " of " + number(p.total) + " files)");
        }
        const text = box.querySelector(".progress-text");
        const words = p.status_label + ": " + number(p.done) + " / " + number(p.total) + " files";
        // Only a changed text is written: where it is a live region, an unchanged one would be read out again.
        if (text && text.textContent !== words) text.textContent = words;
        box.querySelectorAll("[data-count]").forEach(function (el) {
          if (el.dataset.count in p) el.textContent = number(p[el.dataset.count]);
        });
        announce(p);
        if (FINAL.has(p.status)) { window.location.reload(); } else { setTimeout(tick, 2000); }
      }).catch(function () { setTimeout(tick, 5000); });
    };
    setTimeout(tick, 1000);
  });
})();
