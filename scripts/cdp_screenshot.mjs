// Waits `wait_ms` of real time on a page in an already running headless Chromium (started
// with --remote-debugging-port), then writes a PNG screenshot. Node ≥ 20 with
// --experimental-websocket; no packages.
//   node --experimental-websocket scripts/cdp_screenshot.mjs DEBUG_PORT URL OUT.png WAIT_MS
import { writeFileSync } from "node:fs";

const [port, url, out, waitMs] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let targets = [];
for (let i = 0; i < 100 && !targets.some((t) => t.type === "page"); i++) {
  try {
    targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  } catch {
    await sleep(200);
  }
}
const page = targets.find((t) => t.type === "page");
if (!page) throw new Error("no page target in Chromium");
const ws = new WebSocket(page.webSocketDebuggerUrl);
await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
let next = 0;
const pending = new Map();
ws.onmessage = (event) => {
  const message = JSON.parse(event.data);
  if (message.id && pending.has(message.id)) {
    pending.get(message.id)(message);
    pending.delete(message.id);
  }
};
const call = (method, params = {}) =>
  new Promise((resolve) => {
    const id = ++next;
    pending.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });

await call("Page.enable");
await call("Page.navigate", { url });
await sleep(Number(waitMs));
const shot = await call("Page.captureScreenshot", { format: "png" });
if (!shot.result) throw new Error(`screenshot failed: ${JSON.stringify(shot.error)}`);
writeFileSync(out, Buffer.from(shot.result.data, "base64"));
ws.close();
