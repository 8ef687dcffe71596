/* agent-outbox console: the few behaviours a page needs beyond htmx. Loaded as a file
   (the Content-Security-Policy allows no inline scripts). */
(function () {
  "use strict";

  function span(seconds) {
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    if (hours < 48) return hours + " h " + (minutes < 10 ? "0" : "") + minutes + " min";
    return Math.floor(hours / 24) + " days";
  }

  /* <time data-countdown datetime="…"> shows "in 12 min" / "expired"; the server renders the
     first text, this keeps it current between refreshes. */
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      var left = Math.round((at - now) / 1000);
      el.textContent = left > 0 ? "in " + span(left) : (left === 0 ? "expired" : "expired " + span(-left) + " ago");
      el.classList.toggle("expired", left <= 0);
    });
  }

  /* A form with data-confirm asks before it is sent (deny, pause). */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSwap", tick);
  window.setInterval(tick, 1000);
})();
