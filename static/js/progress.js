// Polls a JSON progress endpoint for elements with data-progress-url and updates them
// until the job reaches a final state, then reloads so the full result list shows.
(function () {
  const FINAL = new Set(["done", "failed"]);
  document.querySelectorAll("[data-progress-url]").forEach(function (box) {
    const url = box.dataset.progressUrl;
    if (FINAL.has(box.dataset.status)) return;
    const tick = function () {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (p) {
        const bar = box.querySelector(".progress > div");
        if (bar) bar.style.width = p.percent + "%";
        const text = box.querySelector(".progress-text");
        if (text) text.textContent = p.status_label + ": " + p.done + " / " + p.total + " files";
        if (FINAL.has(p.status)) { window.location.reload(); } else { setTimeout(tick, 2000); }
      }).catch(function () { setTimeout(tick, 5000); });
    };
    setTimeout(tick, 1000);
  });
})();
