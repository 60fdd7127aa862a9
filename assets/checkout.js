// paywatch checkout page: method picker, copy buttons, countdown, and live status (SSE with a
// polling fallback). The page works without this script; it only makes it live.
"use strict";
(function () {
  var root = document.getElementById("checkout");
  if (!root) return;
  var id = root.getAttribute("data-id");
  var statusEl = document.getElementById("status");
  var successUrl = root.getAttribute("data-success-url");
  var finished = false;

  // Method picker: show one option at a time when there are several.
  var nav = document.getElementById("methods");
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.option"));
  function show(method) {
    sections.forEach(function (s) { s.hidden = s.getAttribute("data-method") !== method; });
    if (nav) {
      Array.prototype.forEach.call(nav.querySelectorAll("a[data-method]"), function (a) {
        if (a.getAttribute("data-method") === method) a.setAttribute("aria-current", "true");
        else a.removeAttribute("aria-current");
      });
    }
  }
  if (nav && sections.length > 1) {
    var wanted = (location.hash || "").replace("#opt-", "");
    show(sections.some(function (s) { return s.getAttribute("data-method") === wanted; })
      ? wanted : sections[0].getAttribute("data-method"));
    nav.addEventListener("click", function (e) {
      var a = e.target.closest("a[data-method]");
      if (!a) return;
      e.preventDefault();
      show(a.getAttribute("data-method"));
      history.replaceState(null, "", "#opt-" + a.getAttribute("data-method"));
    });
  }

  // Copy buttons.
  document.addEventListener("click", function (e) {
    var b = e.target.closest("button.copy");
    if (!b || !navigator.clipboard) return;
    var label = b.textContent;
    navigator.clipboard.writeText(b.getAttribute("data-copy")).then(function () {
      b.textContent = root.getAttribute("data-copied");
      setTimeout(function () { b.textContent = label; }, 1500);
    });
  });

  // Countdown to expiry.
  var cd = document.getElementById("countdown");
  var expires = parseInt(root.getAttribute("data-expires"), 10);
  function tick() {
    if (!cd || finished) return;
    var left = Math.max(0, Math.floor((expires - Date.now()) / 1000));
    var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    cd.textContent = (h ? h + ":" + (m < 10 ? "0" : "") : "") + m + ":" + (s < 10 ? "0" : "") + s;
  }
  tick();
  setInterval(tick, 1000);

  // Live status.
  function apply(st) {
    if (!st || !st.status || finished) return;
    var current = statusEl.getAttribute("data-status");
    if (st.status === current) return;
    statusEl.setAttribute("data-status", st.status);
    statusEl.textContent = statusEl.getAttribute("data-t-" + st.status) || st.status;
    if (st.status === "complete") {
      finished = true;
      sections.forEach(function (s) { s.hidden = true; });
      if (nav) nav.hidden = true;
      if (successUrl) {
        statusEl.textContent += " " + statusEl.getAttribute("data-t-redirecting");
        setTimeout(function () { location.assign(successUrl); }, 1200);
      }
    } else if (st.status === "expired" || st.status === "canceled") {
      finished = true;
      location.reload();
    }
  }
  var polling = null;
  function poll() {
    if (polling) return;
    polling = setInterval(function () {
      fetch("/c/" + id + "/status", { cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(apply)
        .catch(function () {});
    }, 3000);
  }
  if (window.EventSource) {
    var es = new EventSource("/c/" + id + "/events");
    es.addEventListener("status", function (e) {
      try { apply(JSON.parse(e.data)); } catch (_) {}
    });
    es.onerror = function () { es.close(); poll(); };
  } else {
    poll();
  }
})();
