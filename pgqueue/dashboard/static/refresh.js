// pgqueue dashboard: refresh the element marked data-refresh from its fragment URL every few seconds.
// Plain script, no build step; skipped while the tab is hidden or a control inside the element has focus.
(function () {
  "use strict";
  var box = document.querySelector("[data-refresh]");
  if (!box || !window.fetch) return;
  var url = box.getAttribute("data-refresh");
  var every = parseInt(box.getAttribute("data-every"), 10) || 5000;
  function busy() {
    var active = document.activeElement;
    return active && active !== document.body && box.contains(active) && active.tagName !== "A";
  }
  function stale() {
    var stamp = box.querySelector("[data-stamp]");
    if (stamp) { stamp.classList.add("stale"); stamp.textContent = "not refreshed: the dashboard did not answer"; }
  }
  function tick() {
    if (document.hidden || busy()) { setTimeout(tick, every); return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) { box.innerHTML = html; })
      .catch(stale)
      .then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
