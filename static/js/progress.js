// Polls a JSON progress endpoint for elements with data-progress-url and updates them
// until the job reaches a final state, then reloads so the full result list shows.
// The bar (role="progressbar") carries the percentage for screen readers; the text beside
// it is a polite live region, so each change is read out without moving focus.
(function () {
  const FINAL = new Set(["done", "failed"]);
  document.querySelectorAll("[data-progress-url]").forEach(function (box) {
    const url = box.dataset.progressUrl;
    if (FINAL.has(box.dataset.status)) return;
    const tick = function () {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (p) {
        const meter = box.querySelector(".progress");
        if (meter) {
          meter.setAttribute("aria-valuenow", String(p.percent));
          meter.setAttribute("aria-valuetext", p.percent + "% (" + p.done + " of " + p.total + " files)");
        }
        const bar = box.querySelector(".progress > div");
        if (bar) bar.style.width = p.percent + "%";
        const text = box.querySelector(".progress-text");
        const words = p.status_label + ": " + p.done + " / " + p.total + " files";
        // Only a changed text is written: an unchanged one would be announced again.
        if (text && text.textContent !== words) text.textContent = words;
        if (FINAL.has(p.status)) { window.location.reload(); } else { setTimeout(tick, 2000); }
      }).catch(function () { setTimeout(tick, 5000); });
    };
    setTimeout(tick, 1000);
  });
})();
