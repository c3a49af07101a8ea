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
// ---- Typed words survive an ended session --------------------------------------------------
// What is typed into a form is kept in this tab (sessionStorage, keyed by the page, the form
// and the field) as it is typed. If the session has ended when the form is sent, the login
// brings the person back to the page, and the words are put back here. A step that was taken
// (the page says ?done=<action>) forgets its form's words. sessionStorage: nothing outlives the tab.
var TYPED = "gridline:typed:";
function typedFields(root) {
  return Array.prototype.filter.call((root || document).querySelectorAll("form[method=post] textarea, form[method=post] input"),
    function (f) {
      var type = (f.getAttribute("type") || "text").toLowerCase();
      return f.name && f.name.charAt(0) !== "_" && f.form && f.form.id && (type === "text" || type === "search" || f.tagName === "TEXTAREA");
    });
}
// A refused form answers at .../act/<action>: the same case page, the same words.
function typedKey(field) { return TYPED + location.pathname.replace(/\/act\/[a-z_]+$/, "") + ":" + field.form.id + ":" + field.name; }
function store(key, value) { try { sessionStorage.setItem(key, value); } catch (e) { /* private mode, full: the server still keeps refused forms */ } }
document.addEventListener("input", function (event) {
  var f = event.target;
  if (typedFields(f.form || document).indexOf(f) >= 0) store(typedKey(f), f.value);
});
function forgetTaken() {
  // The step was taken: its form's words are forgotten, whether or not the form is still on
  // the page (a merged case shows no merge form).
  var done = new URLSearchParams(location.search).get("done");
  if (!done) return;
  var prefix = TYPED + location.pathname + ":act-" + done + ":";
  try {
    Object.keys(sessionStorage).filter(function (k) { return k.indexOf(prefix) === 0; })
      .forEach(function (k) { sessionStorage.removeItem(k); });
  } catch (e) { /* no storage: nothing kept */ }
}
document.addEventListener("DOMContentLoaded", function () {
  forgetTaken();
  var restored = false;
  typedFields().forEach(function (f) {
    var kept = null;
    try { kept = sessionStorage.getItem(typedKey(f)); } catch (e) { return; }
    if (kept === null) return;
    if (kept !== f.value) { f.value = kept; restored = true; f.classList.add("restored-field"); }
  });
  if (restored) {
    var note = document.createElement("p");
    note.className = "restored"; note.id = "restored"; note.setAttribute("role", "status");
    note.textContent = document.body.dataset.msgRestored || "";
    var main = document.querySelector("main");
    if (main) main.insertBefore(note, main.firstChild);
  }
});
// ---- Errors of htmx requests (the triage list refreshing itself): a toast, never raw text ---
function toast(message, link) {
  var box = document.getElementById("toast");
  if (!box) { box = document.createElement("div"); box.id = "toast"; box.setAttribute("role", "alert"); document.body.appendChild(box); }
  box.textContent = message;
  if (link) {
    var a = document.createElement("a");
    a.href = link.href; a.textContent = link.text; a.id = "toast-login";
    box.appendChild(a);
  }
}
document.addEventListener("htmx:responseError", function (event) {
  var xhr = event.detail.xhr, message = "", link = null;
  try {
    var page = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var said = page.getElementById("error-message") || page.querySelector("[role=alert]");
    message = said ? said.textContent.trim() : "";
    var login = page.getElementById("login-again");
    if (login) link = { href: login.getAttribute("href"), text: login.textContent.trim() };
  } catch (e) { message = ""; }
  toast(message || document.body.dataset.msgNetwork || "", link);
});
document.addEventListener("htmx:sendError", function () { toast(document.body.dataset.msgNetwork || ""); });
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

// A photo picked: its label says how many (the file input itself is hidden, see console.css).
document.addEventListener("change", function (event) {
  var input = event.target;
  if (!(input instanceof HTMLInputElement) || input.type !== "file" || !input.closest("form.photos-add")) return;
  var label = input.closest("label");
  var count = label && label.querySelector(".picked");
  if (!count) { count = document.createElement("span"); count.className = "picked"; if (label) label.appendChild(count); }
  count.textContent = input.files.length ? "（" + input.files.length + "）" : "";
});
