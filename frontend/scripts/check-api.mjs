// Drift check: regenerate the API types from openapi.json into a temp file and
// fail if they differ from the committed src/api/schema.d.ts.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const committed = join(root, "src/api/schema.d.ts");
const dir = mkdtempSync(join(tmpdir(), "loupe-api-"));
const fresh = join(dir, "schema.d.ts");
const bin = join(root, "node_modules/.bin/openapi-typescript");

try {
  execFileSync(bin, [join(root, "openapi.json"), "-o", fresh], { stdio: ["ignore", "ignore", "inherit"] });
  const want = readFileSync(fresh, "utf8");
  let have = "";
  try {
    have = readFileSync(committed, "utf8");
  } catch {
    console.error(`check:api: ${committed} is missing; run \`npm run gen:api\` and commit it.`);
    process.exit(1);
  }
  if (want !== have) {
    const a = have.split("\n");
    const b = want.split("\n");
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    console.error("check:api: src/api/schema.d.ts is out of date with openapi.json.");
    console.error(`first difference at line ${i + 1}:`);
    console.error(`  committed: ${JSON.stringify(a[i] ?? "<end of file>")}`);
    console.error(`  generated: ${JSON.stringify(b[i] ?? "<end of file>")}`);
    console.error("Run `npm run gen:api` and commit the result.");
    process.exit(1);
  }
  console.log("check:api: src/api/schema.d.ts matches openapi.json");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
