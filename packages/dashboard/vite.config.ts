// The dashboard's build (vite build → dist/, served by the control plane) and its component tests
// (vitest, happy-dom). JSX goes through Vite's own esbuild: no React plugin needed.
import { defineConfig } from "vitest/config";

export default defineConfig({
  root: import.meta.dirname,
  base: "/",
  esbuild: { jsx: "automatic" },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", chunkSizeWarningLimit: 1500 },
  test: {
    environment: "happy-dom",
    include: ["test/**/*.test.tsx"],
    // The node test runner owns test/*.test.ts (e2e, and the file that runs this suite).
  },
});
