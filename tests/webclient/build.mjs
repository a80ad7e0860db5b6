// Bundles the official Pipecat web client for Nabu's page and the browser test.
//   node build.mjs [OUTFILE]   (default: ../../nabu_pipeline/web/nabu-client.js, committed)
// The output is deterministic for the versions pinned in package-lock.json, so a test can
// rebuild it and check that the committed bundle matches its source.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const outfile = process.argv[2] ?? path.join(here, "..", "..", "nabu_pipeline", "web", "nabu-client.js");

await build({
  entryPoints: [path.join(here, "src", "nabu-client.js")],
  bundle: true,
  format: "iife",
  globalName: "NabuClient",
  minify: true,
  target: "es2020",
  legalComments: "eof",
  banner: {
    js:
      "/* Nabu's browser client: @pipecat-ai/client-js and @pipecat-ai/websocket-transport " +
      "(BSD-2-Clause) with @daily-co/daily-js (BSD-2-Clause), @protobuf-ts/runtime " +
      "(Apache-2.0 AND BSD-3-Clause), bowser, events, uuid, x-law (MIT), bundled by esbuild; " +
      "versions in tests/webclient/package-lock.json. */",
  },
  outfile,
  logLevel: "warning",
});
