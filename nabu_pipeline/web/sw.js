// Nabu's service worker: makes the phone app installable and lets it open with no network, so
// Warren sees "Reconnecting" and what to do rather than a browser error page. Network first (a
// new version of Nabu shows at once), the cached copy when the server cannot be reached. The
// conversation itself (/ws), /healthz and /pairing are never cached.
"use strict";
const CACHE = "nabu-app-v1";
const SHELL = [
  "./", "app.js", "app.css", "nabu-client.js", "manifest.webmanifest",
  "icons/icon-192.png", "icons/icon-512.png", "icons/icon-maskable-512.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  const shell = event.request.mode === "navigate" && url.pathname === "/" ? "./" : null;
  const path = url.pathname.replace(/^\//, "");
  if (!shell && !SHELL.includes(path)) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(shell || event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(shell || event.request)),
  );
});
