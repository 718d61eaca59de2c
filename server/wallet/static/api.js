// Calls to the settlement server's HTTP API, on the wallet's own origin.
// Every failure becomes an ApiError with a stable code: the API's own
// ({"error": {"code", "message"}}), or "network" when the server cannot be
// reached (no answer, or a gateway's 502, 503 or 504 page: the proxy in
// front is up, the server behind it is not), or "http_<status>" for another
// reply that is not the API's JSON. The wallet shows the code's sentence
// from the catalog, never the body.

export class ApiError extends Error {
  constructor(code, status, retryAfter, detail) {
    super(`api: ${code} (${status})`);
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter; // seconds, for rate_limited, or undefined
    // For insufficient_funds when a pass is asked for: the balance a pass
    // needs (minimum_balance, minor units) and its currency; else undefined.
    this.detail = detail;
  }
}

const TIMEOUT_MS = 15000;

let serverTimeListener = null;

/**
 * onServerTime calls fn(serverMs, uncertaintyMs, atMs) with the server's
 * clock read from each answer's Date header (whole seconds) and when, on
 * the phone's Date.now clock, it was read (the middle of the exchange).
 */
export function onServerTime(fn) {
  serverTimeListener = fn;
}

export async function call(method, path, { token, body } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  const sentAt = Date.now();
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch {
    throw new ApiError("network", 0);
  }
  const receivedAt = Date.now();
  const date = Date.parse(resp.headers.get("Date") ?? "");
  if (serverTimeListener && Number.isFinite(date)) {
    // Date is truncated to the second: the server's time was date..date+1s,
    // read between sentAt and receivedAt.
    serverTimeListener(date + 500, 500 + (receivedAt - sentAt) / 2, (sentAt + receivedAt) / 2);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const apiError = data && data.error && typeof data.error.code === "string";
    if (!apiError && (resp.status === 502 || resp.status === 503 || resp.status === 504)) {
      throw new ApiError("network", resp.status);
    }
    let code = apiError ? data.error.code : "http_" + resp.status;
    // 429 is the sign-up limit for a new account, the limit on riders'
    // changes (payment limit, profile, secret) for anything else.
    if (resp.status === 429) code = method === "POST" && path === "/v1/accounts" ? "rate_limited" : "rate_limited_changes";
    const ra = parseInt(resp.headers.get("Retry-After") ?? "", 10);
    let detail;
    const e = apiError ? data.error : {};
    if (Number.isSafeInteger(e.minimum_balance) && e.minimum_balance > 0 && typeof e.currency === "string" && /^[A-Z]{3}$/.test(e.currency)) {
      detail = { minimumBalance: e.minimum_balance, currency: e.currency };
    }
    throw new ApiError(code, resp.status, Number.isFinite(ra) ? ra : undefined, detail);
  }
  if (data === null) throw new ApiError("http_" + resp.status, resp.status);
  return data;
}
