// The wallet's service worker: it precaches every file of this build when
// installed and answers the wallet's own files from that cache, so the app
// opens and makes codes with no network and with the server stopped. API
// calls (/v1/…) are never cached: they go to the network, and the page
// shows what it kept when they fail.
//
// The server replaces BUILD with {"version": hash of the files, "files":
// [...]}: any change to a file is a new service worker with a new cache.
//
// Updates (README, "How a new build reaches the rider"):
//   - install fetches each file as FILE?build=VERSION; a server of another
//     build (restarted meanwhile) answers 409, and a file whose build header
//     is not this one's fails the install too: nothing is written until
//     every file is here and of this build. A failed install is tried again
//     at the next update check. A cache is never served incomplete.
//   - a new build waits while an older one controls the wallet: the page
//     sends "skip-waiting" when the rider taps Update, or when it is hidden
//     with no code on screen and nothing under way (never at its start). The
//     first install (no worker yet), and the update from the previous
//     release (whose pages cannot ask), go on at once, as before.
//   - activate deletes only the caches of builds installed before its own:
//     a newer build's, installing or waiting meanwhile, is kept. "Before"
//     is an install count, not the phone's clock: a clock set back (by
//     hand, or by the network's time) must not make a newer build's cache
//     look older and lose it.

const BUILD = "__BUILD__";
const PREFIX = "farego-wallet-";
const CACHE = PREFIX + BUILD.version;
// META records the order in which builds were installed ("/cache-name" →
// {"seq": n}, one more than any record there); the previous release's
// caches have no record.
const META = "farego-wallet-meta";
const SCOPE = new URL("./", self.location).pathname;
const BUILD_HEADER = "X-Farego-Wallet-Build";

// precache fetches every file of this build, checks each, and only then
// writes them all to this build's cache.
async function precache() {
  const got = await Promise.all(BUILD.files.map(async (f) => {
    const url = new URL(f, self.location);
    const pinned = new URL(url);
    pinned.searchParams.set("build", BUILD.version);
    const resp = await fetch(pinned, { cache: "no-store" });
    if (!resp.ok || resp.headers.get(BUILD_HEADER) !== BUILD.version) {
      throw new Error(`wallet: ${f} is not of build ${BUILD.version} (${resp.status} ${resp.headers.get(BUILD_HEADER)})`);
    }
    return [url.href, resp];
  }));
  const meta = await caches.open(META);
  // Recorded first: an activate meanwhile keeps a cache younger than it.
  // Installs of a registration run one at a time: the active and waiting
  // builds' records are there, and this one comes after both.
  let last = 0;
  for (const k of await meta.keys()) last = Math.max(last, await seq(meta, new URL(k.url).pathname));
  await meta.put("/" + CACHE, new Response(JSON.stringify({ seq: last + 1 })));
  const cache = await caches.open(CACHE);
  await Promise.all(got.map(([href, resp]) => cache.put(href, resp)));
}

// fromPreviousRelease: an active worker whose cache has no record in META
// is the previous release's, whose pages never ask a waiting worker to go
// on: this one takes over at once, as every update did then.
async function fromPreviousRelease() {
  if (!self.registration.active) return true; // the first install: nothing to wait for
  const meta = await caches.open(META);
  for (const k of await caches.keys()) {
    if (k.startsWith(PREFIX) && k !== META && k !== CACHE && (await meta.match("/" + k))) return false;
  }
  return true;
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    precache()
      .then(fromPreviousRelease)
      .then((now) => (now ? self.skipWaiting() : undefined)),
  );
});

self.addEventListener("message", (event) => {
  if (event.data === "skip-waiting") self.skipWaiting();
});

// seq is the place of a build's install in META's order (0: no record).
// key is "/" + the build's cache name.
async function seq(meta, key) {
  const hit = await meta.match(key);
  if (!hit) return 0;
  try {
    const v = await hit.json();
    return Number.isSafeInteger(v.seq) && v.seq > 0 ? v.seq : 0;
  } catch {
    return 0;
  }
}

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    const meta = await caches.open(META);
    const mine = await seq(meta, "/" + CACHE);
    for (const k of await caches.keys()) {
      if (!k.startsWith(PREFIX) || k === META || k === CACHE) continue;
      // Only builds installed before this one: their workers are gone
      // (this one replaces the active one). A later build's cache, being
      // installed or waiting, is its worker's.
      if ((await seq(meta, "/" + k)) < mine) {
        await caches.delete(k);
        await meta.delete("/" + k);
      }
    }
    await self.clients.claim();
  })());
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
