// Drives the example app's upload page in headless Chromium (playwright-core with
// Debian's /usr/bin/chromium): picks FILE, waits for its progress bar to reach 100%,
// finds it in the list and downloads it back through the page's own session.
//   node browser_upload.js URL FILE OUT_DIR
// Writes OUT_DIR/downloaded.bin and OUT_DIR/page.png; prints the highest progress seen.
const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const [url, file, out] = process.argv.slice(2);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  try {
    const page = await browser.newPage();
    page.on("console", (m) => console.error("console:", m.text()));
    page.on("response", (r) => { if (r.status() >= 400) console.error("HTTP", r.status(), r.url()); });
    await page.goto(url);
    await page.waitForFunction(() => typeof tus !== "undefined" && handle !== null);
    await page.setInputFiles("#pick", file);
    const row = page.locator(".row").first();
    let highest = 0;
    const deadline = Date.now() + 120000;
    while (Date.now() < deadline) {
      highest = Math.max(highest, Number((await row.getAttribute("data-progress")) || 0));
      const state = await row.getAttribute("data-state");
      if (state === "error") throw new Error(await row.locator(".state").innerText());
      if (state === "done") break;
      await page.waitForTimeout(100);
    }
    // The last progress event and "done" may land between two samples: read it once more.
    highest = Math.max(highest, Number((await row.getAttribute("data-progress")) || 0));
    const name = path.basename(file);
    const link = page.locator("a.file", { hasText: name });
    await link.waitFor({ timeout: 20000 });
    const href = await link.getAttribute("href");
    const resp = await page.request.get(new URL(href, url).toString());
    if (resp.status() !== 200) throw new Error("download status " + resp.status());
    fs.writeFileSync(path.join(out, "downloaded.bin"), await resp.body());
    await page.screenshot({ path: path.join(out, "page.png"), fullPage: true });
    console.log(String(highest));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
