// ESLint flat config: typescript-eslint (type-aware), the React hooks rules, and the layering of
// src/ (see README.md, "Layout"), so "pages do not import pages" is checked, not just followed.
import js from "@eslint/js";
import reactHooks from "eslint-plugin-react-hooks";
import globals from "globals";
import tseslint from "typescript-eslint";

const PAGE_FROM_PAGE = {
  group: ["./*", "../pages", "../pages/*"],
  message: "A page does not import another page: move what both need into src/features/<area>/ or src/ui/.",
};
const PAGES = { group: ["**/pages", "**/pages/*"], message: "Only App imports pages; features and shared code do not." };
const APP = { group: ["**/App"], message: "Nothing imports the App shell." };
const FEATURES = { group: ["**/features/*", "**/features/*/*"], message: "Shared code (ui/, api/) does not import features." };
const UI = { group: ["**/ui/*"], message: "The API client does not import UI code." };

export default tseslint.config(
  { ignores: ["dist", "node_modules", "src/api/schema.d.ts"] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  reactHooks.configs.flat.recommended,
  {
    languageOptions: {
      globals: globals.browser,
      parserOptions: { projectService: { allowDefaultProject: ["vite.config.ts"] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // `const { a: _a, ...rest } = x` is how an object loses a key.
      "@typescript-eslint/no-unused-vars": ["error", { ignoreRestSiblings: true, argsIgnorePattern: "^_" }],
    },
  },
  // Layering: api <- ui <- features <- pages <- App. Pages compose features; no page imports
  // another page, and nothing below the pages imports one.
  {
    files: ["src/pages/**"],
    rules: { "no-restricted-imports": ["error", { patterns: [PAGE_FROM_PAGE, APP] }] },
  },
  {
    files: ["src/features/**"],
    rules: { "no-restricted-imports": ["error", { patterns: [PAGES, APP] }] },
  },
  {
    files: ["src/ui/**"],
    rules: { "no-restricted-imports": ["error", { patterns: [PAGES, APP, FEATURES] }] },
  },
  {
    files: ["src/api/**"],
    rules: { "no-restricted-imports": ["error", { patterns: [PAGES, APP, FEATURES, UI] }] },
  },
  {
    files: ["**/*.js", "**/*.mjs"],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { globals: globals.node },
  },
);
