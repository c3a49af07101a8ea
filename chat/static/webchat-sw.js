// The web chat's service worker: the page (/chat/) opens with no connection from the copy
// kept here, so a resident who reloads offline still sees what waits in the page's outbox
// (IndexedDB) and it is sent once the connection is back. Only the page is kept: the API
// always goes to the server (the page queues what it cannot send).
"use strict";
const CACHE = "gridline-chat-page-1";
const PAGE = "/chat/";

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.add(PAGE)).catch(() => {}).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.mode !== "navigate" || url.origin !== self.location.origin || url.pathname !== PAGE) return;
  // The network first (the page as the server has it now); the kept copy when there is no
  // connection, or the server is busy (503: the page's own requests wait that out).
  const kept = () => caches.match(PAGE);
  event.respondWith(fetch(event.request).then((response) => {
    if (response.ok) {
      const copy = response.clone();
      event.waitUntil(caches.open(CACHE).then((cache) => cache.put(PAGE, copy)));
      return response;
    }
    return response.status >= 500 ? kept().then((page) => page || response) : response;
  }, () => kept().then((page) => page || Response.error())));
});
