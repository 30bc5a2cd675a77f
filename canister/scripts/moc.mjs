#!/usr/bin/env node
// Drive the Motoko compiler from the npm package `motoko` (moc compiled to JS, with the Motoko
// core library bundled as packages/latest/core.json, so nothing is fetched from the network).
//
//   node scripts/moc.mjs build [OUTDIR]        wasm + Candid + stable signature (default build/)
//   node scripts/moc.mjs candid                 print the Candid interface of src/Main.mo
//   node scripts/moc.mjs stable                 print the stable signature of src/Main.mo
//   node scripts/moc.mjs compatible OLD NEW     check that NEW.most can upgrade OLD.most
//   node scripts/moc.mjs run [--fake-certified-data] FILE
//                                               run FILE (e.g. test/AclTest.mo) in the interpreter
//                                               (a FILE elsewhere runs as test/<its name>)
//
// Paths are relative to the canister folder. Warnings are errors (-Werror) for src/.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(ROOT, 'package.json'));
const mo = require('motoko');
const core = require('motoko/packages/latest/core.json');
mo.loadPackage(core);

const MAIN = 'src/Main.mo';

function load(dir) {
  const abs = path.join(ROOT, dir);
  if (!fs.existsSync(abs)) return;
  for (const entry of fs.readdirSync(abs, { withFileTypes: true })) {
    const rel = path.posix.join(dir, entry.name);
    if (entry.isDirectory()) load(rel);
    else if (entry.name.endsWith('.mo')) mo.write(rel, fs.readFileSync(path.join(ROOT, rel), 'utf8'));
  }
}

function fail(message) {
  process.stderr.write(message.endsWith('\n') ? message : message + '\n');
  process.exit(1);
}

function diagnostics(file) {
  const diags = mo.check(file);
  for (const d of diags) {
    const where = `${d.source}:${d.range.start.line + 1}.${d.range.start.character + 1}`;
    process.stderr.write(`${where}: ${d.severity === 1 ? 'error' : 'warning'} [${d.code}] ${d.message}\n`);
  }
  return diags.length;
}

function compile() {
  if (diagnostics(MAIN)) fail(`${MAIN}: the compiler reported problems (warnings are errors)`);
  return mo.wasm(MAIN, 'ic');
}

const [cmd, ...args] = process.argv.slice(2);
load('src');
load('test');
switch (cmd) {
  case 'build': {
    const out = path.resolve(ROOT, args[0] || 'build');
    const result = compile();
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'acl.wasm'), Buffer.from(result.wasm));
    fs.writeFileSync(path.join(out, 'acl.did'), result.candid);
    fs.writeFileSync(path.join(out, 'acl.most'), result.stable);
    process.stdout.write(`wrote ${out}/acl.wasm (${result.wasm.length} bytes), acl.did, acl.most\n`);
    break;
  }
  case 'candid':
    process.stdout.write(compile().candid);
    break;
  case 'stable':
    process.stdout.write(compile().stable);
    break;
  case 'compatible': {
    if (args.length !== 2) fail('usage: moc.mjs compatible OLD.most NEW.most');
    mo.write('old.most', fs.readFileSync(path.resolve(args[0]), 'utf8'));
    mo.write('new.most', fs.readFileSync(path.resolve(args[1]), 'utf8'));
    const r = mo.compiler.stableCompatible('old.most', 'new.most');
    if (r.diagnostics.length) fail(r.diagnostics.map((d) => d.message).join('\n'));
    process.stdout.write('compatible\n');
    break;
  }
  case 'run': {
    // --fake-certified-data: the interpreter has no certified data; test/fake/CertifiedData.mo
    // (prints what is certified) replaces mo:core/CertifiedData so the actor itself can run.
    if (args[0] === '--fake-certified-data') {
      args.shift();
      const fake = fs.readFileSync(path.join(ROOT, 'test/fake/CertifiedData.mo'), 'utf8');
      mo.write(`.node-motoko/core/${core.version}/CertifiedData.mo`, fake);
    }
    if (args.length !== 1) fail('usage: moc.mjs run [--fake-certified-data] FILE');
    mo.setRunStepLimit(1e9);
    // A file outside the canister folder (e.g. a test's temporary file) runs as test/<name>, so
    // its imports of "../src/..." resolve.
    let file = args[0];
    const abs = path.resolve(file);
    if (!abs.startsWith(ROOT + path.sep)) {
      file = path.posix.join('test', path.basename(abs));
      mo.write(file, fs.readFileSync(abs, 'utf8'));
    } else {
      file = path.relative(ROOT, abs).split(path.sep).join('/');
    }
    const r = mo.run(file);
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    if (r.result.error) process.exit(1);
    break;
  }
  default:
    fail('usage: moc.mjs build [OUTDIR] | candid | stable | compatible OLD NEW | run [--fake-certified-data] FILE');
}
