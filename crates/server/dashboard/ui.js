// Pieces every view shares: the confirmation and token dialogs, toasts, the banner, badges,
// buttons, error panels.

import { h, replace } from "./dom.js";
import { allowPrompt, setToken, token } from "./api.js";

/** Asks the user to confirm an action; resolves to true if they did. */
export function confirmAction({ title, text, ok = "Confirm", danger = false }) {
  const dialog = document.getElementById("confirm-dialog");
  if (dialog.open) return Promise.resolve(false);
  const form = document.getElementById("confirm-form");
  const okButton = document.getElementById("confirm-ok");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  okButton.textContent = ok;
  okButton.className = danger ? "btn btn-danger" : "btn btn-primary";
  return new Promise((resolve) => {
    const finish = (answer) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      dialog.close();
      resolve(answer);
    };
    const onSubmit = (event) => { event.preventDefault(); finish(true); };
    const onCancel = (event) => { event.preventDefault(); finish(false); };
    const cancel = document.getElementById("confirm-cancel");
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    cancel.focus();
  });
}

/** Asks for a bearer token, saying why; resolves to it, or null if the user cancelled. */
export function askToken(reason) {
  const dialog = document.getElementById("token-dialog");
  if (dialog.open) return Promise.resolve(null);
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const forget = document.getElementById("token-forget");
  const cancel = document.getElementById("token-cancel");
  document.getElementById("token-reason").textContent =
    (reason ? `The server says: ${reason}. ` : "") +
    "The token is kept in this tab only (session storage) and sent as " +
    "Authorization: Bearer.";
  forget.hidden = !token();
  input.value = "";
  return new Promise((resolve) => {
    const finish = (answer) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      forget.removeEventListener("click", onForget);
      dialog.removeEventListener("cancel", onCancel);
      dialog.close();
      resolve(answer);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (value) finish(value);
    };
    const onCancel = (event) => { event.preventDefault(); finish(null); };
    const onForget = () => {
      setToken(null);
      toast("info", "Token forgotten");
      finish(null);
    };
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    forget.addEventListener("click", onForget);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
}

/** The event sent on `window` when the user changed the token. */
export const TOKEN_CHANGED = "floodway:token";

/** The Token buttons: change or forget the token, then read everything again. */
export async function changeToken() {
  const given = await askToken(null);
  if (given) {
    setToken(given);
    toast("info", "Using the new token");
  }
  allowPrompt();
  window.dispatchEvent(new Event(TOKEN_CHANGED));
}

/** A line of what an error means to the user, with 401 and 403 spelled out. */
export function describe(error) {
  if (error.status === 403) return `Forbidden (403): ${error.message}`;
  if (error.status === 401) return `Not signed in (401): ${error.message}`;
  if (error.status === 0) return error.message;
  return `${error.message} (${error.status} ${error.code})`;
}

/** A message that goes away by itself: kind is "ok", "info" or "error". */
export function toast(kind, text) {
  const node = h("div", { class: ["toast", "toast-" + kind], role: kind === "error" ? "alert" : "status" }, text);
  document.getElementById("toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 10000 : 5000);
}

/** Shows or hides the banner under the header (for errors of the live updates). */
export function banner(error) {
  const node = document.getElementById("banner");
  if (!error) {
    node.hidden = true;
    node.replaceChildren();
    return;
  }
  node.hidden = false;
  node.className = error.status === 403 ? "banner banner-forbidden" : "banner";
  replace(node, h("span", {}, describe(error)), tokenButton(error));
}

function tokenButton(error) {
  if (error.status !== 401 && error.status !== 403) return null;
  return h("button", { class: "btn btn-small", type: "button", onclick: changeToken },
    error.status === 401 ? "Enter token" : "Use another token");
}

/** A panel in place of content that could not be loaded. */
export function errorPanel(error) {
  return h("div", { class: ["error-panel", error.status === 403 && "forbidden"], role: "alert" },
    h("strong", {}, error.status === 403 ? "Forbidden" : error.status === 401 ? "Token needed" : "Could not load"),
    h("span", {}, describe(error)),
    tokenButton(error));
}

/** Runs an action from a button: disables it meanwhile, toasts the outcome. */
export async function act(button, action, success) {
  button.disabled = true;
  try {
    const result = await action();
    if (success) toast("ok", typeof success === "function" ? success(result) : success);
    return result;
  } catch (error) {
    toast("error", describe(error));
    return undefined;
  } finally {
    button.disabled = false;
  }
}

/** A small coloured label. */
export function badge(text, kind) {
  return h("span", { class: ["badge", kind && "badge-" + kind] }, text);
}

/** A state's label, coloured by state. */
export function stateBadge(state) {
  return h("span", { class: ["badge", "state-" + state] }, state);
}

/** A button. */
export function button(label, onclick, { kind = "", small = true, attrs = {} } = {}) {
  return h("button", {
    type: "button",
    class: ["btn", small && "btn-small", kind && "btn-" + kind],
    onclick,
    ...attrs,
  }, label);
}

/** An empty-state line inside a table body. */
export function emptyRow(columns, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: columns }, text));
}
