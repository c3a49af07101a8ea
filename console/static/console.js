// Gridline console: the little script the pages need (no inline scripts: the CSP forbids them).
// Clicking a transcript word plays its recording from the word's start: the recording in the
// same block (a call, a voice note, a survey comment), else the case's first one.
function playerOf(word) {
  var block = word.closest(".recording");
  return (block && block.querySelector("audio")) || document.getElementById("player");
}
document.addEventListener("click", function (event) {
  var word = event.target.closest ? event.target.closest(".transcript .w") : null;
  if (!word) return;
  var player = playerOf(word);
  if (!player) return;
  if (player.error) player.load();  // it failed to load before (a busy server): ask again
  player.dataset.wanted = "1";
  player.currentTime = parseFloat(word.dataset.start || "0");
  var playing = player.play();
  if (playing && playing.catch) playing.catch(function () {});
});
// While a recording plays, the word being spoken is highlighted.
document.addEventListener("timeupdate", function (event) {
  var player = event.target;
  if (!player.classList || !player.classList.contains("player")) return;
  var block = player.closest(".recording");
  var words = player.id === "player" ? document.querySelectorAll("#transcript .w")
    : block ? block.querySelectorAll(".transcript .w") : [];
  var now = player.currentTime, current = null;
  words.forEach(function (w) {
    w.classList.remove("now");
    if (parseFloat(w.dataset.start) <= now) current = w;
  });
  if (current) current.classList.add("now");
}, true);
// A form is sent once: its button says it is working and cannot be pressed again until the
// next page arrives (a slow action pressed twice would be taken twice).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.method.toLowerCase() !== "post") return;
  if (form.dataset.sending === "1") { event.preventDefault(); return; }
  form.dataset.sending = "1";
  form.querySelectorAll("button[type=submit]").forEach(function (b) {
    b.disabled = true;
    b.classList.add("busy");
    b.setAttribute("aria-busy", "true");
  });
});
// A page restored from the back/forward cache gets its buttons back.
window.addEventListener("pageshow", function () {
  document.querySelectorAll("form[data-sending]").forEach(function (form) {
    delete form.dataset.sending;
    form.querySelectorAll("button.busy").forEach(function (b) {
      b.disabled = false; b.classList.remove("busy"); b.removeAttribute("aria-busy");
    });
  });
});
// A picture or a recording the server was too busy to send (503 with Retry-After: 1 s) is
// asked for again, a few times, a little later each time: a browser does not retry them itself.
function askAgain(el) {
  var tries = parseInt(el.dataset.retries || "0", 10);
  if (tries >= 3 || !el.getAttribute("src")) return;
  el.dataset.retries = String(tries + 1);
  var at = el.currentTime || 0, wanted = el.dataset.wanted === "1";  // where a recording was, whether asked to play
  setTimeout(function () {
    el.setAttribute("src", el.getAttribute("src"));
    if (!el.load) return;
    el.load();
    if (at) el.currentTime = at;
    if (wanted) { var p = el.play(); if (p && p.catch) p.catch(function () {}); }
  }, 1000 * (tries + 1));
}
document.addEventListener("error", function (event) {
  var el = event.target;
  if (el instanceof HTMLImageElement || el instanceof HTMLMediaElement) askAgain(el);
}, true);
// This script runs after the page is read: what failed before it ran is asked for again now.
document.querySelectorAll("img").forEach(function (img) {
  if (img.complete && img.naturalWidth === 0) askAgain(img);
});
document.querySelectorAll("audio").forEach(function (audio) {
  if (audio.error) askAgain(audio);
});
