#!/usr/bin/env bash
# Called by .ci/run after `pnpm test`: the end-to-end suite (e2e/, issue 10) in its CI mode, one
# rolling restart per cell and app (Express, Koa, Fastify) behind real HAProxy and nginx (installed
# from Debian's packages by the suite itself when missing). Its vitest JSON report lands in
# $LAMEDUCK_VITEST_JSON_DIR (through vitest.shared.ts), so .ci/summarize.mjs counts it with the rest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${LAMEDUCK_VITEST_JSON_DIR:-}" ]]; then
  echo 'warning: LAMEDUCK_VITEST_JSON_DIR is not set; the e2e results will not be counted' >&2
fi

# The e2e apps import @lameduck/core, express, koa and fastify from dist/: build them (and only them,
# e2e's dependencies), whatever became of `pnpm test` before us.
pnpm exec turbo run build --filter='@lameduck/e2e^...'
E2E_RUNS="${E2E_RUNS:-1}" pnpm --filter @lameduck/e2e run e2e
