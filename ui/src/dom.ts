// Small DOM helpers shared by the pages: no framework, no innerHTML.

import { describeError, LatchkeyError } from "./api";

/** The element with this id (throws if the page lacks it). */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing`);
  return found as T;
}

type Child = Node | string | null | undefined | false;

/** Creates an element with properties (attributes for data-/aria- names) and children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Record<string, string | boolean | number | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === false) continue;
    if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "for" || key === "scope") {
      node.setAttribute(key, String(value));
    } else if (key === "class") {
      node.className = String(value);
    } else {
      (node as unknown as Record<string, unknown>)[key] = value;
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

/** A date-time as the reader's locale writes it (the ISO value in a <time>). */
export function time(iso: string | null | undefined): Node {
  if (!iso) return document.createTextNode("—");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return document.createTextNode(iso);
  return el("time", { dateTime: iso, title: iso }, date.toLocaleString());
}

/** Shows or hides an element (the `hidden` attribute). */
export function show(node: HTMLElement, visible: boolean): void {
  node.hidden = !visible;
}

/** A status message in a live region; `error` uses the alert styling. */
export function say(region: HTMLElement, message: string, kind: "info" | "error" | "ok" = "info"): void {
  region.textContent = message;
  region.dataset.kind = kind;
  region.hidden = message === "";
}

/** The message of anything thrown: latchkey's refusals as people read them. */
export function message(err: unknown): string {
  if (err instanceof LatchkeyError) return describeError(err);
  // fetch rejects with a TypeError when the service cannot be reached.
  if (err instanceof TypeError && /fetch|network/i.test(err.message)) return "The service could not be reached.";
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs `work` with `control` disabled and marked busy, reporting failures in
 * `region`. Resolves to whether the work succeeded.
 */
export async function busy(
  control: HTMLButtonElement | HTMLFormElement,
  region: HTMLElement,
  work: () => Promise<void>,
): Promise<boolean> {
  const buttons =
    control instanceof HTMLFormElement
      ? Array.from(control.querySelectorAll<HTMLButtonElement>("button"))
      : [control];
  for (const b of buttons) b.disabled = true;
  control.setAttribute("aria-busy", "true");
  try {
    await work();
    return true;
  } catch (err) {
    say(region, message(err), "error");
    return false;
  } finally {
    for (const b of buttons) b.disabled = false;
    control.removeAttribute("aria-busy");
  }
}

/** The string value of a named control of a form. */
export function field(form: HTMLFormElement, name: string): string {
  const control = form.elements.namedItem(name);
  if (control instanceof HTMLInputElement || control instanceof HTMLSelectElement || control instanceof HTMLTextAreaElement) {
    return control.value;
  }
  throw new Error(`form field ${name} is missing`);
}

/** Removes every child of `node`. */
export function clear(node: HTMLElement): void {
  node.replaceChildren();
}

/** A table with a caption, header cells and rows of cells. */
export function table(caption: string, headers: string[], rows: Child[][]): HTMLTableElement {
  return el(
    "table",
    {},
    el("caption", { class: "visually-hidden" }, caption),
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))),
  );
}
