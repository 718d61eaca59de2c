// The rider's wallet: screens, the code on screen and its minute tick, the
// credential's upkeep and the account view. See doc.go for the whole.

import * as clock from "./clock.js";
import * as store from "./store.js";
import { call, ApiError, onServerTime } from "./api.js";
import { t, errorText, localize, money, span, toMinor, notAmount, amountExample, dateTime, currencyDigits, setCurrencyDigits, time as clockTime } from "./i18n.js";
import { MAX_COUNTER, bytesToHex, codeSignedByPass, hexToBytes, makeCode, newRiderKey, parseCredential } from "./paycode.js";
import { clearQR, drawQR } from "./qr.js";

const $ = (id) => document.getElementById(id);

const POLL_MS = 10000; // account refresh while the page is visible and online
const CLOCK_SKEW_S = 30; // the validators' tolerance (DESIGN.md)

let account = null; // {id, secret, profile, name}
let last = null; // the code on screen: {text, time, counter, serial, notAfter (its pass's), modules}
let serverReachable = true;
let passUsable = false; // the pass on the phone makes codes now (renderPass)
let tickTimer = 0;
let countdownTimer = 0;
let pollTimer = 0;
let codeChain = Promise.resolve();
let credentialTask = null;
let pendingKey = null; // {id, secret, key}: the key of a pass asked for with no answer yet (fetchCredential)
let credentialRetryAt = 0; // after a refused or failed renewal, wait before trying again by itself
let passRefusedLow = false; // the last pass asked for was refused for a balance too low (insufficient_funds)
// Statement entries older than the view's recent ones, loaded by "Earlier
// activity" (kept in memory only, while they join the view's without a gap).
let earlier = [];
const EARLIER_PAGE = 20;
const RETRY_MS = 60000;
const MAX_LIMIT = 1e11; // the ledger's MaxAmount, minor units

// ---- test seam: tests import this module and read the state -------------

/** debugState tells what the page shows (the code itself, never keys). */
export function debugState() {
  return {
    screen: ["welcome", "secret", "main"].find((id) => !$(id).hidden) ?? "",
    account: account ? account.id : "",
    code: last,
    online: navigator.onLine,
    serverReachable,
    updateReady: !$("update").hidden,
    updateAsked, // "tap" or "auto" once the page asked a waiting build to go on
  };
}

/** newCodeNow makes and shows a new code, as the "New code" button does. */
export function newCodeNow() {
  return showCode();
}

// ---- screens and messages -------------------------------------------------

function show(screen) {
  for (const id of ["welcome", "secret", "main"]) $(id).hidden = id !== screen;
  renderUpdate();
}

function showError(err) {
  refreshError = false; // a message of its own (refreshAccount marks its own)
  // "The server cannot be reached" (a limit saved, earlier activity asked
  // for, with the server down) stayed at the top of the page after the
  // server answered again, the indicator beside it saying Online: it
  // goes with the next answer (api).
  unreachableError = err instanceof ApiError && err.code === "network";
  const el = $("error");
  if (!err) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.textContent = typeof err === "string" ? err : errorText(err);
  el.hidden = false;
  // It is at the top of the page: on a phone the form that failed may be
  // a screen further down.
  el.scrollIntoView({ block: "nearest" });
}

// busy disables btn while its request runs (a second press sends no
// second request), and returns what ends that. A disabled button loses
// the keyboard's focus (Chromium moves it to the page's body, and
// enabling it again does not bring it back): a rider on a keyboard who
// pressed "Earlier activity", "Save the limit", or "Sign in" with a
// secret refused, was left nowhere, the next Tab starting again at the
// top. The end gives it back to the button, or to `to` when the button
// went meanwhile, unless what was done moved it elsewhere (a new screen).
function busy(btn) {
  const had = document.activeElement === btn;
  btn.disabled = true;
  inFlight++;
  let ended = false;
  return (to) => {
    if (!ended) inFlight--;
    ended = true;
    btn.disabled = false;
    const now = document.activeElement;
    if (!had || (now && now !== document.body)) return;
    // Not scrolled to: an error it showed is at the top, in sight.
    const target = btn.offsetParent ? btn : to;
    if (target && target.offsetParent) target.focus({ preventScroll: true });
  };
}

// hideKeepingFocus hides el; when the keyboard's focus was in it (the
// button just pressed, gone with what it did), the focus goes to to,
// not to the page's start: the next Tab began again at the top and a
// screen reader said nothing of what came instead ("Get a pass" pressed,
// the pass came and the button went; the last "Earlier activity").
function hideKeepingFocus(el, to) {
  const had = el.contains(document.activeElement);
  el.hidden = true;
  if (had && to.offsetParent) to.focus();
}

function renderNet() {
  const state = !navigator.onLine ? "offline" : serverReachable ? "online" : "unreachable";
  // "codes still work" only while the phone holds a pass that makes them,
  // and its clock is not known to be wrong: beside "validators refuse
  // codes from the future" it told the rider the opposite.
  const works = passUsable && $("clock-warning").hidden;
  const text = t("net_" + state + (state !== "online" && !works ? "_nopass" : ""));
  const el = $("net");
  // A block that a top-up may have lifted shows its code only while the
  // phone cannot ask (blockMayBeLifted): the pass is shown again as it is.
  if (el.dataset.state && el.dataset.state !== state && blocks.account && account) showCode();
  if (el.dataset.state !== state || el.textContent !== text) {
    el.dataset.state = state;
    el.className = "net " + state;
    el.textContent = text;
  }
}

// api calls the server and keeps the indicator honest.
async function api(method, path, opts) {
  inFlight++;
  try {
    const r = await call(method, path, opts);
    serverReachable = true;
    if (unreachableError) showError(null);
    return r;
  } catch (e) {
    serverReachable = !(e instanceof ApiError && e.code === "network");
    throw e;
  } finally {
    inFlight--;
    renderNet();
  }
}

// ---- the pass (credential) ------------------------------------------------

// blocks is what the latest account view says of the deny list: the
// whole account denied (its reason, or null) and the credentials denied
// (serial → reason). A blocked pass shows no code: every validator and
// shop refuses it.
let blocks = { account: null, serials: new Map(), key: "", at: 0 };

// noteBlocks takes the deny state of an account view, and reports whether
// it changed.
function noteBlocks(a) {
  const serials = new Map((a.blocked_credentials || []).map((b) => [b.serial, b.reason]));
  const account = a.denied ? a.deny_reason || "?" : null;
  const key = JSON.stringify([account, [...serials.keys()].sort((x, y) => x - y)]);
  const changed = key !== blocks.key;
  blocks = { account, serials, key, at: blocks.at };
  return changed;
}

// blockMayBeLifted: the account's block is one a top-up lifts at once
// (below zero), and this phone cannot ask whether it still holds (offline,
// or the server out of reach). Riders top up through the payment
// provider, not here: a rider who did, then boarded with no network, was
// shown no code while the pass worked. Its code is shown, saying so.
function blockMayBeLifted() {
  return blocks.account === "negative_balance" && !(navigator.onLine && serverReachable);
}

