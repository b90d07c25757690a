// Type-aware lint, run by `npm test` (`npm run lint`). Only the promise rules: a floating or
// misused promise is a crash waiting to happen (an unhandled rejection ends the process without
// its ordered shutdown). `ignoreVoid: false` because `void p` is no handler: it is exactly the bug.
import { defineConfig } from 'eslint/config'
import tseslint from 'typescript-eslint'

export default defineConfig(
  { ignores: ['dist/', 'node_modules/', 'test-artifacts/', 'bin/', 'eslint.config.js'] },
  {
    files: ['src/**/*.ts', 'workers/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          ignoreVoid: false,
          // node:test's test()/describe() (and t.test) return a promise that never rejects: a
          // failure, or a subtest its parent did not wait for, is reported by the runner.
          allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
    },
  },
)
