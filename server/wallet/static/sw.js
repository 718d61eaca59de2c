// The wallet's service worker: it precaches every file of this build when
// installed and answers the wallet's own files from that cache, so the app
// opens and makes codes with no network and with the server stopped. API
// calls (/v1/…) are never cached: they go to the network, and the page
// shows what it kept when they fail.
//
// The server replaces BUILD with {"version": hash of the files, "files":
// [...]}: any change to a file is a new service worker with a new cache.

const BUILD = "__BUILD__";
const CACHE = "farego-wallet-" + BUILD.version;
const SCOPE = new URL("./", self.location).pathname;

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(BUILD.files.map((f) => new Request(f, { cache: "no-cache" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("farego-wallet-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin || !url.pathname.startsWith(SCOPE)) {
    return; // not the wallet's file: the browser fetches it as usual
  }
  event.respondWith(
    caches.open(CACHE).then((cache) =>
      cache.match(req, { ignoreSearch: true }).then((hit) => hit || fetch(req)),
    ),
  );
});
