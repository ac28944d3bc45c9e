import { fileURLToPath } from 'node:url';
import path from 'node:path';

// Compiled tests live in <outDir>/test/support; the repo root is three levels up from here
// whatever the outDir is called, so fixtures resolve the same from dist/ or a scratch build dir.
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const fixture = (name: string): string => path.join(repoRoot, 'test', 'fixtures', name);
export const binEmperor = path.join(repoRoot, 'bin', 'emperor');
