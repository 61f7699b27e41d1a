// Cohort builder: a facet change fetches the page in the background and swaps in the
// facet counts and results (no reload); the address bar keeps the whole query (share it, bookmark it, go back to it).
(function () {
  const form = document.getElementById("cohort-form");
  if (!form || !window.fetch) return;
  let pending = null;

  function queryString() {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) {
      if (String(value).trim() !== "") params.append(key, value);
    }
    return params.toString();
  }

  async function refresh(push) {
    const qs = queryString();
    const url = form.action + (qs ? "?" + qs : "");
    if (pending) pending.abort();
    pending = new AbortController();
    document.getElementById("cohort-results").setAttribute("aria-busy", "true");
    try {
      const response = await fetch(url, { signal: pending.signal });
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const id of ["cohort-facets", "cohort-results"]) {
        const fresh = doc.getElementById(id);
        if (fresh) document.getElementById(id).innerHTML = fresh.innerHTML;
      }
      if (push) history.pushState(null, "", url);
    } catch (err) {
      if (err.name !== "AbortError") form.submit();
    } finally {
      document.getElementById("cohort-results").removeAttribute("aria-busy");
    }
  }

  // "Save this search" saves what is on screen now, not what the page was loaded with.
  const save = document.getElementById("save-search");
  if (save) {
    save.addEventListener("submit", () => {
      const holder = save.querySelector(".criteria");
      holder.innerHTML = "";
      for (const [key, value] of new URLSearchParams(queryString())) {
        const input = document.createElement("input");
        input.type = "hidden"; input.name = key; input.value = value;
        holder.appendChild(input);
      }
    });
  }

  // Any change of criteria or sort starts again at the first page of studies.
  function firstPage() {
    const page = form.querySelector("input[name=page]");
    if (page) page.value = "";
  }
  // Fields of other forms placed in the results (fill the gap, the cart) are theirs to send.
  form.addEventListener("change", (event) => {
    if (event.target.form && event.target.form !== form) return;
    firstPage(); refresh(true);
  });
  document.getElementById("cohort-results").addEventListener("click", (event) => {
    const link = event.target.closest("a[data-page]");
    if (!link) return;
    event.preventDefault();
    const page = form.querySelector("input[name=page]");
    if (page) page.value = link.dataset.page;
    refresh(true);
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); firstPage(); refresh(true); });
  window.addEventListener("popstate", () => window.location.reload());
})();
