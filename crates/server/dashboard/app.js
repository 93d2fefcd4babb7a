// The dashboard's entry point: the hash router (#/, #/queues/NAME, #/tasks/ID, #/dead), the
// header (live status, pause of updates, token), and the live readings every view redraws on.

import { setTokenPrompt, token } from "./api.js";
import { Live } from "./live.js";
import { time } from "./format.js";
import { TOKEN_CHANGED, askToken, banner, changeToken } from "./ui.js";
import * as queues from "./queues.js";
import * as queue from "./queue.js";
import * as task from "./task.js";
import * as dead from "./dead.js";

const live = new Live();
const root = document.getElementById("view");
let view = null;

/** The view a location hash names, with its parameters. */
function route(hash) {
  const [path, search] = hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  if (parts[0] === "queues" && parts[1]) return { module: queue, nav: "queues", params: { name: parts[1], query } };
  if (parts[0] === "tasks" && parts[1]) return { module: task, nav: "queues", params: { id: parts[1], query } };
  if (parts[0] === "dead") return { module: dead, nav: "dead", params: { query } };
  return { module: queues, nav: "queues", params: { query } };
}

function show() {
  const { module, nav, params } = route(location.hash);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === nav);
  }
  view = module.mount(root, params, live);
  document.title = `${view.title} · floodway`;
  window.scrollTo(0, 0);
}

function status() {
  const node = document.getElementById("live");
  node.className = "live " + (live.paused ? "live-paused" : live.error ? "live-error" : live.latest ? "live-ok" : "");
  node.textContent = live.paused ? "Updates paused"
    : live.error ? "Update failed"
      : live.latest ? `Live · ${time(live.latest.t).slice(11)}` : "connecting…";
  document.getElementById("live-toggle").textContent = live.paused ? "Resume updates" : "Pause updates";
  document.getElementById("token-button").textContent = token() ? "Token ✓" : "Token";
  banner(live.error);
}

setTokenPrompt(askToken);
live.subscribe(() => {
  status();
  if (view) view.update();
});
document.getElementById("live-toggle").addEventListener("click", () => live.setPaused(!live.paused));
document.getElementById("token-button").addEventListener("click", changeToken);
window.addEventListener(TOKEN_CHANGED, () => {
  live.refresh();
  show();
});
window.addEventListener("hashchange", show);
show();
status();
live.start();
