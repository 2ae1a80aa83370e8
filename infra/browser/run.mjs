#!/usr/bin/env node
// A small, generic headless-browser driver for Cuttle's integration tests.
//
//   node infra/browser/run.mjs STEPS.json      # or `-` to read the JSON from stdin
//
// It launches Debian's Chromium through playwright-core (installed by infra/browser.sh into
// $CUTTLE_NODE_TOOLS, default $HOME/.cache/cuttle/node-tools), runs the steps in one fresh browser
// context, and prints ONE JSON object on stdout:
//
//   {"ok": true, "url": ..., "title": ..., "text": <body innerText, truncated>,
//    "cookies": [{"name", "domain", "path", "httpOnly", "secure", "sameSite", "expires"}],
//    "consoleErrors": [...], "steps": <count>, "elapsedMs": ...}
//
// On failure it exits 1, prints the same object with "ok": false, "error", "failedStep" and the
// failing step, and writes a readable message (error, current URL, page text) to stderr.
// Exit code 2 means the driver itself could not start (bad JSON, no playwright-core, no Chromium).
//
// STEPS.json is either an array of steps or an object {"steps": [...], ...options}. Options:
//   baseURL            relative `goto` URLs resolve against it
//   timeoutMs          per-step timeout (default 15000)
//   totalTimeoutMs     whole run (default 120000)
//   textLimit          characters of body text in the result (default 4000)
//   viewport           {"width", "height"} (default 1280x800)
//   ignoreHTTPSErrors  accept self-signed certificates (default false)
//   screenshotOnFailure  PNG path written when a step fails
//   executablePath     Chromium to launch (default $CUTTLE_CHROMIUM, /usr/bin/chromium, ...)
//
// Steps ({"action": NAME, ...}; the short form {NAME: {...}} works too):
//   goto            {url}
//   fill            {selector, value}
//   click           {selector}
//   press           {selector, key}                 e.g. key "Enter"
//   check           {selector}                      tick a checkbox or radio button
//   select          {selector, value}               choose an <option> by value or label
//   waitForURL      {pattern} (glob, e.g. "**/dashboard") or {regex}
//   waitForSelector {selector, state?}              state: visible (default), attached, hidden, detached
//   expectText      {text, selector?}               waits until the element's (default: body's)
//                                                   innerText contains text; {regex} instead of text
//   expectNoText    {text, selector?}               fails at once if the text is present
//   screenshot      {path, fullPage?}
//   wait            {ms}
// Any step may carry "timeoutMs" to override the default for itself.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const ACTIONS = new Set([
  'goto', 'fill', 'click', 'press', 'check', 'select', 'waitForURL', 'waitForSelector',
  'expectText', 'expectNoText', 'screenshot', 'wait',
]);

function usageError(message) {
  process.stderr.write(`run.mjs: ${message}\n`);
  process.stdout.write(JSON.stringify({ ok: false, error: message }) + '\n');
  process.exit(2);
}

function loadSpec(arg) {
  if (!arg) usageError('usage: node infra/browser/run.mjs STEPS.json   (or - for stdin)');
  let raw;
  try {
    raw = fs.readFileSync(arg === '-' ? 0 : arg, 'utf8');
  } catch (err) {
    usageError(`cannot read ${arg}: ${err.message}`);
  }
  let spec;
  try {
    spec = JSON.parse(raw);
  } catch (err) {
    usageError(`${arg} is not valid JSON: ${err.message}`);
  }
  if (Array.isArray(spec)) spec = { steps: spec };
  if (!spec || !Array.isArray(spec.steps)) usageError(`${arg} has no "steps" array`);
  spec.steps = spec.steps.map((step, index) => normaliseStep(step, index));
  return spec;
}

