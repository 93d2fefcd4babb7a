// The only code that talks to the server: the public HTTP API (/openapi.json), with the
// user's bearer token when there is one.
//
// The token lives in sessionStorage: it survives a reload but not the tab, and it is sent
// only to this origin. When the API answers 401, the user is asked for a token (once for all
// the requests waiting on it) and the request is sent again with it; 403 and every other
// error reach the caller as an ApiError with the server's code and message.

const TOKEN_KEY = "floodway.token";

/** An error answer of the API, or a failure to reach it (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || null;
  }
}

let prompt = async () => null;
let pending = null;
let declined = false;

/**
 * Sets how the user is asked for a token: `ask(reason)` resolves to the token, or null if the
 * user declined (then requests answered 401 fail until `allowPrompt` is called).
 */
export function setTokenPrompt(ask) {
  prompt = ask;
}

/** Asks for a token again at the next 401 (after the user declined once). */
export function allowPrompt() {
  declined = false;
}

/** The token in use, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Uses `value` as the token from now on (null forgets it). */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function askOnce(reason) {
  if (!pending) {
    pending = Promise.resolve(prompt(reason)).then((given) => {
      pending = null;
      if (given) setToken(given);
      else declined = true;
      return given;
    });
  }
  return pending;
}

async function readError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status is all there is.
  }
  const error = body && body.error;
  return new ApiError(
    response.status,
    error ? error.code : "http_" + response.status,
    error ? error.message : `the server answered ${response.status} ${response.statusText}`,
    error ? error.details : null,
  );
}

/**
 * Calls the API: `call("GET", "v1/queues")`, `call("POST", "v1/dead-letters/replay", {body})`,
 * `call("GET", "v1/tasks", {query: {queue, state}})`. Paths are relative to the page, so the
 * dashboard works behind a proxy that serves it under a prefix. Resolves to the JSON answer.
 */
export async function call(method, path, { body, query } = {}) {
  const url = new URL(path, document.baseURI);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  for (;;) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    const current = token();
    if (current) headers.authorization = "Bearer " + current;
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (failure) {
      throw new ApiError(0, "unreachable", `the server does not answer (${failure.message})`);
    }
    if (response.status === 401) {
      const error = await readError(response);
      // Another request got a new token while this one was on its way: try with that.
      if (token() && token() !== current) continue;
      if (declined) throw error;
      const given = await askOnce(error.message);
      if (!given) throw error;
      continue;
    }
    if (!response.ok) throw await readError(response);
    return response.json();
  }
}
