// The image viewer: frames are PNGs rendered by the server (a window is a query string), so
// this only picks which frame and window to ask for, and zooms and pans the picture.
(function () {
  "use strict";
  var root = document.getElementById("viewer");
  if (!root) { return; }
  var base = root.dataset.frameUrl;
  var frames = parseInt(root.dataset.frames, 10);
  var own = { center: Number(root.dataset.center), width: Number(root.dataset.width) };
  var stage = document.getElementById("viewer-stage");
  var image = document.getElementById("viewer-image");
  var error = document.getElementById("viewer-error");
  var slider = document.getElementById("viewer-frame");
  var frameLabel = document.getElementById("viewer-frame-label");
  var preset = document.getElementById("viewer-preset");
  var centerInput = document.getElementById("viewer-center");
  var widthInput = document.getElementById("viewer-width");
  var zoomLabel = document.getElementById("viewer-zoom");
  var state = { frame: parseInt(root.dataset.start, 10), window: null, zoom: 1, x: 0, y: 0 };
  var loading = false, pending = null, cache = {};

  function url(frame) {
    var w = state.window;
    return base + frame + ".png" + (w ? "?c=" + Math.round(w.center) + "&w=" + Math.round(w.width) : "");
  }

  // One request at a time: while a frame loads, only the latest wanted one waits (a fast
  // slider or window drag never queues dozens).
  function request() {
    var wanted = url(state.frame);
    if (loading) { pending = wanted; return; }
    if (image.getAttribute("src") === wanted) { return; }
    loading = true;
    image.src = wanted;
  }

  function settled() {
    loading = false;
    if (pending && pending !== image.getAttribute("src")) {
      var next = pending;
      pending = null;
      loading = true;
      image.src = next;
    } else {
      pending = null;
    }
  }

  image.addEventListener("load", function () {
    error.hidden = true;
    image.hidden = false;
    settled();
    preload();
  });
  image.addEventListener("error", function () {
    error.textContent = "Frame " + (state.frame + 1) + " cannot be shown.";
    error.hidden = false;
    image.hidden = true;
    settled();
  });

  function preload() {
    [1, -1, 2].forEach(function (step) {
      var f = state.frame + step;
      if (f < 0 || f >= frames) { return; }
      var u = url(f);
      if (!cache[u]) { cache[u] = new Image(); cache[u].src = u; }
    });
  }

  function show(frame) {
    state.frame = Math.max(0, Math.min(frames - 1, frame));
    slider.value = String(state.frame);
    frameLabel.textContent = String(state.frame + 1);
    image.alt = "Frame " + (state.frame + 1);
    request();
  }

  function setWindow(win, fromPreset) {
    state.window = win;
    var shown = win || own;
    centerInput.value = String(Math.round(shown.center));
    widthInput.value = String(Math.round(shown.width));
    if (!fromPreset) { preset.value = ""; if (win) { preset.selectedIndex = -1; } }
    request();
  }

  function transform() {
    image.style.transform = "translate(" + state.x + "px," + state.y + "px) scale(" + state.zoom + ")";
    zoomLabel.textContent = Math.round(state.zoom * 100) + "%";
    stage.classList.toggle("viewer-grab", state.zoom > 1 || dragMode() === "window");
  }

  function zoom(factor) {
    state.zoom = Math.max(1, Math.min(8, state.zoom * factor));
    if (state.zoom === 1) { state.x = 0; state.y = 0; }
    transform();
  }

  function reset() {
    state.zoom = 1; state.x = 0; state.y = 0;
    preset.value = "";
    setWindow(null, true);
    transform();
  }

  function dragMode() {
    var checked = root.querySelector('input[name="viewer-drag"]:checked');
    return checked ? checked.value : "pan";
  }

  slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });

  stage.addEventListener("wheel", function (event) {
    event.preventDefault();
    show(state.frame + (event.deltaY > 0 ? 1 : -1));
  }, { passive: false });

  stage.addEventListener("keydown", function (event) {
    var moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (event.key in moves) { show(state.frame + moves[event.key]); }
    else if (event.key === "Home") { show(0); }
    else if (event.key === "End") { show(frames - 1); }
    else if (event.key === "+" || event.key === "=") { zoom(1.25); }
    else if (event.key === "-") { zoom(0.8); }
    else if (event.key === "0") { reset(); }
    else { return; }
    event.preventDefault();
  });

  preset.addEventListener("change", function () {
    if (!preset.value) { setWindow(null, true); return; }
    var parts = preset.value.split(",");
    setWindow({ center: Number(parts[0]), width: Number(parts[1]) }, true);
  });

  function typed() {
    var c = Number(centerInput.value), w = Number(widthInput.value);
    if (centerInput.value === "" || widthInput.value === "" || !isFinite(c) || !isFinite(w) || w < 1) { return; }
    preset.selectedIndex = -1;
    state.window = { center: c, width: w };
    request();
  }
  centerInput.addEventListener("change", typed);
  widthInput.addEventListener("change", typed);

  document.getElementById("viewer-zoom-in").addEventListener("click", function () { zoom(1.25); });
  document.getElementById("viewer-zoom-out").addEventListener("click", function () { zoom(0.8); });
  document.getElementById("viewer-reset").addEventListener("click", reset);
  root.querySelectorAll('input[name="viewer-drag"]').forEach(function (radio) {
    radio.addEventListener("change", transform);
  });

  // Dragging: pans the zoomed picture, or (the other mode) moves the window: right/left
  // widens/narrows it, down/up lowers/raises the level, like most viewers.
  var drag = null;
  stage.addEventListener("pointerdown", function (event) {
    var mode = dragMode();
    if (mode === "pan" && state.zoom === 1) { return; }
    var start = state.window || own;
    drag = { mode: mode, x: event.clientX, y: event.clientY, panX: state.x, panY: state.y,
             center: start.center, width: start.width };
    stage.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  stage.addEventListener("pointermove", function (event) {
    if (!drag) { return; }
    var dx = event.clientX - drag.x, dy = event.clientY - drag.y;
    if (drag.mode === "pan") {
      state.x = drag.panX + dx;
      state.y = drag.panY + dy;
      transform();
    } else {
      var scale = Math.max(1, drag.width / 200);
      setWindow({ center: drag.center + dy * scale, width: Math.max(1, drag.width + dx * scale * 2) }, false);
    }
  });
  function release() { drag = null; }
  stage.addEventListener("pointerup", release);
  stage.addEventListener("pointercancel", release);

  transform();
  preload();
}());
