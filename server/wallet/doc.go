// Package wallet serves the rider's wallet: an installable web app (PWA)
// that keeps the rider's Ed25519 key in the browser and makes payment codes
// offline, exactly as the payment-code spec says (DESIGN.md, "Payment code,
// version 1"). farego-settlement serves it at /wallet/ on the HTTP API's
// origin, so the app calls the API with no cross-origin requests.
//
// The static files live in static/ and are embedded in the binary: no
// build step, no CDN. The one third-party file, the QR encoder
// (qrcode-generator by Kazuhiko Arase, MIT), is vendored under
// static/vendor/ by `make vendor-wallet`, which downloads the pinned npm
// tarball and checks its SHA-256; a test checks the vendored file against
// the same pin.
//
// What the browser code does:
//
//   - paycode.js: Base45 (RFC 9285), the 124-byte credential, the 194-byte
//     code and the rider signature over "farego-code-v1" ‖ bytes 0..129,
//     with WebCrypto Ed25519.
//   - store.js: IndexedDB. The private key is a non-extractable CryptoKey
//     stored as is; the per-credential counter is taken in a read-write
//     transaction, which IndexedDB serialises across tabs, so two tabs never
//     make the same (time, counter).
//   - app.js: the screens (register, sign in, the code with its countdown,
//     balance, rides, pass and deny state), credential refresh, polling.
//   - i18n.js: the one message catalog (English, Simplified Chinese); API
//     errors are shown as its sentences, never as raw JSON.
//   - sw.js: the service worker that precaches every file, so the wallet
//     opens and makes codes with no network and with the server stopped.
//     A new build installs only whole and of its own build (each file
//     fetched as FILE?build=HASH, refused 409 by a server of another
//     build, and checked against the BuildHeader), then waits until the
//     page asks it to go on: the rider's tap on Update, or a hidden page
//     with no code on screen and nothing under way (app.js); a page never
//     holds its code back at start for an update. It deletes only caches
//     of builds installed before it.
//
// # Headers
//
// Every response carries a Content-Security-Policy that allows scripts,
// styles, connections and workers from the wallet's own origin only (no
// inline script, no remote script), nosniff, no referrer and no framing.
// Files are revalidated on each use (Cache-Control: no-cache with a strong
// ETag); offline, the service worker's cache answers. The service worker
// script carries the wallet's build hash, so any change to a file installs
// a new cache.
//
// # Caveats
//
// Browsers give WebCrypto and service workers only to secure contexts:
// https, or http on localhost / 127.0.0.1. In production serve the API
// behind TLS. Ed25519 in WebCrypto needs a current browser (Chromium 137+,
// Firefox 129+, Safari 17+).
package wallet
