// The dataset upload form, enhanced: drop files or folders on the drop zone (or choose them),
// see the list with sizes, then send them with per-file and total progress, speed, time
// left and a cancel button. Without this script the form still posts the files itself.
//
// A selection goes in several requests into one batch (open, add files, close), each of at
// most MAX_FILES files or MAX_BYTES bytes: a folder of thousands of DICOM files stays within
// the server's per-request limits and memory, and a request that fails for the network is
// sent again alone. Closing the batch starts ingestion and leads to the batch's page.
(function () {
  const form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;
  const MAX_FILES = 100;
  const MAX_BYTES = 32 * 1024 * 1024;
  const RETRIES = 2;

  const input = form.querySelector("input[type=file][name=files]");
  const folder = document.getElementById("upload-folder");
  const zone = document.getElementById("upload-drop");
  const chosenBox = document.getElementById("upload-chosen");
  const list = document.getElementById("upload-files");
  const summary = document.getElementById("upload-summary");
  const bar = document.getElementById("upload-bar");
  const meter = bar.parentElement;
  const rate = document.getElementById("upload-rate");
  const errorBox = document.getElementById("upload-error");
  const announceBox = document.getElementById("upload-announce");
  const submit = document.getElementById("upload-submit");
  const clear = document.getElementById("upload-clear");
  const cancel = document.getElementById("upload-cancel");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  let chosen = []; // {file, path, row, bar, pct, sent}
  let busy = null; // {xhr, batch, cancelled} while sending

  form.querySelectorAll(".drop-hint, .drop-folder").forEach(function (el) { el.hidden = false; });

  const size = function (bytes) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i += 1; }
    return (i === 0 ? bytes : bytes.toFixed(bytes < 10 ? 1 : 0)) + " " + units[i];
  };
  const duration = function (seconds) {
    if (!isFinite(seconds)) return "";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  };
  const say = function (text) { announceBox.textContent = text; };
  const showError = function (text) { errorBox.textContent = text || ""; };

  // ---- the list ---------------------------------------------------------------------
  const render = function () {
    list.textContent = "";
    let bytes = 0;
    chosen.forEach(function (item) {
      bytes += item.file.size;
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "upload-name";
      name.textContent = item.path;
      const info = document.createElement("span");
      info.className = "upload-size muted";
      info.textContent = item.file.size ? size(item.file.size) : "empty (0 bytes): not uploaded";
      const progress = document.createElement("progress");
      progress.max = 100;
      progress.value = 0;
      progress.setAttribute("aria-label", "Upload of " + item.path);
      li.append(name, info, progress);
      list.append(li);
      item.row = li;
      item.bar = progress;
    });
    chosenBox.hidden = chosen.length === 0;
    clear.hidden = chosen.length === 0 || busy !== null;
    // The native input names the same selection (dropped files included) as the list.
    if (window.DataTransfer) {
      try {
        const dt = new DataTransfer();
        chosen.forEach(function (item) { dt.items.add(item.file); });
        input.files = dt.files;
      } catch (e) { /* older browsers: the input keeps what was chosen in it */ }
    }
    summary.textContent = chosen.length ? chosen.length.toLocaleString("en-US") + " file(s), " + size(bytes) : "";
    setTotal(0);
    rate.textContent = "";
  };

  const add = function (items) {
    const known = new Set(chosen.map(function (c) { return c.path + "|" + c.file.size + "|" + c.file.lastModified; }));
    items.forEach(function (item) {
      const key = item.path + "|" + item.file.size + "|" + item.file.lastModified;
      if (!known.has(key)) { known.add(key); chosen.push(item); }
    });
    showError("");
    render();
    say(chosen.length + " file(s) chosen.");
  };
  const fromFileList = function (files) {
    return Array.from(files).map(function (f) { return { file: f, path: f.webkitRelativePath || f.name }; });
  };

  input.addEventListener("change", function () { if (!busy) add(fromFileList(input.files)); });
  if (folder) folder.addEventListener("change", function () { if (!busy) add(fromFileList(folder.files)); folder.value = ""; });
  clear.addEventListener("click", function () { chosen = []; input.value = ""; render(); say("The list is empty."); });

  // ---- dropping files and folders -------------------------------------------------------
  // A folder arrives as a directory entry: read it whole (readEntries answers in batches
  // until it returns none), keeping each file's path inside the folder.
  const readAll = function (reader) {
    return new Promise(function (resolve, reject) {
      const out = [];
      const next = function () {
        reader.readEntries(function (entries) {
          if (!entries.length) { resolve(out); return; }
          out.push.apply(out, entries);
          next();
        }, reject);
      };
      next();
    });
  };
  const walk = function (entry) {
    if (entry.isFile) {
      return new Promise(function (resolve, reject) {
        entry.file(function (f) { resolve([{ file: f, path: entry.fullPath.replace(/^\//, "") }]); }, reject);
      });
    }
    if (entry.isDirectory) {
      return readAll(entry.createReader()).then(function (entries) {
        return Promise.all(entries.map(walk)).then(function (parts) { return [].concat.apply([], parts); });
      });
    }
    return Promise.resolve([]);
  };
  const dropped = function (dt) {
    const entries = dt.items ? Array.from(dt.items).map(function (it) {
      return it.kind === "file" && it.webkitGetAsEntry ? it.webkitGetAsEntry() : null;
    }) : [];
    if (entries.length && entries.every(Boolean)) {
      return Promise.all(entries.map(walk)).then(function (parts) { return [].concat.apply([], parts); });
    }
    return Promise.resolve(fromFileList(dt.files)); // no entry API: plain files only
  };

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) {
      e.preventDefault();
      if (!busy) zone.classList.add("dragging");
    });
  });
  ["dragleave", "dragend"].forEach(function (type) {
    zone.addEventListener(type, function (e) {
      if (!zone.contains(e.relatedTarget)) zone.classList.remove("dragging");
    });
  });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    zone.classList.remove("dragging");
    if (busy) return;
    dropped(e.dataTransfer).then(add).catch(function () { showError("These files could not be read; choose them instead."); });
  });

  // ---- sending --------------------------------------------------------------------------
  const setTotal = function (pct) {
    bar.style.width = pct + "%";
    meter.setAttribute("aria-valuenow", Math.floor(pct));
  };

  const groups = function (items) {
    const out = [];
    let group = [];
    let bytes = 0;
    items.forEach(function (item) {
      if (group.length && (group.length >= MAX_FILES || bytes + item.file.size > MAX_BYTES)) {
        out.push(group); group = []; bytes = 0;
      }
      group.push(item);
      bytes += item.file.size;
    });
    if (group.length) out.push(group);
    return out;
  };

  // One request. Resolves with the JSON answer; rejects with {status, message}.
  const send = function (url, body, onProgress) {
    return new Promise(function (resolve, reject) {
      const xhr = new XMLHttpRequest();
      if (busy) busy.xhr = xhr;
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.responseType = "json";
      if (onProgress) xhr.upload.onprogress = onProgress;
      xhr.onload = function () {
        const answer = xhr.response || {};
        if (xhr.status >= 200 && xhr.status < 300) resolve(answer);
        else reject({ status: xhr.status, message: answer.error || "The server refused the upload (HTTP " + xhr.status + ")." });
      };
      xhr.onerror = function () { reject({ status: 0, message: "The connection was lost." }); };
      xhr.onabort = function () { reject({ status: -1, message: "Cancelled." }); };
      xhr.send(body || new FormData());
    });
  };

  const run = function () {
    const items = chosen.filter(function (c) { return c.file.size > 0; });
    const total = items.reduce(function (n, c) { return n + c.file.size; }, 0);
    if (!items.length) { showError("Choose at least one file to upload (empty files are not sent)."); return; }
    showError("");
    busy = { xhr: null, batch: null, cancelled: false };
    submit.disabled = true;
    input.disabled = true;
    clear.hidden = true;
    cancel.hidden = false;
    items.forEach(function (c) { c.sent = 0; });
    const started = performance.now();
    const samples = [[started, 0]];
    let lastSaid = -1;
    const update = function () {
      const sent = items.reduce(function (n, c) { return n + c.sent; }, 0);
      const pct = total ? (100 * sent) / total : 100;
      items.forEach(function (c) { c.bar.value = c.file.size ? (100 * c.sent) / c.file.size : 100; });
      setTotal(pct);
      const now = performance.now();
      samples.push([now, sent]);
      while (samples.length > 2 && now - samples[0][0] > 5000) samples.shift(); // speed over the last 5 s
      const seconds = (now - samples[0][0]) / 1000;
      const speed = seconds > 0.2 ? (sent - samples[0][1]) / seconds : 0;
      rate.textContent = Math.floor(pct) + " % · " + size(sent) + " of " + size(total) +
        (speed > 0 ? " · " + size(speed) + "/s · " + duration((total - sent) / speed) + " left" : "");
      const quarter = Math.floor(pct / 25);
      if (quarter !== lastSaid) { lastSaid = quarter; say("Uploaded " + Math.floor(pct) + " %."); }
    };
    say("Uploading " + items.length + " file(s).");

    const stopIfCancelled = function () {
      if (busy.cancelled) throw { status: -1, message: "Cancelled." };
    };
    const sendGroup = function (group, attempt) {
      stopIfCancelled();
      const body = new FormData();
      group.forEach(function (c) { body.append("files", c.file, c.file.name); });
      const bytes = group.reduce(function (n, c) { return n + c.file.size; }, 0);
      return send(busy.batch.files_url, body, function (e) {
        if (!e.lengthComputable) return;
        // The body is the files in order plus a little multipart framing: share the bytes out.
        let left = (e.loaded / e.total) * bytes;
        group.forEach(function (c) { c.sent = Math.min(c.file.size, Math.max(0, left)); left -= c.file.size; });
        update();
      }).then(function () {
        group.forEach(function (c) { c.sent = c.file.size; c.row.classList.add("sent"); });
        update();
      }, function (err) {
        if (err.status === 0 && attempt < RETRIES && !busy.cancelled) {
          group.forEach(function (c) { c.sent = 0; });
          return new Promise(function (r) { setTimeout(r, 1000 * (attempt + 1)); }).then(function () {
            return sendGroup(group, attempt + 1);
          });
        }
        throw err;
      });
    };

    send(form.dataset.openUrl).then(function (batch) {
      busy.batch = batch;
      return groups(items).reduce(function (chain, group) {
        return chain.then(function () { return sendGroup(group, 0); });
      }, Promise.resolve());
    }).then(function () {
      stopIfCancelled();
      rate.textContent = "Every file was sent; starting ingestion…";
      return send(busy.batch.close_url);
    }).then(function (answer) {
      say("Every file was sent. Ingestion has started.");
      window.location.assign(answer.url);
    }).catch(function (err) {
      const batch = busy && busy.batch;
      const wasCancelled = busy && busy.cancelled;
      // A batch left half sent is discarded: nothing of it is ingested.
      if (batch) send(batch.cancel_url).catch(function () { /* the stuck sweep fails it later */ });
      finish();
      if (wasCancelled) { say("Upload cancelled; nothing was kept."); rate.textContent = "Cancelled; nothing was kept."; }
      else { showError(err.message || "The upload failed."); say("The upload failed: " + (err.message || "")); }
    });
  };

  const finish = function () {
    busy = null;
    submit.disabled = false;
    input.disabled = false;
    cancel.hidden = true;
    clear.hidden = chosen.length === 0;
    chosen.forEach(function (c) { if (c.bar) c.bar.value = 0; if (c.row) c.row.classList.remove("sent"); });
    setTotal(0);
  };

  cancel.addEventListener("click", function () {
    if (!busy) return;
    busy.cancelled = true;
    if (busy.xhr) busy.xhr.abort();
  });

  form.addEventListener("submit", function (e) {
    if (!chosen.length) return; // nothing chosen here: the plain post answers with its message
    e.preventDefault();
    if (!busy) run();
  });
})();