// Accepts {"action": "click", "selector": "#a"} and the short form {"click": {"selector": "#a"}}
// (or {"goto": "http://..."} for goto).
function normaliseStep(step, index) {
  if (!step || typeof step !== 'object') usageError(`step ${index} is not an object`);
  if (typeof step.action !== 'string') {
    const keys = Object.keys(step).filter((key) => ACTIONS.has(key));
    if (keys.length !== 1) usageError(`step ${index} has no "action": ${JSON.stringify(step)}`);
    const value = step[keys[0]];
    const rest = { ...step };
    delete rest[keys[0]];
    if (keys[0] === 'goto' && typeof value === 'string') step = { ...rest, action: 'goto', url: value };
    else step = { ...rest, ...(value && typeof value === 'object' ? value : {}), action: keys[0] };
  }
  if (!ACTIONS.has(step.action)) {
    usageError(`step ${index}: unknown action "${step.action}" (known: ${[...ACTIONS].join(', ')})`);
  }
  const need = {
    goto: ['url'], fill: ['selector', 'value'], click: ['selector'], press: ['selector', 'key'],
    check: ['selector'], select: ['selector', 'value'], waitForSelector: ['selector'],
    screenshot: ['path'], wait: ['ms'],
  }[step.action] || [];
  for (const field of need) {
    if (step[field] === undefined) usageError(`step ${index} (${step.action}) needs "${field}"`);
  }
  if (step.action === 'waitForURL' && step.pattern === undefined && step.regex === undefined) {
    usageError(`step ${index} (waitForURL) needs "pattern" or "regex"`);
  }
  if ((step.action === 'expectText' || step.action === 'expectNoText')
      && step.text === undefined && step.regex === undefined) {
    usageError(`step ${index} (${step.action}) needs "text" or "regex"`);
  }
  return step;
}

function loadPlaywright() {
  const cacheDir = process.env.CUTTLE_CACHE_DIR || path.join(os.homedir(), '.cache', 'cuttle');
  const toolsDir = process.env.CUTTLE_NODE_TOOLS || path.join(cacheDir, 'node-tools');
  const require = createRequire(path.join(toolsDir, 'package.json'));
  try {
    return require('playwright-core');
  } catch (err) {
    usageError(`playwright-core is not installed in ${toolsDir} (run: bash infra/browser.sh): ${err.message}`);
  }
}

function findChromium(spec) {
  const candidates = [spec.executablePath, process.env.CUTTLE_CHROMIUM, '/usr/bin/chromium',
    '/usr/bin/chromium-browser'].filter(Boolean);
  for (const candidate of candidates) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  usageError(`no Chromium found (tried ${candidates.join(', ')}); run: bash infra/browser.sh`);
}

function describe(step) {
  const detail = step.url ?? step.selector ?? step.pattern ?? step.regex ?? step.text ?? step.path ?? step.ms;
  return detail === undefined ? step.action : `${step.action} ${JSON.stringify(detail)}`;
}

async function bodyText(page, selector) {
  return page.locator(selector || 'body').first().innerText({ timeout: 1000 });
}

function textMatches(haystack, step) {
  return step.regex !== undefined ? new RegExp(step.regex).test(haystack) : haystack.includes(step.text);
}

