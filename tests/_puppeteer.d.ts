/**
 * The part of `puppeteer-core`'s API the browser tests use. Its own declarations
 * reference `@types/node`, whose DOM-like globals (`Event`, `EventTarget`) clash
 * with Deno's and break type checking of every module checked with them; import it
 * with `// @ts-types="./_puppeteer.d.ts"`.
 *
 * Functions run in the page are passed as strings (JavaScript expressions), so no
 * DOM typings are needed either.
 *
 * @module
 */

/** Options of `puppeteer.launch()`. */
export interface LaunchOptions {
  /** The browser binary. */
  executablePath: string;
  /** A fresh profile directory. */
  userDataDir?: string;
  /** Run without a window. */
  headless?: boolean;
  /** Command-line flags. */
  args?: string[];
}

/** A running browser. */
export interface Browser {
  /** Opens a tab. */
  newPage(): Promise<Page>;
  /** The browser's product and version, `Chrome/...`. */
  version(): Promise<string>;
  /** Closes the browser and its process. */
  close(): Promise<void>;
}

/** A message the page logged. */
export interface ConsoleMessage {
  /** `log`, `error`, `warn`, ... */
  type(): string;
  /** The text. */
  text(): string;
}

/** A request the page made. */
export interface HTTPRequest {
  /** Its URL. */
  url(): string;
}

/** Screen size and kind. */
export interface Viewport {
  /** CSS pixels. */
  width: number;
  /** CSS pixels. */
  height: number;
  /** Emulate a touch screen phone. */
  isMobile?: boolean;
  /** Device pixels per CSS pixel. */
  deviceScaleFactor?: number;
}

/** An element found in the page. */
export interface ElementHandle {
  /** Clicks it. */
  click(): Promise<void>;
}

/** A tab. */
export interface Page {
  /** Loads a URL. */
  goto(url: string): Promise<unknown>;
  /** Resizes the screen. */
  setViewport(viewport: Viewport): Promise<void>;
  /** The timeout of every `waitFor...`, ms. */
  setDefaultTimeout(ms: number): void;
  /** Resolves when an element matches (the browser watches the DOM). */
  waitForSelector(selector: string): Promise<ElementHandle | null>;
  /** Resolves when the expression, evaluated in the page, is truthy. */
  waitForFunction(expression: string): Promise<unknown>;
  /** Evaluates an expression in the page. */
  evaluate(expression: string): Promise<unknown>;
  /** The first element matching, if any. */
  $(selector: string): Promise<ElementHandle | null>;
  /** Clicks the first element matching. */
  click(selector: string): Promise<void>;
  /** Focuses the first element matching and types the text into it, key by key. */
  type(selector: string, text: string): Promise<void>;
  /** The keyboard. */
  readonly keyboard: { press(key: string): Promise<void> };
  /** The cookies the page's URL would send. */
  cookies(): Promise<unknown[]>;
  /** Saves a PNG. */
  screenshot(options: { path: string; fullPage?: boolean }): Promise<unknown>;
  /** An uncaught exception in the page. */
  on(event: "pageerror", handler: (error: unknown) => void): this;
  /** A console message of the page. */
  on(event: "console", handler: (message: ConsoleMessage) => void): this;
  /** A request the page makes. */
  on(event: "request", handler: (request: HTTPRequest) => void): this;
}

/** The entry point. */
declare const puppeteer: {
  /** Starts a browser. */
  launch(options: LaunchOptions): Promise<Browser>;
};
export default puppeteer;