// badKeys: the serials of passes whose stored private key signed a code
// that the pass's rider key does not verify (the key was swapped or
// damaged in storage): every validator refuses such codes.
const badKeys = new Set();

// passDamaged: the stored pass no longer says what was stored with it
// (this account, its serial and validity, the key this phone holds, the
// bytes as the server sent them): its bytes were damaged or edited. Every
// validator would refuse its codes (bad_credential_signature) while the
// wallet called it valid for up to half a day (a new user's review flipped
// one byte of the account; a wallet review one of the issuer's signature,
// the key id or the fare type, which name nothing stored with the pass but
// its copy); such a pass shows no code and, online, is replaced at once.
function passDamaged(cred) {
  if (badKeys.has(cred.serial)) return true;
  try {
    const c = parseCredential(cred.bytes);
    return (account !== null && c.account !== account.id) || c.serial !== cred.serial ||
      c.notBefore !== cred.notBefore || c.notAfter !== cred.notAfter ||
      (cred.publicKey !== undefined && bytesToHex(c.riderKey) !== bytesToHex(cred.publicKey)) ||
      (cred.issued !== undefined && bytesToHex(cred.bytes) !== cred.issued);
  } catch {
    return true;
  }
}

// renderPass says in plain words what the credential is worth now, and
// tells whether it may sign codes.
function renderPass(cred, nowS) {
  const el = $("pass-state");
  let usable = false;
  let warn = false;
  if (!cred) {
    // Online, the reason there is none is in the warning below (a low
    // balance, a blocked account): "connect to the internet" would be wrong.
    el.textContent = navigator.onLine && serverReachable ? t("no_pass_online") : t("no_pass");
  } else if (blocks.account && !blockMayBeLifted()) {
    el.textContent = t("pass_account_blocked");
    warn = true;
  } else if (passDamaged(cred)) {
    el.textContent = t("pass_damaged");
    warn = true;
  } else if (blocks.serials.has(cred.serial)) {
    // "Getting a new pass…" only while one may be on its way: offline, or
    // refused one (a balance too low: "Top up first" beside it), it said
    // so for good.
    const coming = navigator.onLine && serverReachable && performance.now() >= credentialRetryAt;
    el.textContent = t(coming ? "pass_blocked" : "pass_blocked_stays", { serial: cred.serial });
    warn = true;
  } else if (nowS > cred.notAfter) {
    // When it ran out, in words: "has expired" alone left a rider at the
    // door with no code wondering since when, and whether the phone or
    // the pass was wrong. Online with the server out of reach,
    // "connect to the internet" was no help.
    const until = dateTime(cred.notAfter * 1000);
    el.textContent = t(navigator.onLine && !serverReachable ? "pass_expired_unreachable" : "pass_expired", { until });
    warn = true;
  } else if (nowS + CLOCK_SKEW_S < cred.notBefore) {
    el.textContent = t("pass_not_yet");
    warn = true;
  } else if (cred.counter >= MAX_COUNTER) {
    el.textContent = t("pass_exhausted");
    warn = true;
  } else {
    usable = true;
    const until = dateTime(cred.notAfter * 1000);
    const left = cred.notAfter - nowS;
    warn = left < (cred.notAfter - cred.notBefore) / 4;
    el.textContent = warn ? t("pass_expiring", { until }) : t("pass_valid", { serial: cred.serial, until });
    if (blocks.account) {
      el.textContent = t("pass_account_blocked_stale", { time: dateTime(blocks.at) });
      warn = true;
    }
  }
  el.className = warn ? "warning" : "";
  passUsable = usable;
  renderNet();
  $("new-code").disabled = !usable;
  if (!usable) $("get-pass").hidden = false;
  return usable;
}

// CLOCK_BACK_S is how far the clock may go back since a pass was fetched
// (a network time correction) before its age counts as unknown.
const CLOCK_BACK_S = 300;

// needsRefresh: no credential, or past half its lifetime. The age is
// measured on this phone's clock from when it was fetched, so a phone whose
// clock is off does not ask again and again. A clock set back by more than
// a few minutes since the fetch (it was ahead then) leaves the age unknown:
// ask again (once: the new pass's fetch time is the new clock's). Without
// that, a pass fetched with the clock a day ahead and expired by the
// corrected clock waited on an online phone until the clock passed the
// fetch time by half a lifetime.
function needsRefresh(cred, nowS) {
  if (!cred) return true;
  if (blocks.serials.has(cred.serial) && !blocks.account) return true; // the operator blocked it
  if (blocks.account) return false; // no pass is issued to a blocked account
  if (passDamaged(cred)) return true;
  const life = cred.notAfter - cred.notBefore;
  // A fetch time that is no number (edited or damaged in the phone's
  // storage) leaves the age unknown: ask again (once: the new pass has
  // one). Its NaN age was never past anything: the pass was not renewed,
  // ran out, and the online wallet said "connect to the internet" with
  // no code and no button, for good (TestWalletPassWithNoFetchTime).
  if (typeof cred.fetchedAt !== "number" || !Number.isFinite(cred.fetchedAt)) return true;
  const age = nowS - cred.fetchedAt;
  return age > life / 2 || age < -CLOCK_BACK_S || cred.counter >= MAX_COUNTER - 1000;
}

// fetchCredential asks the server for a credential for a fresh key pair made
// here, when there is none, it is past half its lifetime, or force. Tabs
// take turns (Web Locks) and re-check, so they do not all fetch at once.
async function fetchCredential(force) {
  const run = async () => {
    if (!(await followStorage())) return false; // signed out in another tab
    const cur = await store.currentCredential();
    if (!force && !needsRefresh(cur, clock.nowSeconds())) return false;
    // The key of a request whose answer never came is asked with again:
    // the server sends the pass it issued then (not one more for each
    // answer lost on a dropping connection: 16 refused every pass for a
    // day, TestWalletLostAnswersCostNoPasses).
    if (!pendingKey || pendingKey.id !== account.id || pendingKey.secret !== account.secret) {
      pendingKey = { id: account.id, secret: account.secret, key: await newRiderKey() };
    }
    const key = pendingKey.key;
    const owner = account;
    const secret = account.secret;
    let r;
    try {
      r = await api("POST", `/v1/accounts/${account.id}/credentials`, {
        token: secret,
        body: { rider_public_key: bytesToHex(key.publicKey) },
      });
      // Answered: the next pass gets a key of its own (a key sent again
      // would bring this pass back, its counter starting over).
      if (pendingKey?.key === key) pendingKey = null;
    } catch (e) {
      // The server answered a refusal: it issued nothing for this key.
      // No answer, a gateway's (the server may have issued behind it), or
      // a 2xx whose body never came whole: the key is asked with again.
      const unanswered = e instanceof ApiError && (e.code === "network" || (e.status >= 200 && e.status < 300));
      if (!unanswered && pendingKey?.key === key) pendingKey = null;
      if (e instanceof ApiError && e.code === "forbidden") await secretChanged(secret);
      // Replaced meanwhile, here (changeSecret asks again) or in another
      // tab (taken up), signed out, or the account's number set right
      // (repairAccount): not this pass's failure.
      if (!account || account.secret !== secret || account.id !== owner.id) return false;
      throw e;
    }
    // Issued with a secret replaced here meanwhile: deny-listed with it.
    if (!account || account.secret !== secret || account.id !== owner.id) return false;
    const bytes = hexToBytes(r.credential);
    const c = parseCredential(bytes);
    if (c.account !== account.id || bytesToHex(c.riderKey) !== bytesToHex(key.publicKey)) {
      throw new ApiError("invalid", 0);
    }
    try {
      await store.saveCredential({
        serial: c.serial,
        bytes,
        issued: bytesToHex(bytes), // its copy, to tell a damaged byte (passDamaged)
        privateKey: key.privateKey,
        publicKey: key.publicKey,
        notBefore: c.notBefore,
        notAfter: c.notAfter,
        fetchedAt: clock.nowSeconds(),
      }, owner);
    } catch (e) {
      if (e.message !== "store: signed out") throw e;
      await followStorage(); // another tab signed out or changed the secret meanwhile
      return false;
    }
    return true;
  };
  if (navigator.locks) return navigator.locks.request("farego-credential", run);
  return run();
}

