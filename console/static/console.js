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
