// Fails when the TypeScript example in the repository's README.md is not
// examples/quickstart.ts word for word. The README's copy is the fenced
// block right after the line `<!-- clients/js/examples/quickstart.ts -->`;
// edit the example file (which `tsc --noEmit` type-checks), then copy it
// there.

import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const readmePath = path.resolve(here, "..", "..", "..", "README.md");
const examplePath = path.resolve(here, "..", "examples", "quickstart.ts");
const MARKER = "<!-- clients/js/examples/quickstart.ts -->";

const [readme, example] = await Promise.all([readFile(readmePath, "utf8"), readFile(examplePath, "utf8")]);
const fail = (why) => {
  console.error(`README.md: ${why}`);
  process.exit(1);
};

const lines = readme.split("\n");
const at = lines.findIndex((line) => line.trim() === MARKER);
if (at < 0) fail(`no line ${MARKER} before the TypeScript example`);
if (lines[at + 1]?.trim() !== "```ts") fail(`the line after ${MARKER} must open a \`\`\`ts block`);
const end = lines.findIndex((line, i) => i > at + 1 && line.trim() === "```");
if (end < 0) fail("the TypeScript example's block is not closed");
const block = `${lines.slice(at + 2, end).join("\n")}\n`;
if (block !== example) {
  const a = block.split("\n");
  const b = example.split("\n");
  let i = 0;
  while (a[i] === b[i]) i++;
  fail(
    `the TypeScript example differs from clients/js/examples/quickstart.ts at its line ${i + 1}:\n` +
      `  README:  ${a[i] ?? "<end>"}\n  example: ${b[i] ?? "<end>"}\n` +
      "Copy the example file into the README block.",
  );
}
console.log("README.md's TypeScript example is examples/quickstart.ts");
