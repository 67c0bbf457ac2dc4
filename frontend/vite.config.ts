import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The built app is served by FastAPI at "/" (SPA fallback for non-/api paths).
export default defineConfig({
  base: "/",
  plugins: [react()],
  server: {
    proxy: {
      "/api": { target: "http://127.0.0.1:8000", changeOrigin: false },
    },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
  },
});