// maintainCredential refreshes the credential when due (or forced) and says
// what went wrong in plain words.
async function maintainCredential(force = false) {
  if (!account || credentialTask) return credentialTask;
  const warning = $("pass-warning");
  if (!navigator.onLine && force) {
    // "Get a pass" pressed with no network: say so, not nothing.
    warning.textContent = t("err_network");
    warning.hidden = false;
    return;
  }
  if (!navigator.onLine || (!force && performance.now() < credentialRetryAt)) return;
  credentialTask = (async () => {
    try {
      if (force) $("pass-state").textContent = t("pass_fetching");
      const changed = await fetchCredential(force);
      credentialRetryAt = 0;
      passRefusedLow = false;
      warning.hidden = true;
      hideKeepingFocus($("get-pass"), $("code-heading"));
      if (changed || force) await showCode();
    } catch (e) {
      credentialRetryAt = performance.now() + RETRY_MS; // monotonic: a clock set back does not stretch the wait
      passRefusedLow = e instanceof ApiError && e.code === "insufficient_funds";
      const usable = last !== null;
      if (!window.isSecureContext) {
        // WebCrypto is not there at all on a page served over plain http
        // (but for localhost): a TypeError, not NotSupportedError.
        warning.textContent = t("insecure_page");
      } else if (e && e.name === "NotSupportedError") {
        warning.textContent = t("crypto_missing");
      } else if (e instanceof ApiError && e.code === "network" && usable && !force) {
        return; // the pass on the phone still works; the indicator says offline
      } else {
        warning.textContent = e instanceof ApiError ? errorText(e) : t("err_unknown", { code: e && e.name });
      }
      warning.hidden = false;
      $("get-pass").hidden = false;
      renderPass(await store.currentCredential(), clock.nowSeconds());
    }
  })().finally(() => {
    credentialTask = null;
  });
  return credentialTask;
}

// ---- the code on screen ---------------------------------------------------

// showCode makes a new code from the current credential and draws it. Calls
// queue up in this tab; other tabs are kept apart by the counter's
// IndexedDB transaction.
function showCode() {
  codeChain = codeChain.then(makeAndShow, makeAndShow);
  return codeChain;
}

async function makeAndShow() {
  const canvas = $("qr");
  for (let attempt = 0; attempt < 2; attempt++) {
    const cred = await store.currentCredential();
    const nowS = clock.nowSeconds();
    if (!renderPass(cred, nowS)) break;
    let counter;
    try {
      counter = await store.nextCounter(cred.serial);
    } catch (e) {
      if (e.message === "store: credential gone") continue; // another tab renewed it
      if (e.message === "exhausted") {
        renderPass({ ...cred, counter: MAX_COUNTER }, nowS);
        break;
      }
      throw e;
    }
    let code;
    try {
      code = await makeCode(cred.bytes, cred.privateKey, nowS, counter);
      if (!(await codeSignedByPass(code.bytes))) throw new Error("key");
    } catch {
      // Not the pass's key (or not a key at all): shown as damaged, and
      // replaced online (needsRefresh).
      badKeys.add(cred.serial);
      maintainCredential();
      continue;
    }
    const modules = drawQR(canvas, code.text);
    last = { text: code.text, time: nowS, counter, serial: cred.serial, notAfter: cred.notAfter, modules };
    $("code-note").hidden = true;
    $("code-view").hidden = false;
    canvas.setAttribute("aria-label", t("qr_label", { account: account.id, time: clockTime(nowS * 1000) }));
    $("code-status").textContent = t("code_ready", { time: clockTime(nowS * 1000) });
    renderCountdown();
    return last;
  }
  last = null;
  hideKeepingFocus($("code-view"), $("code-heading"));
  clearQR(canvas);
  canvas.setAttribute("aria-label", t("no_pass"));
  $("code-status").textContent = "";
  renderCountdown();
  return null;
}

function renderCountdown() {
  const s = Math.ceil((60000 - (clock.now() % 60000)) / 1000);
  // A pass that ends before the minute does takes its code away then
  // (schedule): no new code is coming, say when it goes.
  const end = last ? Math.max(0, Math.ceil(((last.notAfter + 1) * 1000 - clock.now()) / 1000)) : s;
  $("countdown").textContent = !last ? "" : end < s ? t("countdown_pass_ends", { s: end }) : t("countdown", { s });
}

// schedule sets the next code for the next minute boundary of the clock.
function schedule() {
  clearTimeout(tickTimer);
  clearInterval(countdownTimer);
  if (!account) return;
  let ms = 60000 - (clock.now() % 60000);
  // A pass that ends before the minute does takes its code away then:
  // validators refuse it from 30 s past the end.
  if (last) ms = Math.max(0, Math.min(ms, (last.notAfter + 1) * 1000 - clock.now()));
  tickTimer = setTimeout(onMinute, ms + 20);
  countdownTimer = setInterval(renderCountdown, 1000);
  renderCountdown();
}

async function onMinute() {
  if (clock.now() % 60000 < 59000 || (last && clock.nowSeconds() > last.notAfter)) {
    // at or just past the boundary (a timer never fires early by a second),
    // or past the end of the pass on screen
    await showCode();
    maintainCredential();
  }
  schedule();
}

// ---- the account view -----------------------------------------------------

// denyText says why the account is blocked: the ledger's own reasons in
// sentences (a code used twice blocks the whole account while the rider
// holds other passes: code_reused_account), an operator's as its word.
function denyText(reason) {
  if (reason === "negative_balance") return t("deny_negative_balance");
  if (reason === "code_reused_account" || reason === "code_reused") return t("deny_duplicate_code");
  return t("deny_other", { reason: reason || "?" });
}

