// The emperor where any user can run it. Tests that run the CLI as another (non-root) user must
// not depend on where the checkout lives: a clone inside a 0700 directory (/root/x) is out of
// that user's reach. So such tests run a copy of what the CLI needs (bin/, the compiled src/,
// package.json and node_modules) in a fresh temp directory that everyone may read, made once per
// test process and removed when it exits.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from './paths.js';

// This file is <outDir>/test/support/install.js; the compiled src is <outDir>/src.
const compiledSrc = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

let installed: string | undefined;

/** Copy `from` to `to`: hard links where the filesystem allows (fast, no space), else a copy. */
function copyTree(from: string, to: string): void {
  try {
    execFileSync('cp', ['-al', from, to], { stdio: 'ignore' });
  } catch {
    rmSync(to, { recursive: true, force: true });
    execFileSync('cp', ['-a', from, to], { stdio: 'ignore' });
  }
}

/** Path of bin/emperor in a world-readable copy of the built emperor. */
export function readableEmperorBin(): string {
  if (installed === undefined) {
    const root = mkdtempSync(path.join(os.tmpdir(), 'emperor-install-'));
    process.on('exit', () => rmSync(root, { recursive: true, force: true }));
    chmodSync(root, 0o755);
    copyTree(path.join(repoRoot, 'bin'), path.join(root, 'bin'));
    copyTree(path.join(repoRoot, 'package.json'), path.join(root, 'package.json'));
    copyTree(path.join(repoRoot, 'node_modules'), path.join(root, 'node_modules'));
    // bin/emperor runs ../dist/src/cli/main.js, whatever outDir these tests were built into.
    execFileSync('mkdir', ['-m', '755', path.join(root, 'dist')]);
    copyTree(compiledSrc, path.join(root, 'dist', 'src'));
    // The posix_spawn addon, where src/process/posix-spawn.ts looks for it (else the copy forks).
    const addon = path.join(repoRoot, 'build', 'Release', 'emperor_spawn.node');
    if (existsSync(addon)) {
      execFileSync('mkdir', ['-m', '755', '-p', path.join(root, 'build', 'Release')]);
      copyTree(addon, path.join(root, 'build', 'Release', 'emperor_spawn.node'));
    }
    installed = path.join(root, 'bin', 'emperor');
  }
  return installed;
}
