// node:test with a deadline on every test and hook (issue 12: "every test has a deadline").
//
// Test files import describe/it/test/before/after/beforeEach/afterEach from here, not from
// node:test (eslint refuses the latter). Node 20's --test-timeout does not do this job: with each
// file in its own process (the default), it bounds a whole file, not each test in it. So each
// test and hook gets TEST_TIMEOUT_MS here unless it names its own `timeout`, and `npm test`
// keeps --test-timeout as the deadline of a whole file, which also catches a file whose process
// never exits after its tests are done.
//
// The value is sized for a busy two-core machine (`npm run test:busy` while other jobs run too):
// there the slowest ordinary test (a dozen CLI runs in a row) took 90 s. It is a deadline against
// hangs, not a speed limit. A test that needs longer says so with its own { timeout }.
import * as nodeTest from 'node:test';
import type { HookFn, HookOptions, SuiteFn, TestFn, TestOptions } from 'node:test';

export type { TestContext } from 'node:test';

/** Default deadline of one test or hook. */
export const TEST_TIMEOUT_MS = 300_000;

type Args<F> = [name?: string, fn?: F] | [name?: string, options?: TestOptions, fn?: F] | [options?: TestOptions, fn?: F] | [fn?: F];

/** The same arguments with `timeout` defaulted in the options (added when there are none). */
function withDeadline<F>(args: Args<F>): [string | undefined, TestOptions, F | undefined] {
  let name: string | undefined;
  let options: TestOptions = {};
  let fn: F | undefined;
  for (const arg of args) {
    if (typeof arg === 'string') name = arg;
    else if (typeof arg === 'function') fn = arg;
    else if (arg !== undefined) options = arg as TestOptions;
  }
  return [name, { ...options, timeout: options.timeout ?? TEST_TIMEOUT_MS }, fn];
}

export function test(name?: string, fn?: TestFn): void;
export function test(name?: string, options?: TestOptions, fn?: TestFn): void;
export function test(options?: TestOptions, fn?: TestFn): void;
export function test(fn?: TestFn): void;
export function test(...args: Args<TestFn>): void {
  // The runner tracks the promise itself; a failure is reported as the test's.
  void nodeTest.test(...withDeadline(args));
}
export const it = test;

/** Suites take no default: their tests and hooks carry the deadlines. */
export function describe(name?: string, fn?: SuiteFn): void;
export function describe(name?: string, options?: TestOptions, fn?: SuiteFn): void;
export function describe(options?: TestOptions, fn?: SuiteFn): void;
export function describe(fn?: SuiteFn): void;
export function describe(...args: Args<SuiteFn>): void {
  void (nodeTest.describe as (...a: Args<SuiteFn>) => Promise<void>)(...args);
}

const hookOptions = (options: HookOptions = {}): HookOptions => ({ ...options, timeout: options.timeout ?? TEST_TIMEOUT_MS });
export const before = (fn: HookFn, options?: HookOptions): void => nodeTest.before(fn, hookOptions(options));
export const after = (fn: HookFn, options?: HookOptions): void => nodeTest.after(fn, hookOptions(options));
export const beforeEach = (fn: HookFn, options?: HookOptions): void => nodeTest.beforeEach(fn, hookOptions(options));
export const afterEach = (fn: HookFn, options?: HookOptions): void => nodeTest.afterEach(fn, hookOptions(options));
