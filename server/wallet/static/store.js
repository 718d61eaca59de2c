// The wallet's state in IndexedDB, which survives reloads and is shared by
// every tab of the wallet's origin.
//
//   kv           "account": {id, secret, profile, name}; "secretKept": bool;
//                "view": the last account view fetched, for offline display
//   credentials  one record per credential, by serial: {serial, bytes (124),
//                issued (the same bytes in hex, as fetched), privateKey (a non-extractable CryptoKey), publicKey (raw),
//                notBefore, notAfter, fetchedAt, counter}
//
// The counter is taken in a read-write transaction on the credential's
// record. IndexedDB runs read-write transactions on the same store one
// after another, across tabs too, so no two codes of one credential ever
// share a counter, and hence never a (time, counter).

import { MAX_COUNTER } from "./paycode.js";

const DB_NAME = "farego-wallet";
const DB_VERSION = 1;

let dbPromise = null;

function open() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains("kv")) db.createObjectStore("kv");
        if (!db.objectStoreNames.contains("credentials")) db.createObjectStore("credentials", { keyPath: "serial" });
      };
      req.onsuccess = () => {
        const db = req.result;
        // Another tab may upgrade the database: let it, and reopen later.
        db.onversionchange = () => {
          db.close();
          dbPromise = null;
        };
        resolve(db);
      };
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error("store: database blocked by another tab"));
    });
  }
  return dbPromise;
}

/** tx runs fn(stores) in one transaction and resolves with fn's result once it commits. */
async function tx(names, mode, fn) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction(names, mode);
    const stores = Object.fromEntries([].concat(names).map((n) => [n, t.objectStore(n)]));
    let result;
    t.oncomplete = () => resolve(result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error ?? new Error("store: transaction aborted"));
    Promise.resolve(fn(stores, t)).then((r) => (result = r), (e) => {
      try {
        t.abort();
      } catch {
        // already finished
      }
      reject(e);
    });
  });
}

function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export async function get(key) {
  return tx("kv", "readonly", (s) => req(s.kv.get(key)));
}

export async function put(key, value) {
  return tx("kv", "readwrite", (s) => req(s.kv.put(value, key)));
}

/** currentCredential returns the record with the highest serial, or undefined. */
export async function currentCredential() {
  return tx("credentials", "readonly", async (s) => {
    const c = await req(s.credentials.openCursor(null, "prev"));
    return c ? c.value : undefined;
  });
}

// signedIn tells whether the account stored is owner ({id, secret}):
// every tab shares the storage, and another may have signed out, signed
// in to another account or changed the secret meanwhile.
async function signedIn(kv, owner) {
  const a = await req(kv.get("account"));
  return !!a && a.id === owner.id && a.secret === owner.secret;
}

/**
 * saveCredential stores a newly issued credential of owner ({id, secret})
 * and drops every other one, in one transaction with the check that owner
 * is still the account stored; it throws "store: signed out" otherwise
 * (another tab signed out: nothing of the account is written back). The
 * others go whatever their serials: tabs fetch in turn (Web Locks), so a
 * record of a higher serial than a pass just issued is a stray (damaged,
 * edited, of a number or a string key); kept, it stayed the current
 * credential, damaged, and a new one was fetched for each such record.
 */
export async function saveCredential(rec, owner) {
  return tx(["kv", "credentials"], "readwrite", async (s) => {
    if (!(await signedIn(s.kv, owner))) throw new Error("store: signed out");
    await req(s.credentials.clear());
    await req(s.credentials.put({ ...rec, counter: 0 }));
  });
}

/**
 * putView stores the account view fetched for owner, if owner is still
 * the account stored (as saveCredential); it reports whether it did.
 */
export async function putView(view, owner) {
  return tx("kv", "readwrite", async (s) => {
    if (!(await signedIn(s.kv, owner))) return false;
    await req(s.kv.put(view, "view"));
    return true;
  });
}

/**
 * replaceAccount stores next as the account in place of owner, if owner
 * is still the account stored (as saveCredential); it reports whether it
 * did.
 */
export async function replaceAccount(next, owner) {
  return tx("kv", "readwrite", async (s) => {
    if (!(await signedIn(s.kv, owner))) return false;
    await req(s.kv.put(next, "account"));
    return true;
  });
}

/**
 * nextCounter takes the next counter of a credential (1, 2, …) and
 * persists it before anyone can take it again. It throws "exhausted" after
 * 65535 codes: the wallet then needs a new credential.
 */
export async function nextCounter(serial) {
  return tx("credentials", "readwrite", async (s) => {
    const rec = await req(s.credentials.get(serial));
    if (!rec) throw new Error("store: credential gone");
    if (rec.counter >= MAX_COUNTER) throw new Error("exhausted");
    rec.counter += 1;
    await req(s.credentials.put(rec));
    return rec.counter;
  });
}

/** dropCredentials forgets every credential (the server denied them). */
export async function dropCredentials() {
  return tx("credentials", "readwrite", (s) => req(s.credentials.clear()));
}

/** clear forgets the account, its keys and its credentials (sign out). */
export async function clear() {
  return tx(["kv", "credentials"], "readwrite", async (s) => {
    await req(s.kv.clear());
    await req(s.credentials.clear());
  });
}
