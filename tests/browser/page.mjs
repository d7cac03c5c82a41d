// The operator page in a real browser (Debian's Chromium through playwright-core), against a
// running `flowhost serve` prepared by tests/tests/page.rs:
//   node page.mjs BASE_URL TOKEN SCREENSHOT_DIR EXPECTED_AFTER_ROLLBACK
// Each check throws with what it saw; the last line printed is a JSON summary.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const [base, token, shots, rolledBackTo] = process.argv.slice(2);
const executablePath = process.env.FLOWHOST_CHROMIUM || "/usr/bin/chromium";
mkdirSync(shots, { recursive: true });

const api = async (path) => {
  const r = await fetch(base + path);
  return r.headers.get("content-type")?.startsWith("application/json")
    ? r.json()
    : (await r.text()).split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
};

// Until `check` holds, at most `ms`.
async function until(what, check, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${ms} ms${last ? ` (${last.message})` : ""}`);
}

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const summary = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(e.message));

  const answer = await page.goto(base + "/");
  assert.equal(answer.status(), 200);
  const csp = answer.headers()["content-security-policy"];
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  await page.waitForSelector("body[data-loaded=true]", { timeout: 20000 });

  // The counts on the page are GET /v1/models's (compared until they agree: the page
  // refreshes every 2 s, and the host may still be re-projecting).
  let models;
  await until("the page's counts to equal GET /v1/models", async () => {
    models = await api("/v1/models");
    for (const m of models.models) {
      for (const count of ["references", "keyed", "pending", "dirty"]) {
        const shown = await page.textContent(`tr[data-model="${m.model}"] td[data-count="${count}"]`);
        assert.equal(Number(shown), m.counts[count], `${m.model} ${count}`);
      }
      const version = await page.getAttribute(`tr[data-model="${m.model}"] td[data-field="version"] code`, "title");
      assert.equal(version, m.plugin_version, `${m.model} version`);
    }
    return true;
  });
  summary.models = models.models.length;
  assert.equal(await page.textContent("#ready"), "ready");

  // The shadow run beside device, under its plugin.
  await until("the shadow run to show", async () => {
    const shown = await page.$('[data-shadow="device"]');
    return shown !== null && /records compared/.test(await shown.textContent());
  });

  // Parked records filter by reason.
  const parked = await api("/v1/parked?limit=1000");
  const reasons = [...new Set(parked.map((p) => p.reason))];
  assert.ok(reasons.length >= 1, "the demo data has parked records");
  const reason = parked.some((p) => p.reason === "NO_KEYS") ? "NO_KEYS" : reasons[0];
  const expected = parked.filter((p) => p.reason === reason).length;
  await page.selectOption("#parked-reason", reason);
  await until("the parked list to filter", async () => {
    const rows = await page.$$eval("#parked tbody tr", (rs) => rs.map((r) => r.dataset.reason));
    return rows.length === Math.min(expected, 100) && rows.every((r) => r === reason);
  });
  summary.parked_shown = Math.min(expected, 100);
  summary.reason = reason;
  await page.screenshot({ path: `${shots}/operator-page.png`, fullPage: true });

  // Re-queue without the token: refused, and the page says so; nothing moves.
  await page.click("#requeue");
  await until("the refusal to show", async () =>
    /re-queue refused \(401\)/.test(await page.textContent("#message")),
  );
  assert.equal((await api(`/v1/parked?reason=${reason}&limit=1000`)).length, expected);

  // With the token: the records leave parked (association is idle for this test).
  await page.fill("#token", token);
  await page.click("#requeue");
  await until("the re-queue to be reported", async () =>
    new RegExp(`re-queued ${expected} parked records`).test(await page.textContent("#message")),
  );
  assert.equal((await api(`/v1/parked?reason=${reason}&limit=1000`)).length, 0);
  await until("the page to show them pending", async () => {
    const m = (await api("/v1/models")).models;
    const pending = m.reduce((n, x) => n + x.counts.pending, 0);
    const shown = await page.$$eval('td[data-count="pending"]', (cs) => cs.reduce((n, c) => n + Number(c.textContent), 0));
    return pending >= expected && shown === pending;
  });
  summary.requeued = expected;

  // Roll the device plugin back: the version shown changes.
  await page.click('tr[data-model="device"] button');
  await until("the rolled-back version to show", async () =>
    (await page.getAttribute('tr[data-model="device"] td[data-field="version"] code', "title")) === rolledBackTo,
  );
  assert.match(await page.textContent("#message"), /device: version [0-9a-f]{12} is current now/);

  // A phone's width: readable, nothing wider than the screen but the tables' own scrolling.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow}px wider than a phone`);
  await page.screenshot({ path: `${shots}/operator-page-phone.png`, fullPage: true });

  // The one refusal the test asked for (the re-queue without the token) aside.
  const unexpected = problems.filter((p) => !/status of 401/.test(p));
  assert.deepEqual(unexpected, [], "no script errors or refused loads in the console");
} finally {
  await browser.close();
}
console.log(JSON.stringify(summary));
