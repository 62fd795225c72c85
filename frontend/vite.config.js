import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

// The panel spec lives in the Python package (exporter/spec/panels.json): the Grafana
// dashboards are generated from the same file.
const specDir = fileURLToPath(new URL('../exporter/spec', import.meta.url))
// Built into the Python package, so the wheel carries it and `make run` finds it alike.
const outDir = fileURLToPath(new URL('../exporter/dashboard', import.meta.url))

export default defineConfig({
  plugins: [vue()],
  resolve: {
    alias: { '@': fileURLToPath(new URL('./src', import.meta.url)), '@spec': specDir },
  },
  server: {
    fs: { allow: ['.', specDir] },
    proxy: {
      '/api': { target: 'http://127.0.0.1:8000', ws: true },
    },
  },
  build: {
    outDir,
    emptyOutDir: true,
    chunkSizeWarningLimit: 800,
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/__tests__/*.spec.js'],
  },
})
