/**
 * The admin dashboard: one self-contained HTML page (inline CSS, inline script,
 * inline SVG plots; nothing loaded from anywhere else) that the admin endpoint
 * serves at `/`. The page polls `/status` and `/denials` every second and keeps
 * the last five minutes of samples in memory to compute rates and draw its plots.
 *
 * The response carries a Content-Security-Policy that lets the page run only its
 * own inline script and style (by a per-response nonce) and talk only to the
 * admin endpoint it came from.
 *
 * When the admin endpoint asks for a token, the page holds no data until the
 * operator enters it in the page's form: it keeps the token in `sessionStorage`
 * (this tab only, gone when the tab closes) and sends it as
 * `Authorization: Bearer TOKEN` on its own requests. A refused token brings the
 * form back. No cookie is set, so no other page can make the browser send it.
 *
 * The page's script is `dashboard/client.ts`, a TypeScript module checked with the
 * DOM library; `deno task dashboard` strips its types into `dashboard/client.js`,
 * which this module embeds as text (no build step or browser at run time).
 *
 * @module
 */
import { dashboardPage } from "./dashboard/_page.ts";

/** The header the dashboard's reload button sends; the admin endpoint requires it of browsers. */
export const RELOAD_HEADER = "x-mtlb-reload";

/** Options of {@linkcode dashboardResponse}. */
export interface DashboardOptions {
  /** Whether the page shows the reload button (`[admin] allow_reload`). */
  allowReload: boolean;
  /**
   * Whether the admin endpoint asks for a bearer token: the page asks for it
   * before its first request.
   *
   * @default {false}
   */
  tokenRequired?: boolean;
  /**
   * The CSP nonce of the inline script and style; at least 16 random bytes,
   * base64.
   *
   * @default {a fresh random nonce}
   */
  nonce?: string;
}

/**
 * The Content-Security-Policy of the dashboard: only its own nonce-tagged inline
 * script and style run, requests go to its own origin only, nothing else loads,
 * and no other site may frame it.
 *
 * @param nonce The nonce of the page's `<script>` and `<style>`.
 * @returns The header value.
 */
export function dashboardCsp(nonce: string): string {
  return [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    `style-src 'nonce-${nonce}'`,
    "connect-src 'self'",
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/**
 * Builds the dashboard page.
 *
 * @param options Whether to show the reload button and ask for a token, and the CSP nonce.
 * @returns The `200` response: the HTML page with its security headers.
 * @throws {TypeError} When `options.nonce` is not base64 text.
 */
export function dashboardResponse(options: DashboardOptions): Response {
  const nonce = options.nonce ?? randomNonce();
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(nonce)) {
    throw new TypeError(
      `Cannot build the dashboard: the nonce must be base64, received "${nonce}"`,
    );
  }
  const html = dashboardPage({
    nonce,
    reloadHeader: options.allowReload ? RELOAD_HEADER : undefined,
    tokenRequired: options.tokenRequired ?? false,
  });
  return new Response(html, {
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "content-security-policy": dashboardCsp(nonce),
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
      "referrer-policy": "no-referrer",
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-resource-policy": "same-origin",
    },
  });
}

function randomNonce(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return btoa(String.fromCharCode(...bytes));
}
