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
