// The wallet's clock. Everything that depends on the time (code time, the
// minute tick, the countdown, credential age) reads it here, so a test can
// move it: setOffset shifts it and tells the listeners, which reschedule.

let offset = 0;
const listeners = new Set();

/** now returns the wallet's time in milliseconds since the epoch. */
export function now() {
  return Date.now() + offset;
}

/** nowSeconds returns the wallet's time in whole unix seconds. */
export function nowSeconds() {
  return Math.floor(now() / 1000);
}

/** setOffset makes the clock run offsetMs ahead of the system clock. */
export function setOffset(offsetMs) {
  offset = offsetMs;
  for (const fn of listeners) fn();
}

/** onChange calls fn whenever the clock is moved. */
export function onChange(fn) {
  listeners.add(fn);
}
