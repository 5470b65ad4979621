// Builds the live page into ONE self-contained HTML file (script and style
// inlined, no CDN, no fonts to fetch) at src/shell/ui/index.html, which the
// server embeds with include_str!. The built file is committed so `cargo
// build` needs no Node; `--check` fails when it differs from a fresh build.
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");
const out = resolve(root, "../../src/shell/ui/index.html");
const check = process.argv.includes("--check");

const bundled = await build({
  entryPoints: [resolve(root, "page/main.ts")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  // The Node-only fallback to the `ws` package is never reached in a browser.
  external: ["ws"],
  write: false,
  legalComments: "none",
  logLevel: "warning",
});
const script = bundled.outputFiles[0].text.trim();
const style = (await readFile(resolve(root, "page/style.css"), "utf8")).trim();
if (/<\/script/i.test(script) || /<\/style/i.test(style)) {
  throw new Error("the bundle contains a closing tag that would end its inline element");
}
const template = await readFile(resolve(root, "page/index.html"), "utf8");
const html = template.replace("/*STYLE*/", () => style).replace("/*SCRIPT*/", () => script);
if (!html.includes('<script id="ws-realtime-config" type="application/json">{}</script>')) {
  throw new Error("the page lost the config placeholder the dev server fills in");
}

const shown = relative(process.cwd(), out);
if (check) {
  const committed = await readFile(out, "utf8").catch(() => "");
  if (committed !== html) {
    console.error(`${shown} differs from a fresh build of clients/js/page: run \`npm run build\` in clients/js and commit it`);
    process.exit(1);
  }
  console.log(`${shown} matches a fresh build (${html.length} bytes)`);
} else {
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, html);
  console.log(`wrote ${shown} (${html.length} bytes)`);
}