async function runStep(page, step, timeout) {
  switch (step.action) {
    case 'goto':
      await page.goto(step.url, { timeout, waitUntil: step.waitUntil || 'load' });
      break;
    case 'fill':
      await page.fill(step.selector, String(step.value), { timeout });
      break;
    case 'click':
      await page.click(step.selector, { timeout });
      break;
    case 'press':
      await page.press(step.selector, step.key, { timeout });
      break;
    case 'check':
      await page.check(step.selector, { timeout });
      break;
    case 'select':
      await page.selectOption(step.selector, String(step.value), { timeout });
      break;
    case 'waitForURL':
      await page.waitForURL(step.regex !== undefined ? new RegExp(step.regex) : step.pattern, { timeout });
      break;
    case 'waitForSelector':
      await page.waitForSelector(step.selector, { timeout, state: step.state || 'visible' });
      break;
    case 'expectText': {
      const deadline = Date.now() + timeout;
      let last = '';
      for (;;) {
        try {
          last = await bodyText(page, step.selector);
          if (textMatches(last, step)) break;
        } catch (err) {
          last = `(${step.selector || 'body'} not readable: ${err.message.split('\n')[0]})`;
        }
        if (Date.now() >= deadline) {
          const wanted = step.regex !== undefined ? `/${step.regex}/` : JSON.stringify(step.text);
          throw new Error(`expected ${step.selector || 'body'} to contain ${wanted} within ${timeout} ms; `
            + `it reads: ${JSON.stringify(last.slice(0, 500))}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      break;
    }
    case 'expectNoText': {
      const text = await bodyText(page, step.selector).catch(() => '');
      if (textMatches(text, step)) {
        const unwanted = step.regex !== undefined ? `/${step.regex}/` : JSON.stringify(step.text);
        throw new Error(`expected ${step.selector || 'body'} not to contain ${unwanted}`);
      }
      break;
    }
    case 'screenshot':
      await page.screenshot({ path: step.path, fullPage: Boolean(step.fullPage), timeout });
      break;
    case 'wait':
      await page.waitForTimeout(Number(step.ms));
      break;
    default:
      throw new Error(`unknown action ${step.action}`);
  }
}

async function snapshot(page, context, textLimit) {
  const result = { url: page ? page.url() : null, title: null, text: null, cookies: [] };
  if (page) {
    result.title = await page.title().catch(() => null);
    const text = await page.evaluate(() => (document.body ? document.body.innerText : '')).catch(() => null);
    result.text = text === null ? null
      : text.length > textLimit ? `${text.slice(0, textLimit)}…[truncated ${text.length - textLimit} chars]` : text;
  }
  if (context) {
    const cookies = await context.cookies().catch(() => []);
    result.cookies = cookies.map(({ name, domain, path: cookiePath, httpOnly, secure, sameSite, expires }) =>
      ({ name, domain, path: cookiePath, httpOnly, secure, sameSite, expires }));
  }
  return result;
}

async function main() {
  const spec = loadSpec(process.argv[2]);
  const { chromium } = loadPlaywright();
  const executablePath = findChromium(spec);
  const stepTimeout = Number(spec.timeoutMs ?? 15000);
  const textLimit = Number(spec.textLimit ?? 4000);
  const started = Date.now();

  const watchdog = setTimeout(() => {
    process.stderr.write(`run.mjs: the whole run exceeded totalTimeoutMs (${spec.totalTimeoutMs ?? 120000} ms)\n`);
    process.stdout.write(JSON.stringify({ ok: false, error: 'totalTimeoutMs exceeded' }) + '\n');
    process.exit(1);
  }, Number(spec.totalTimeoutMs ?? 120000));
  watchdog.unref();

  let browser;
  try {
    browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
  } catch (err) {
    usageError(`could not launch ${executablePath}: ${err.message}`);
  }

  let context;
  let page;
  const consoleErrors = [];
  let current = -1;
  try {
    context = await browser.newContext({
      baseURL: spec.baseURL,
      viewport: spec.viewport || { width: 1280, height: 800 },
      ignoreHTTPSErrors: Boolean(spec.ignoreHTTPSErrors),
    });
    page = await context.newPage();
    page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    for (current = 0; current < spec.steps.length; current += 1) {
      const step = spec.steps[current];
      await runStep(page, step, Number(step.timeoutMs ?? stepTimeout));
    }
    const result = await snapshot(page, context, textLimit);
    process.stdout.write(JSON.stringify({
      ok: true, ...result, consoleErrors: consoleErrors.slice(0, 50), steps: spec.steps.length,
      elapsedMs: Date.now() - started,
    }) + '\n');
    await browser.close();
    return 0;
  } catch (err) {
    const message = String(err && err.message ? err.message : err);
    const result = await snapshot(page, context, textLimit);
    const step = current >= 0 && current < spec.steps.length ? spec.steps[current] : null;
    if (spec.screenshotOnFailure && page) {
      await page.screenshot({ path: spec.screenshotOnFailure, fullPage: true }).catch(() => {});
    }
    process.stdout.write(JSON.stringify({
      ok: false, error: message, failedStep: current, step, ...result,
      consoleErrors: consoleErrors.slice(0, 50), steps: spec.steps.length, elapsedMs: Date.now() - started,
    }) + '\n');
    process.stderr.write([
      `run.mjs: step ${current}${step ? ` (${describe(step)})` : ''} failed: ${message.split('\n')[0]}`,
      `  url:   ${result.url}`,
      `  title: ${result.title}`,
      `  page text: ${JSON.stringify((result.text || '').slice(0, 1000))}`,
      ...(consoleErrors.length ? [`  console errors: ${consoleErrors.slice(0, 5).join(' | ')}`] : []),
      '',
    ].join('\n'));
    await browser.close().catch(() => {});
    return 1;
  }
}

main().then((code) => process.exit(code), (err) => {
  process.stderr.write(`run.mjs: ${err && err.stack ? err.stack : err}\n`);
  process.exit(2);
});
