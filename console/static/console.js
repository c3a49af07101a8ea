// Gridline console: the little script the pages need (no inline scripts: the CSP forbids them).
// Clicking a transcript word plays the recording from the word's start.
document.addEventListener("click", function (event) {
  var word = event.target.closest ? event.target.closest("#transcript .w") : null;
  if (!word) return;
  var player = document.getElementById("player");
  if (!player) return;
  player.currentTime = parseFloat(word.dataset.start || "0");
  var playing = player.play();
  if (playing && playing.catch) playing.catch(function () {});
});
// While the recording plays, the word being spoken is highlighted.
document.addEventListener("timeupdate", function (event) {
  if (event.target.id !== "player") return;
  var now = event.target.currentTime, current = null;
  document.querySelectorAll("#transcript .w").forEach(function (w) {
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
