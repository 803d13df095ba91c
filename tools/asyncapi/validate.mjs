// Validates AsyncAPI documents (YAML or JSON) with the official parser, @asyncapi/parser: the AsyncAPI
// JSON Schema of the document's version (bindings included), $ref resolution and the parser's Spectral
// rules. It then checks every message example's payload (and headers) against the message's own schemas
// with Ajv (JSON Schema draft-07, the base of AsyncAPI's schema format), which the parser does not do for
// AsyncAPI 3 documents.
//
//   node validate.mjs FILE...    one JSON line per file on stdout: {file, valid, errors, warnings}
//
// Exit status: 0 when every file is valid, 1 when a file has an error (also listed on stderr), 2 on bad
// usage. Warnings are reported, never fatal; infos and hints are dropped.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";
import Ajv from "ajv";
import addFormats from "ajv-formats";

const SEVERITY = ["error", "warning", "info", "hint"];

function describe(diagnostic) {
  return {
    code: String(diagnostic.code),
    severity: SEVERITY[diagnostic.severity] ?? String(diagnostic.severity),
    path: (diagnostic.path ?? []).join("."),
    message: diagnostic.message,
  };
}

function exampleErrors(document) {
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  const errors = [];
  for (const message of document.allMessages().all()) {
    const id = message.id();
    const checks = [
      ["payload", message.payload()?.json()],
      ["headers", message.headers()?.json()],
    ];
    message.examples().all().forEach((example, index) => {
      for (const [part, schema] of checks) {
        const value = part === "payload" ? example.payload() : example.headers();
        if (schema === undefined || value === undefined) continue;
        const validate = ajv.compile(schema);
        if (!validate(value)) {
          for (const e of validate.errors) {
            errors.push({
              code: "example-does-not-match-schema",
              severity: "error",
              path: `components.messages.${id}.examples.${index}.${part}${e.instancePath.replaceAll("/", ".")}`,
              message: `${e.message} (${JSON.stringify(e.params)})`,
            });
          }
        }
      }
    });
  }
  return errors;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate.mjs FILE...");
  process.exit(2);
}

const parser = new Parser();
let failed = false;
for (const file of files) {
  let result;
  try {
    const source = await readFile(file, "utf8");
    const { document, diagnostics } = await parser.parse(source, { source: file });
    const described = diagnostics.map(describe);
    const errors = described.filter((d) => d.severity === "error");
    const warnings = described.filter((d) => d.severity === "warning");
    if (document !== undefined) errors.push(...exampleErrors(document));
    result = { file, valid: document !== undefined && errors.length === 0, errors, warnings };
  } catch (exc) {
    const errors = [{ code: "exception", severity: "error", path: "", message: String(exc?.stack ?? exc) }];
    result = { file, valid: false, errors, warnings: [] };
  }
  console.log(JSON.stringify(result));
  if (!result.valid) {
    failed = true;
    for (const e of result.errors) console.error(`${file}: ${e.code} at ${e.path || "<root>"}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
