import { defineConfig } from 'tsup'

// Two programs: the CLI (the load driver and the table) and the app it starts as a child process.
// Dependencies stay external, so the app loads the same @lameduck/* builds a user would install.
export default defineConfig({
  entry: { cli: 'src/cli.ts', app: 'src/app/main.ts' },
  format: ['esm'],
  dts: false,
  clean: true,
  sourcemap: true,
  target: 'node20',
  platform: 'node',
})