function flagText(flag) {
  if (flag === "duplicate_code") return t("ride_flag_duplicate_code");
  if (flag === "invalid_code") return t("ride_flag_invalid_code");
  return t("ride_flag_other", { flag });
}

// fillTable fills the table NAME (its NAME-body, NAME-table and NAME-none
// elements) with rows of {data, cells}: each cell a text, the columns in
// amounts right-aligned; no rows shows the "none yet" line instead.
function fillTable(name, rows, amounts = []) {
  $(name + "-none").hidden = rows.length > 0;
  $(name + "-table").hidden = rows.length === 0;
  // Its scrolling frame is a stop of the keyboard's (a wide table scrolls
  // with the arrow keys): empty, it was a stop on nothing, a thin focus
  // ring under "No rides yet." and silence from a screen reader.
  $(name + "-table").parentElement.hidden = rows.length === 0;
  const heads = $(name + "-table").querySelectorAll("th");
  $(name + "-body").replaceChildren(
    ...rows.map(({ data, cells }) => {
      const tr = document.createElement("tr");
      Object.assign(tr.dataset, data);
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        // A phone stacks each row (style.css): a cell whose column
        // heading is out of sight names itself.
        td.dataset.label = heads[i]?.textContent ?? "";
        if (amounts.includes(i)) td.className = "amount";
        tr.append(td);
      });
      return tr;
    }),
  );
}

// renderWho names the account signed in, with the name given at sign-up
// (the rider's own, to tell two accounts on one phone apart).
function renderWho() {
  if (!account) return;
  // Not a string: the record was damaged in storage (its name only: the
  // number and secret are checked at start); its TypeError stopped the
  // start before the code, as a damaged clock note's did.
  const name = typeof account.name === "string" ? account.name.trim() : "";
  $("who").textContent = name
    ? t("signed_in_as_named", { account: account.id, name })
    : t("signed_in_as", { account: account.id });
}

function renderView(view) {
  if (!view) {
    $("balance").textContent = "—";
    $("balance-as-of").textContent = "";
    $("standing").textContent = "";
    $("fare-type").textContent = "";
    $("limit-state").textContent = "";
    // Nothing of another account stays on screen.
    fillTable("rides", []);
    fillTable("activity", []);
    earlier = [];
    $("activity-more").hidden = true;
    blocks = { account: null, serials: new Map(), key: "", at: 0 };
    return;
  }
  const a = view.account;
  setCurrencyDigits(a.currency, a.currency_digits);
  const blocksChanged = noteBlocks(a);
  blocks.at = view.at;
  if (blocksChanged && account) {
    // The pass on screen was blocked or unblocked: show it as it is now,
    // and fetch a new one for a blocked pass.
    showCode().then(() => maintainCredential());
  }
  const bal = $("balance");
  bal.textContent = money(a.balance, a.currency);
  bal.classList.toggle("bad", a.balance < 0);
  $("balance-as-of").textContent = t("balance_as_of", { time: dateTime(view.at) });
  const st = $("standing");
  // Below what a new pass needs: the pass on the phone still makes codes,
  // but a ride the balance cannot pay blocks the account (negative_balance).
  // (Below zero with a credit line larger than it: a balance of -9.00 on
  // a credit line of 10.00 pays no 2.50 fare.)
  const low = !a.denied && typeof a.pass_minimum === "number" && a.balance < a.pass_minimum;
  if (passRefusedLow && !a.denied && typeof a.pass_minimum === "number" && !low && account) {
    // Topped up since the pass was refused: "Top up first" is no longer
    // true, and the pass need not wait for the retry.
    passRefusedLow = false;
    credentialRetryAt = 0;
    $("pass-warning").hidden = true;
    maintainCredential();
  }
  st.textContent = a.denied ? denyText(a.deny_reason)
    : low ? t("standing_low", { amount: money(a.pass_minimum, a.currency) }) : t("standing_ok");
  st.className = a.denied ? "bad" : low ? "warning" : "good";
  const profile = t("profile_" + a.profile);
  $("fare-type").textContent = t(a.profile_pending ? "fare_type_pending" : "fare_type", { profile });
  $("limit-state").textContent = a.payment_limit
    ? t("limit_set", { amount: money(a.payment_limit, a.currency) })
    : t("limit_none");
  const rides = (a.recent_rides || []).map((r) => {
    const notes = [];
    if (r.transfer) notes.push(t("ride_transfer"));
    if (r.capped) notes.push(t("ride_capped"));
    if (r.flag) notes.push(flagText(r.flag));
    let charge = money(r.charge, a.currency);
    if (!r.flag && r.charge !== r.base_fare) charge += " " + t("ride_of_fare", { fare: money(r.base_fare, a.currency) });
    return { data: { tap: r.tap_id }, cells: [dateTime(Date.parse(r.time)), shown(r.route), charge, notes.join(", ")] };
  });
  fillTable("rides", rides, [2]);
  // The statement: every top-up, fare, shop payment and refund, newest
  // first, with the balance after it (a rider sees at once what a shop
  // took and gave back).
  // Earlier pages stay under the recent entries while they follow them
  // (postings are numbered 1, 2, … an account); when new ones push the
  // recent entries on, the view goes back to the recent ones alone.
  const recent = a.recent_activity || [];
  if (!recent.length || earlier[0]?.seq !== recent[recent.length - 1].seq - 1) earlier = [];
  const entries = recent.concat(earlier);
  const activity = entries.map((e) => ({
    data: { seq: e.seq, kind: e.kind },
    cells: [dateTime(Date.parse(e.time)), activityText(e), (e.amount > 0 ? "+" : "") + money(e.amount, a.currency),
      money(e.balance, a.currency)],
  }));
  fillTable("activity", activity, [2, 3]);
  if (!entries.length || entries[entries.length - 1].seq <= 1) hideKeepingFocus($("activity-more"), $("activity-heading"));
  else $("activity-more").hidden = false;
}

// moreActivity loads the statement's next page under what is shown.
async function moreActivity() {
  if (!account) return;
  showError(null);
  const view = await store.get("view");
  const shown = (view?.account?.recent_activity || []).concat(earlier);
  const before = shown.length ? shown[shown.length - 1].seq : 0;
  if (before <= 1) return;
  const done = busy($("activity-more"));
  const secret = account.secret;
  try {
    const r = await api("GET", `/v1/accounts/${account.id}/statement?before=${before}&limit=${EARLIER_PAGE}`, {
      token: secret,
    });
    if (account?.secret !== secret) return; // signed out meanwhile
    earlier = earlier.concat(r.entries || []);
    renderView(await store.get("view"));
  } catch (e) {
    if (e instanceof ApiError && e.code === "forbidden") return secretChanged(secret);
    showError(e);
  } finally {
    done($("activity-heading"));
  }
}

