// The stations dashboard in a real, headless Chromium (Debian's
// /usr/bin/chromium, or $CHROMIUM), driven by playwright-core.
//
//   node dashboard.mjs BASE_URL SCREENSHOT_PATH
//
// Run by tests/integration/browser.rs, which owns the servers. The two talk
// in lines: this script prints one JSON object per step on stdout and waits
// for the test's word on stdin where the test must act.
//
//   -> {"step": "swapped", "latency_ms": n}   a swap through the API showed up
//   <- killed                                 the test killed the server
//   -> {"step": "disconnected"}               the page says so
//   <- restarted                              the test changed station 2
//                                             elsewhere and restarted the server
//   -> {"step": "reconnected"}                the page is live and shows the
//                                             server's current data
//
// Any failure throws: the exit status is not 0 and stderr says why. Waits
// are for events (selectors, functions); their timeouts only turn a hang
// into a failure.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  throw new Error("usage: node dashboard.mjs BASE_URL SCREENSHOT_PATH");
}
const PATIENCE = 15_000;

const stdin = createInterface({ input: process.stdin });
const words = stdin[Symbol.asyncIterator]();
async function expectWord(word) {
  const { value, done } = await words.next();
  if (done || value.trim() !== word) {
    throw new Error(`expected "${word}" from the test, got ${done ? "the end" : value}`);
  }
}
const say = (step) => console.log(JSON.stringify(step));

async function api(method, path) {
  const response = await fetch(base + path, { method, body: method === "POST" ? "{}" : undefined });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

const charged = (page, id) => page.textContent(`#station-${id} td.charged`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 420 } });
  page.on("pageerror", (err) => console.error("page error:", err));
  await page.goto(base + "/");
  await page.waitForSelector('#connection[data-state="open"]', { timeout: PATIENCE });
  await page.waitForSelector("#station-1 td.charged", { timeout: PATIENCE });

  // Station 4 is seeded with 2 charged batteries: highlighted as low.
  if (!(await page.$("#station-4.low"))) throw new Error("station 4 is not highlighted as low");

  // A swap through the API shows up without a reload.
  const before = Number(await charged(page, 1));
  const started = performance.now();
  const station = await api("POST", "/api/stations/1/swaps/");
  if (station.inventory.charged !== before - 1) {
    throw new Error(`the API says ${station.inventory.charged} charged, the page said ${before}`);
  }
  await page.waitForFunction(
    (want) => document.querySelector("#station-1 td.charged")?.textContent === String(want),
    station.inventory.charged,
    { timeout: PATIENCE },
  );
  const latency = Math.round(performance.now() - started);
  await page.screenshot({ path: screenshot });
  say({ step: "swapped", latency_ms: latency });

  // The server goes away: the page says so and keeps trying.
  const station2Before = await charged(page, 2);
  await expectWord("killed");
  await page.waitForSelector('#connection[data-state="closed"]', { timeout: PATIENCE });
  say({ step: "disconnected" });

  // It comes back (station 2 changed meanwhile): the page reconnects and
  // shows what the server has now.
  await expectWord("restarted");
  await page.waitForSelector('#connection[data-state="open"]', { timeout: 60_000 });
  const current = await api("GET", "/api/stations/");
  await page.waitForFunction(
    (stations) =>
      stations.every(
        (s) => document.querySelector(`#station-${s.id} td.charged`)?.textContent ===
          String(s.inventory.charged),
      ),
    current,
    { timeout: PATIENCE },
  );
  if ((await charged(page, 2)) === station2Before) {
    throw new Error("station 2 shows what it had before the restart");
  }
  say({ step: "reconnected" });
} finally {
  await browser.close();
  stdin.close();
}
