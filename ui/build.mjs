// Builds the pages into a folder: `node build.mjs dist` (npm run build), or
// `node build.mjs --check` (npm run check), which builds into a temporary
// folder and fails when it differs from the checked-in dist/. The service
// embeds dist/ at compile time (src/http/ui.rs), so dist/ must be current.

import { build } from "esbuild";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, "src");
// The pages use the TypeScript client from its sources in this repository
// (clients/js/src, imported as @latchkey/client; tsconfig.json maps the name
// the same way). Its own imports (@serenity-kit/opaque, openapi-fetch) come
// from ui/node_modules, at the versions ui/package-lock.json pins, whether
// or not clients/js has its own node_modules: the bundle depends on this
// folder's `npm ci` alone.
const client = path.resolve(here, "../clients/js/src");

/** Resolves the client's sources and its package imports from here. */
const clientFromSource = {
  name: "latchkey-client-source",
  setup(b) {
    b.onResolve({ filter: /^@latchkey\/client$/ }, () => ({ path: path.join(client, "index.ts") }));
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (!args.importer.startsWith(client + path.sep) || args.pluginData === "from-ui") return undefined;
      return b.resolve(args.path, { kind: args.kind, resolveDir: here, pluginData: "from-ui" });
    });
  },
};
const STATIC = ["index.html", "admin.html", "style.css"];
const ENTRIES = { self: "self.ts", admin: "admin.ts" };

async function buildInto(out) {
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  await build({
    entryPoints: Object.fromEntries(Object.entries(ENTRIES).map(([name, file]) => [name, path.join(src, file)])),
    outdir: out,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["es2022"],
    minify: true,
    // The bundles carry no comments; the licences of what they include are
    // in the packages (see ui/package.json).
    legalComments: "none",
    charset: "utf8",
    logLevel: "warning",
    plugins: [clientFromSource],
  });
  for (const file of STATIC) await copyFile(path.join(src, file), path.join(out, file));
}

async function files(dir) {
  return (await readdir(dir)).sort();
}

if (process.argv[2] === "--check") {
  const tmp = await mkdtemp(path.join(os.tmpdir(), "latchkey-ui-"));
  try {
    await buildInto(tmp);
    const dist = path.join(here, "dist");
    const want = await files(tmp);
    const have = await files(dist).catch(() => []);
    const problems = [];
    for (const name of new Set([...want, ...have])) {
      if (!want.includes(name)) problems.push(`dist/${name} is not built any more`);
      else if (!have.includes(name)) problems.push(`dist/${name} is missing`);
      else if (!(await readFile(path.join(tmp, name))).equals(await readFile(path.join(dist, name)))) {
        problems.push(`dist/${name} differs from a fresh build`);
      }
    }
    if (problems.length) {
      console.error(`ui: the checked-in dist/ is not what the sources build:\n  ${problems.join("\n  ")}\nRun \`npm run build --prefix ui\` and commit ui/dist.`);
      process.exit(1);
    }
    console.log(`ui: dist/ is up to date (${want.length} files)`);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
} else {
  const out = path.resolve(here, process.argv[2] ?? "dist");
  await buildInto(out);
  console.log(`ui: built ${(await files(out)).join(", ")} into ${path.relative(process.cwd(), out) || "."}`);
}