// activityText names a statement entry: what the money was for.
function activityText(e) {
  // A refund says why, as the shop gave it (a rider saw money come back
  // and not what for).
  if (e.kind === "refund" && e.reason) return t("act_refund_reason", { merchant: e.merchant_id, reason: shown(e.reason) });
  if (e.kind === "payment" || e.kind === "refund") return t("act_" + e.kind, { merchant: e.merchant_id });
  if (e.kind === "topup" || e.kind === "fare" || e.kind === "fare_correction") return t("act_" + e.kind);
  return e.kind;
}

// refreshError: the message on screen is refreshAccount's, cleared by
// the next refresh that works.
let refreshError = false;
// unreachableError: the message on screen says the server cannot be
// reached (showError).
let unreachableError = false;

// shortHash is the server's short hash of a code's text (paycode.ShortHash:
// the first 12 hex digits of its SHA-256), as the statement names the code
// a shop's payment took.
async function shortHash(text) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return [...d.subarray(0, 6)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// renewIfShopTook shows a new code when the account says a shop's payment
// took the one on screen: shown again on a bus, it would be a code used
// twice, and the pass would be blocked (an online payment always keeps its
// code). The rider is told what the shop took. The codes shops took lately
// are the account's paid_codes (what it took: amount > 0), whatever else
// came since; the newest entries of the statement alone (a server before
// paid_codes) lose a payment under ten refunds of a cent a shop sends after
// it.
//
// A code that shops' payments were refused too often (over the rider's
// limit, or more than the balance: refused_codes) pays no more at shops,
// and the shop asks for a new one: the wallet says so beside it and
// points at "New code" (the rider did not know why the shop wanted
// another). It does not replace it by itself: the bound of three refusals
// a code is what keeps a scanner held over the phone from searching the
// balance, and a code renewed at every refresh would give it three more
// tries each time. Offline the wallet cannot know: the shop says to show a
// new code.
async function renewIfShopTook(view) {
  const on = last;
  if (!on) return;
  const note = $("code-note");
  const paid = await shopTook(view, on);
  if (paid) {
    const now = await showCode();
    if (now && now !== on) {
      note.textContent = t("code_paid_shop", { amount: money(paid.amount, view.account.currency), shop: paid.merchant_id });
      note.className = "good";
      note.hidden = false;
    }
    return;
  }
  const refused = (view.account.refused_codes || []).some((c) =>
    c.serial === on.serial && c.time === on.time && c.counter === on.counter);
  if (refused && last === on) {
    note.textContent = t("code_refused_shop");
    note.className = "warning";
    note.hidden = false;
  }
}

// shopTook returns the shop's payment that took the code shown (code),
// or undefined.
async function shopTook(view, code) {
  const payments = (view.account.paid_codes || []).filter((e) => e.code_hash && e.amount > 0)
    .concat((view.account.recent_activity || []).filter((e) => e.kind === "payment" && e.amount < 0 && e.code_hash)
      .map((e) => ({ code_hash: e.code_hash, merchant_id: e.merchant_id, amount: -e.amount })));
  if (payments.length === 0) return undefined;
  // Hashed here, only when there is a shop's payment to compare: not on
  // the way to showing every code.
  const hash = await shortHash(code.text);
  return payments.find((e) => e.code_hash === hash);
}

async function refreshAccount() {
  if (!(await followStorage())) return;
  const owner = account;
  const secret = account.secret;
  try {
    const a = await api("GET", `/v1/accounts/${account.id}`, { token: secret });
    const view = { account: a, at: clock.now() };
    // Not written back, nor shown, for an account another tab signed
    // out of meanwhile.
    if (!(await store.putView(view, owner))) return followStorage();
    renderView(view);
    $("refresh-status").hidden = true;
    await renewIfShopTook(view);
    if (refreshError) {
      refreshError = false;
      showError(null);
    }
  } catch (e) {
    if (e instanceof ApiError && e.code === "forbidden") return secretChanged(secret);
    if (e instanceof ApiError && e.code !== "network") {
      showError(e);
      refreshError = true;
    }
  }
}

// secretChanged: the server refuses the secret this wallet signed in with
// (changed on another phone, or reset by the operator). The passes issued
// with it are deny-listed, so the wallet forgets the account and its keys
// and asks for the new secret. A request made with a secret this wallet
// has itself replaced since is not a sign of that.
async function secretChanged(secret) {
  if (!account || account.secret !== secret) return;
  // Another tab of this browser changed it (or signed out): that tab's
  // new secret is in the storage they share, and is taken up here.
  if (!(await followStorage()) || account.secret !== secret) return;
  if (await accountRepaired()) return;
  await signOut();
  showError(t("err_secret_changed"));
}

// repairing is the repairAccount under way: the account view and the
// pass are refused together, and ask once.
let repairing = null;

function accountRepaired() {
  if (!repairing) repairing = repairAccount().finally(() => (repairing = null));
  return repairing;
}

// repairAccount: the server refused the account's number with its
// secret, and the pass on the phone, intact, was issued to another
// account. It is the number that changed, not the secret: edited in the
// phone's storage (or a record of the account restored with another's
// number). The wallet signed out, said the secret had been changed on
// another phone, and dropped the secret with the keys: a rider who had
// not written it down lost the account. If the server takes the secret
// for the account the pass names, the wallet goes back to that account
// and says so. It reports whether it did.
async function repairAccount() {
  const mine = account;
  let named;
  try {
    const cred = await store.currentCredential();
    if (!cred || (cred.issued !== undefined && bytesToHex(cred.bytes) !== cred.issued)) return false;
    named = parseCredential(cred.bytes).account;
  } catch {
    return false; // no pass to go by
  }
  if (named === mine.id) return false;
  let a;
  try {
    a = await api("GET", `/v1/accounts/${named}`, { token: mine.secret });
  } catch {
    return false;
  }
  // Read as the rider: a staff token reads any account.
  if (a.viewer !== "rider" || account !== mine) return account !== mine;
  const next = { ...mine, id: named, profile: a.profile, name: a.name || "" };
  if (!(await store.replaceAccount(next, mine))) {
    // The storage changed meanwhile: another tab set the number right
    // (or signed out, or in). Taken up, not signed out: the sign-out
    // cleared the storage the tabs share, the other tab's account and
    // secret with it (TestWalletAccountNumberEditedTwoTabs).
    await followStorage();
    return true;
  }
  account = next;
  renderWho();
  showError(t("err_account_repaired", { account: named, was: mine.id }));
  showCode();
  refreshAll();
  return true;
}

// followStorage follows what another tab of this browser did to the
// storage they share: a secret changed there is taken up; a sign-out
// there is one here too (nothing of the account is shown or written back:
// its keys and pass were removed), and another account signed in there is
// the one shown here. It reports whether this tab goes on with its account.
async function followStorage() {
  if (!account) return false;
  const mine = account;
  let stored;
  try {
    stored = (await store.get("account")) ?? null;
  } catch {
    return true; // storage out of reach: the tab goes on with what it has
  }
  if (!account) return false;
  // This tab replaced its account meanwhile (changeSecret sets the new
  // secret, then writes it): what was read may be from before its own
  // write, not another tab's doing. Taken up, it put the old, dead secret
  // back (TestWalletSecretChangeNotUndoneByFollowing).
  if (account !== mine) return true;
  if (stored && stored.id === account.id) {
    if (stored.secret !== account.secret) {
      account = stored;
      renderWho();
      showCode(); // the pass of the old secret is gone (changeSecret dropped it)
    }
    return true;
  }
  forget();
  if (stored) {
    account = stored;
    await enterMain();
  }
  return false;
}

function refreshAll(force = false) {
  return Promise.allSettled([refreshAccount(), maintainCredential(force)]);
}

// refreshByHand is the Refresh button: offline, or with the server out
// of reach, it says so and how old the balance and activity shown are
// (the button did nothing a rider could see).
async function refreshByHand() {
  const note = $("refresh-status");
  note.hidden = true;
  await refreshAll();
  if (!account || (navigator.onLine && serverReachable)) return;
  let view = null;
  try {
    view = await store.get("view");
  } catch {
    view = null; // damaged in storage: as if none
  }
  const state = navigator.onLine ? "unreachable" : "offline";
  note.textContent = view && Number.isFinite(view.at)
    ? t("refresh_" + state, { time: dateTime(view.at) })
    : t("refresh_" + state + "_never");
  note.hidden = false;
}

function startPolling() {
  clearInterval(pollTimer);
  pollTimer = setInterval(() => {
    if (!document.hidden && navigator.onLine) refreshAll();
  }, POLL_MS);
}

// ---- the flows ------------------------------------------------------------

// enterMain shows the wallet's main screen. byHand: the rider got there
// with a button (signed in, or wrote the new secret down), which the
// screen it was on took away with it: the keyboard's focus, and a screen
// reader, are taken to the code (or the balance, with no code), not left
// on the page's start.
async function enterMain(byHand) {
  show("main");
  showError(null);
  renderWho();
  showKeptClock();
  try {
    renderView(await store.get("view"));
  } catch {
    // A view it cannot show (damaged in storage) stopped the wallet here:
    // no code, offline, and no refresh to replace it online. It is left
    // out; the next refresh writes a new one.
    renderView(null);
  }
  await showCode();
  if (byHand) {
    const heading = [$("code-heading"), $("balance-heading")].find((h) => h.offsetParent);
    if (heading) heading.focus();
  }
  schedule();
  startPolling();
  keepAwake();
  refreshAll();
}

// shown is a route a validator named, with the invisible formatting
// characters and the control characters written as their code points (as
// the console shows them): a validator may send "\u202e24", which would
// read as route "42", or C1 controls, which show as nothing.
function shown(s) {
  return String(s || "").replace(/[\u0000-\u001f\u007f-\u009f\u200b\u2060\ufeff\u202a-\u202e\u2066-\u2069]/g,
    (c) => "<U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + ">");
}

async function showSecret() {
  show("secret");
  $("secret-account").textContent = account.id;
  $("secret-value").textContent = account.secret;
  $("copy-status").textContent = "";
  $("secret-heading").focus();
}

async function register(ev) {
  ev.preventDefault();
  showError(null);
  const done = busy($("register"));
  try {
    const r = await api("POST", "/v1/accounts", { body: { profile: $("profile").value, name: $("name").value.trim() } });
    account = { id: String(r.account.id), secret: r.secret, profile: r.account.profile, name: r.account.name || "" };
    // As at sign-in: another tab may have signed in meanwhile, and its
    // pass (of a higher serial) would be taken for this account's.
    await store.clear();
    await store.put("account", account);
    await store.put("secretKept", false);
    await showSecret();
  } catch (e) {
    showError(e);
  } finally {
    done();
  }
}

async function signIn(ev) {
  ev.preventDefault();
  showError(null);
  const id = $("signin-account").value.trim();
  const secret = $("signin-secret").value.trim();
  if (!/^[1-9][0-9]*$/.test(id)) return showError(t("err_account_format"));
  // Account numbers are the ledger's 64-bit signed integers.
  if (id.length > 19 || BigInt(id) > 9223372036854775807n) return showError(t("err_account_too_long"));
  if (!/^[\x21-\x7e]{1,256}$/.test(secret)) return showError(t("err_secret_format"));
  const done = busy($("signin"));
  try {
    const a = await api("GET", `/v1/accounts/${id}`, { token: secret });
    account = { id, secret, profile: a.profile, name: a.name || "" };
    await store.clear();
    await store.put("account", account);
    await store.put("secretKept", true);
    await store.put("view", { account: a, at: clock.now() });
    $("signin-secret").value = "";
    await enterMain(true);
  } catch (e) {
    showError(e);
  } finally {
    done();
  }
}

// changeSecret asks the server for a new account secret (the old one stops
// working at once, and so do the passes issued before: the server denies
// them) and shows it to be written down, as at sign-up; meanwhile it
// drops the denied pass and fetches a new one with the new secret.
async function changeSecret() {
  showError(null);
  const done = busy($("change-secret-yes"));
  try {
    const r = await api("POST", `/v1/accounts/${account.id}/secret`, { token: account.secret });
    account = { ...account, secret: r.secret };
    await store.put("account", account);
    await store.put("secretKept", false);
    await store.dropCredentials();
    last = null;
    $("change-secret-confirm").hidden = true;
    // After a fetch still under way with the old secret (its pass, if any,
    // is not kept), a new pass with the new one.
    (credentialTask ?? Promise.resolve()).then(() => maintainCredential(true));
    await showSecret();
  } catch (e) {
    // Refused for the passes the account held (a stolen secret used to
    // fill them): "wait until one expires" is no answer to a rider whose
    // secret someone else may know: the operator changes it.
    if (e instanceof ApiError && e.code === "too_many_credentials") return showError(t("err_secret_too_many_credentials"));
    showError(e);
  } finally {
    done($("change-secret"));
  }
}

// saveLimit sets the most a shop may take for one code (empty: no limit):
// a shop's scanner names the amount, the server refuses more.
async function saveLimit(ev) {
  ev.preventDefault();
  showError(null);
  const view = await store.get("view");
  const text = $("limit-amount").value.trim();
  const currency = view?.account?.currency ?? "EUR";
  const amount = text === "" ? 0 : toMinor(text, currency);
  const tooLarge = () => showError(t("limit_too_large", { amount: money(MAX_LIMIT, currency) }));
  // Say which rule the number broke: "99999999999999" is too large and
  // "0.001" has too many decimals, not "not an amount".
  const why = text === "" ? null : notAmount(text, currency);
  if (why === "too_large") return tooLarge();
  const example = amountExample(currency);
  if (why === "decimals") {
    const digits = currencyDigits(currency);
    return showError(t(digits === 0 ? "limit_whole" : "limit_decimals", { digits, example }));
  }
  // 0 would clear the limit (the server's "none"): a rider who types 0 to
  // stop shop payments must not get the opposite.
  if (amount === null || (text !== "" && amount === 0)) return showError(t("limit_bad", { example }));
  if (amount > MAX_LIMIT) return tooLarge();
  const done = busy($("limit-save"));
  const secret = account.secret;
  try {
    await api("PUT", `/v1/accounts/${account.id}/payment_limit`, { token: secret, body: { amount } });
    $("limit-amount").value = "";
    await refreshAccount();
  } catch (e) {
    if (e instanceof ApiError && e.code === "forbidden") return secretChanged(secret);
    showError(e);
  } finally {
    done();
  }
}

async function signOut() {
  await store.clear();
  forget();
}

// forget leaves the account in this tab (the storage is signOut's).
function forget() {
  account = null;
  last = null;
  clearTimeout(tickTimer);
  clearInterval(countdownTimer);
  clearInterval(pollTimer);
  clearQR($("qr"));
  $("sign-out-confirm").hidden = true;
  $("change-secret-confirm").hidden = true; // not left open for the next account
  $("signed-out").hidden = true; // said by the sign-out button alone
  show("welcome");
}

function keepAwake() {
  if (navigator.wakeLock && !document.hidden) navigator.wakeLock.request("screen").catch(() => {});
}

// checkClock warns when the phone's clock (the wallet's) is further from
// the server's than the validators' tolerance: its codes would be refused
// (from the future, or expired) while the rider sees nothing wrong.
// Measured at every answer from the server (its Date header), and kept:
// a wallet opened again offline (at the bus door) says what the last
// measurement found, and when, until the server answers again.
let clockMeasured = false;
function checkClock(serverMs, uncertaintyMs, atMs) {
  clockMeasured = true;
  const phone = clock.now() - (Date.now() - atMs);
  const skew = phone - serverMs;
  const el = $("clock-warning");
  const wrong = Math.abs(skew) - uncertaintyMs > CLOCK_SKEW_S * 1000;
  if (wrong) {
    el.textContent = t(skew > 0 ? "clock_ahead" : "clock_behind", { amount: span(Math.abs(skew)) });
    el.hidden = false;
  } else if (!el.hidden) {
    el.hidden = true;
    el.textContent = "";
  }
  keepClock(wrong ? { skew, at: serverMs } : null);
  renderNet();
}

// The last measurement that found the phone's clock wrong is kept in the
// browser's localStorage, not with the account (IndexedDB): it is the
// phone's, and signing out leaves nothing of the account behind, while
// another tab signed out may still read the server's clock
// (TestWalletSignOutInAnotherTab).
const CLOCK_KEY = "farego-wallet-clock";

function keepClock(v) {
  try {
    if (v) localStorage.setItem(CLOCK_KEY, JSON.stringify(v));
    else localStorage.removeItem(CLOCK_KEY);
  } catch {
    // storage out of reach: nothing kept
  }
}

// showKeptClock shows the last measurement kept, if it found the clock
// wrong and none was made since this page opened.
function showKeptClock() {
  let kept = null;
  try {
    kept = JSON.parse(localStorage.getItem(CLOCK_KEY) || "null");
  } catch {
    return;
  }
  if (clockMeasured || !kept) return;
  // A note damaged in storage (a time no date can show: 1e20) is dropped.
  // Its RangeError stopped the start before the code, the refresh and the
  // polling, at every start, online too: no code, no balance, ever.
  if (!Number.isFinite(kept.skew) || !Number.isFinite(kept.at) || !Number.isFinite(new Date(kept.at).getTime())) {
    keepClock(null);
    return;
  }
  const el = $("clock-warning");
  el.textContent = t(kept.skew > 0 ? "clock_was_ahead" : "clock_was_behind", { amount: span(Math.abs(kept.skew)), time: dateTime(kept.at) });
  el.hidden = false;
  renderNet();
}

// storedAccountSound: the account record read from storage is one that
// register or signIn wrote (a number in decimal, as a pass names it, and
// a secret), not one damaged or edited.
function storedAccountSound(a) {
  return typeof a === "object" && typeof a.id === "string" && /^[1-9][0-9]{0,18}$/.test(a.id) &&
    typeof a.secret === "string" && /^[\x21-\x7e]{1,256}$/.test(a.secret);
}

// ---- a new build of the wallet -------------------------------------------
//
// A new build's service worker installs and waits (sw.js): the page it
// would replace may be showing a code to a reader, or be half way through
// something the rider started. It goes on only when this page says so:
// the rider taps Update, or the page is hidden with no code on screen,
// nothing under way and no secret shown. The page then reloads once, on
// the new build. A page starting with a build waiting shows its code at
// once and offers the button: it never holds a code back for an update.

const UPDATE_CHECK_MS = 60000; // at most one update check a minute by itself
const RELOADED_KEY = "farego-wallet-reloaded"; // sessionStorage: when this tab last reloaded for an update
let swReg = null;
let lastUpdateCheck = -Infinity;
let inFlight = 0; // API calls and the rider's actions under way (busy)
let updateAsked = ""; // "tap" or "auto": this page asked the waiting worker to go on
let reloading = false;
let hadController = "serviceWorker" in navigator && navigator.serviceWorker.controller !== null;

// codeOnScreen: a code is shown (a reader may be reading it).
function codeOnScreen() {
  return last !== null && !$("main").hidden && !$("code-view").hidden;
}

// quiet: nothing the rider started or the page asked is under way, no
// secret is on screen (a new one may not be written down yet), no form
// holds what the rider typed, and no question is open.
function quiet() {
  const typed = ["signin-account", "signin-secret", "name", "limit-amount"].some((id) => $(id) && $(id).value !== "");
  return inFlight === 0 && !credentialTask && !repairing && $("secret").hidden && !typed &&
    $("sign-out-confirm").hidden && $("change-secret-confirm").hidden;
}

// recentlyReloaded: this tab reloaded for an update in the last 30 s: it
// does not ask again by itself (a loop of reloads), it offers the button.
function recentlyReloaded() {
  try {
    const at = Number(sessionStorage.getItem(RELOADED_KEY));
    return Number.isFinite(at) && Math.abs(Date.now() - at) < 30000;
  } catch {
    return false;
  }
}

// updateWaiting: a new build is installed and waits for this page.
function updateWaiting() {
  return swReg !== null && swReg.waiting !== null && navigator.serviceWorker.controller !== null;
}

function renderUpdate() {
  const el = $("update");
  if (!el) return;
  // Not beside a secret to write down: the rider finishes that first.
  const offer = (updateWaiting() || (hadController && controllerSwapped)) && $("secret").hidden;
  if (el.hidden === !offer) return;
  el.hidden = !offer;
}

// controllerSwapped: another tab's update took this page's worker over:
// the page still runs the old build, and offers to reload.
let controllerSwapped = false;

// askUpdate tells the waiting worker to go on; on controllerchange the
// page reloads (reload).
function askUpdate(how) {
  if (!updateWaiting()) return false;
  updateAsked = how;
  swReg.waiting.postMessage("skip-waiting");
  return true;
}

// offerUpdate: a new build is waiting. Hidden, quiet and with no code on
// screen, the page updates by itself; otherwise it shows the button.
function offerUpdate() {
  if (!updateWaiting()) return renderUpdate();
  if (document.hidden && quiet() && !codeOnScreen() && !recentlyReloaded()) {
    askUpdate("auto");
    return;
  }
  renderUpdate();
}

function reload() {
  if (reloading) return;
  reloading = true;
  try {
    sessionStorage.setItem(RELOADED_KEY, String(Date.now()));
  } catch {
    // no session storage: the reload goes on, unguarded
  }
  location.reload();
}

// onControllerChange: the wallet's worker changed. Asked for by a tap, the
// page reloads once; asked for by itself, only if nothing came on screen
// meanwhile; else (another tab updated, or this tab became busy) the
// rider gets the button, and a tap reloads.
function onControllerChange() {
  const had = hadController;
  hadController = true;
  if (!had) return; // the first install took the page over: same build
  const how = updateAsked;
  updateAsked = "";
  // Quiet again at the swap, a tap's too: an action begun after the tap
  // (a secret being changed) must end, its result stored, before a reload.
  if ((how === "tap" && !working()) || (how === "auto" && quiet() && !codeOnScreen())) return reload();
  controllerSwapped = true;
  renderUpdate();
}

// working: a request, a credential being fetched or stored, a repair, or
// a new secret on screen: what a tapped update waits for, before it asks
// and again when the worker changes (an action begun in between ends, its
// result stored, before the reload).
function working() {
  return inFlight !== 0 || !!credentialTask || repairing || !$("secret").hidden;
}

// updateByHand is the Update button: it waits for what is under way (a
// new secret being stored, a request) to end, then updates.
async function updateByHand() {
  const btn = $("update-now");
  btn.disabled = true;
  try {
    while (working()) await new Promise((r) => setTimeout(r, 200));
    if (askUpdate("tap")) return;
    if (controllerSwapped) reload();
  } finally {
    btn.disabled = false;
  }
}

// checkForUpdate asks the browser to look for a new build: at start, when
// the page comes back in sight and when the network comes back, at most
// once a minute.
function checkForUpdate() {
  if (!swReg || !navigator.onLine || performance.now() - lastUpdateCheck < UPDATE_CHECK_MS) return;
  lastUpdateCheck = performance.now();
  swReg.update().catch(() => {}); // offline, or the server out of reach: the next check
}

// watchUpdates follows the registration: a build installed while the page
// is open is offered (offerUpdate).
function watchUpdates(reg) {
  swReg = reg;
  reg.addEventListener("updatefound", () => {
    const w = reg.installing;
    if (!w) return;
    w.addEventListener("statechange", () => {
      if (w.state === "installed") offerUpdate();
    });
  });
  navigator.serviceWorker.addEventListener("controllerchange", onControllerChange);
}

async function init() {
  localize(document);
  onServerTime(checkClock);
  renderNet();
  window.addEventListener("online", () => {
    renderNet();
    checkForUpdate();
    if (account) refreshAll();
  });
  window.addEventListener("offline", renderNet);
  document.addEventListener("visibilitychange", async () => {
    if (document.hidden) {
      if (updateWaiting()) offerUpdate();
      return;
    }
    checkForUpdate();
    if (!account || $("main").hidden) return;
    if (!(await followStorage())) return; // another tab signed out or in meanwhile
    // Timers sleep in the background: a code older than this minute is renewed.
    if (!last || last.time < Math.floor(clock.now() / 60000) * 60) showCode();
    schedule();
    keepAwake();
  });
  clock.onChange(() => {
    if (account && !$("main").hidden) schedule();
  });
  $("register-form").addEventListener("submit", register);
  $("signin-form").addEventListener("submit", signIn);
  $("copy-secret").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(account.secret);
      $("copy-status").textContent = t("copied");
    } catch {
      $("copy-status").textContent = t("copy_failed");
    }
  });
  $("secret-done").addEventListener("click", async () => {
    await store.put("secretKept", true);
    await enterMain(true);
  });
  $("new-code").addEventListener("click", () => showCode());
  // The balance too: a rider who taps "Get a pass" after a top-up
  // should not see the old balance until the next poll.
  $("get-pass").addEventListener("click", () => Promise.all([maintainCredential(true), refreshAccount()]));
  $("refresh").addEventListener("click", refreshByHand);
  $("sign-out").addEventListener("click", () => {
    $("sign-out-confirm").hidden = false;
    $("sign-out-no").focus();
  });
  $("sign-out-no").addEventListener("click", () => {
    $("sign-out-confirm").hidden = true;
    $("sign-out").focus();
  });
  // Signed out by hand: the screen the button was on went away, the
  // page stayed scrolled where the footer was (the middle of the sign-in
  // forms on a phone) and the focus fell to its start, with no word that
  // anything was done. It says so, at the top, with the focus on it.
  $("sign-out-yes").addEventListener("click", async () => {
    await signOut();
    const note = $("signed-out");
    note.hidden = false;
    window.scrollTo(0, 0);
    note.focus();
  });
  $("change-secret").addEventListener("click", () => {
    $("change-secret-confirm").hidden = false;
    $("change-secret-no").focus();
  });
  $("change-secret-no").addEventListener("click", () => {
    $("change-secret-confirm").hidden = true;
    $("change-secret").focus();
  });
  $("change-secret-yes").addEventListener("click", changeSecret);
  $("limit-form").addEventListener("submit", saveLimit);
  $("activity-more").addEventListener("click", moreActivity);

  $("update-now").addEventListener("click", updateByHand);
  if ("serviceWorker" in navigator) {
    // register waits behind the browser's own update check (a whole
    // install, on a slow network): the start does not. getRegistration
    // answers at once, with a build that waits if there is one.
    let reg = null;
    try {
      reg = (await navigator.serviceWorker.getRegistration("./")) ?? null;
    } catch {
      reg = null; // no service worker (an insecure page): online only, as before
    }
    // A build waiting as the page starts is not taken here: the code
    // shows at once (a rider at the bus door never waits for an update);
    // the button is offered, and the update comes with the rider's tap or
    // when the page is hidden with nothing on screen (offerUpdate).
    if (reg) watchUpdates(reg);
    navigator.serviceWorker.register("sw.js", { scope: "./" }).then((r) => {
      if (!swReg) watchUpdates(r);
      checkForUpdate();
      offerUpdate();
    }).catch(() => {});
  }

  try {
    account = (await store.get("account")) ?? null;
  } catch {
    show("welcome");
    return showError(t("err_storage"));
  }
  if (!account) return show("welcome");
  if (!storedAccountSound(account)) {
    // Its number no longer matches its passes': each was fetched, found
    // not this account's and dropped, one a minute, until the server
    // refused the account a 17th (its other phones too, for a day).
    account = null;
    await store.clear();
    show("welcome");
    return showError(t("err_storage_damaged"));
  }
  if (!(await store.get("secretKept"))) return showSecret();
  await enterMain();
}

// The page is ready once init has run (tests wait for this mark).
init().finally(() => {
  document.body.dataset.ready = "true";
});
