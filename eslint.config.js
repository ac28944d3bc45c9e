// Lint runs inside the test command, so type-aware rules catch floating promises
// (the classic supervisor bug: an un-awaited stop that nobody observes).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/**', 'dist-*/**', 'node_modules/**'] },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [...tseslint.configs.recommendedTypeChecked],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // node:test's describe/it return promises the runner itself tracks.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] }] },
      ],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: true }],
    },
  },
  {
    // Every test and hook has a deadline: test/support/test.ts adds it (see why there).
    files: ['test/**/*.ts'],
    ignores: ['test/support/test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: 'node:test',
              importNames: ['default', 'test', 'it', 'describe', 'suite', 'before', 'after', 'beforeEach', 'afterEach'],
              message: 'import it from test/support/test.js, which gives every test and hook a deadline',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', 'bin/*'],
    ignores: ['dashboard/**'],
    languageOptions: { globals: globals.node },
  },
  {
    // The dashboard page's script runs in the browser, shipped as written.
    files: ['dashboard/**/*.js'],
    languageOptions: { globals: globals.browser, sourceType: 'script' },
  },
);
