#!/usr/bin/env node
// A real OpenID Connect provider for Cuttle's SSO tests: npm oidc-provider@9 (the OpenID-certified
// Node implementation) with accounts, clients and a plain login form taken from a JSON config.
//
//   node infra/oidc/provider.mjs [--port 9400] [--host 127.0.0.1] [--config FILE]
//                                [--state-dir DIR] [--issuer URL]
//
// infra/oidc.sh starts it in the background (pid file, log, idempotent); a test may also spawn it
// directly with `--port 0` and read the first stdout line, {"issuer": ..., "port": ...}.
//
// Settings, first found wins:
//   port    --port, $CUTTLE_OIDC_PORT, 9400 (0 picks a free port)
//   config  --config FILE, $CUTTLE_OIDC_CONFIG (a file), $CUTTLE_OIDC_CONFIG_JSON (inline JSON),
//           infra/oidc/default-config.json
//   issuer  --issuer, http://<host>:<port>
//   state   --state-dir, $CUTTLE_OIDC_STATE_DIR: keeps the signing key (jwks.json) so that ID
//           tokens stay verifiable across restarts; without it a fresh key is made per start.
//
// The login interaction needs no JavaScript and no browser: GET /interaction/<uid> returns an
// HTML form that POSTs `login` (account id or email) and `password` to /interaction/<uid>/login;
// success answers 303 to the authorization endpoint's resume URL, which redirects to the client's
// redirect_uri with ?code=...&state=...&iss=.... Consent is granted automatically for every scope
// the client asked for. GET /interaction/<uid>/abort ends the flow with error=access_denied.
// See infra/README.md for the whole flow.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

function fatal(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

function log(message) {
  process.stdout.write(`${new Date().toISOString()} ${message}\n`);
}

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 1) {
    const match = /^--(port|host|config|state-dir|issuer)(?:=(.*))?$/.exec(argv[i]);
    if (!match) fatal(`unknown argument ${argv[i]} (known: --port --host --config --state-dir --issuer)`);
    args[match[1]] = match[2] ?? argv[(i += 1)];
    if (args[match[1]] === undefined) fatal(`${argv[i - 1]} needs a value`);
  }
  return args;
}

function loadConfig(args) {
  let source;
  let raw;
  try {
    if (args.config || process.env.CUTTLE_OIDC_CONFIG) {
      source = args.config || process.env.CUTTLE_OIDC_CONFIG;
      raw = fs.readFileSync(source, 'utf8');
    } else if (process.env.CUTTLE_OIDC_CONFIG_JSON) {
      source = '$CUTTLE_OIDC_CONFIG_JSON';
      raw = process.env.CUTTLE_OIDC_CONFIG_JSON;
    } else {
      source = path.join(here, 'default-config.json');
      raw = fs.readFileSync(source, 'utf8');
    }
  } catch (err) {
    fatal(`cannot read config ${source}: ${err.message}`);
  }
  let config;
  try {
    config = JSON.parse(raw);
  } catch (err) {
    fatal(`config ${source} is not valid JSON: ${err.message}`);
  }
  if (!Array.isArray(config.clients) || config.clients.length === 0) fatal(`config ${source} has no "clients"`);
  if (!Array.isArray(config.accounts) || config.accounts.length === 0) fatal(`config ${source} has no "accounts"`);
  for (const account of config.accounts) {
    if (!account.id || typeof account.password !== 'string') {
      fatal(`config ${source}: every account needs "id" and "password": ${JSON.stringify(account)}`);
    }
  }
  for (const client of config.clients) {
    if (!client.client_id || !Array.isArray(client.redirect_uris)) {
      fatal(`config ${source}: every client needs "client_id" and "redirect_uris"`);
    }
    const mode = client.loopback_redirects ?? 'any-port';
    if (!['exact', 'any-port', 'any'].includes(mode)) {
      fatal(`config ${source}: client ${client.client_id}: loopback_redirects must be exact, any-port or any`);
    }
  }
  return { config, source };
}

async function loadOidcProvider() {
  const cacheDir = process.env.CUTTLE_CACHE_DIR || path.join(os.homedir(), '.cache', 'cuttle');
  const toolsDir = process.env.CUTTLE_NODE_TOOLS || path.join(cacheDir, 'node-tools');
  const packageDir = path.join(toolsDir, 'node_modules', 'oidc-provider');
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(packageDir, 'package.json'), 'utf8'));
  } catch {
    fatal(`oidc-provider is not installed in ${toolsDir} (run: bash infra/oidc.sh)`);
  }
  if (!manifest.version.startsWith('9.')) fatal(`oidc-provider ${manifest.version} in ${toolsDir}; version 9 is needed`);
  const module = await import(pathToFileURL(path.join(packageDir, manifest.main || 'lib/index.js')).href);
  return { Provider: module.default ?? module.Provider, version: manifest.version };
}

// One RS256 signing key; kept in the state directory so that restarts keep tokens verifiable.
function signingKeys(stateDir) {
  const file = stateDir ? path.join(stateDir, 'jwks.json') : null;
  if (file && fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const jwks = { keys: [{ ...jwk, kid: crypto.randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' }] };
  if (file) {
    fs.mkdirSync(stateDir, { recursive: true });
    fs.writeFileSync(file, JSON.stringify(jwks), { mode: 0o600 });
  }
  return jwks;
}

function isLoopbackHttp(value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  return url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}

function withoutPort(value) {
  const url = new URL(value);
  url.port = '';
  return url.href;
}

const escapeHtml = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}label{display:block;margin:.6em 0}
input{display:block;width:100%;padding:.3em}.error{color:#b00}</style></head>
<body>${body}</body></html>`;
}

function loginPage(uid, details, clientId, error, login) {
  return page('Sign in', `
<h1>Sign in</h1>
<p>to <b id="client">${escapeHtml(clientId)}</b>, scopes <code id="scope">${escapeHtml(details.params.scope || '')}</code></p>
${error ? `<p class="error" id="error">${escapeHtml(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${escapeHtml(uid)}/login" data-uid="${escapeHtml(uid)}">
  <label>Login (account id or email)
    <input id="login" name="login" autocomplete="username" autofocus value="${escapeHtml(login || '')}"></label>
  <label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
  <button id="submit" type="submit">Sign in</button>
</form>
<p><a id="abort" href="/interaction/${escapeHtml(uid)}/abort">Cancel</a></p>`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, contentType, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { config, source } = loadConfig(args);
  const host = args.host || process.env.CUTTLE_OIDC_HOST || '127.0.0.1';
  const requestedPort = Number(args.port ?? process.env.CUTTLE_OIDC_PORT ?? 9400);
  if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) fatal(`bad port ${requestedPort}`);
  const stateDir = args['state-dir'] || process.env.CUTTLE_OIDC_STATE_DIR || null;
  const { Provider, version } = await loadOidcProvider();

  // Listen first, so that --port 0 knows its port before the issuer URL is fixed.
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(requestedPort, host, resolve);
  }).catch((err) => fatal(`cannot listen on ${host}:${requestedPort}: ${err.message}`));
  const { port } = server.address();
  const issuer = args.issuer || `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  const accounts = new Map(config.accounts.map((account) => [account.id, account]));
  const findByLogin = (login) => {
    const wanted = String(login || '').trim().toLowerCase();
    return config.accounts.find((a) => a.id.toLowerCase() === wanted || (a.email || '').toLowerCase() === wanted);
  };
  const loopbackModes = new Map(config.clients.map((c) => [c.client_id, c.loopback_redirects ?? 'any-port']));
  const clients = config.clients.map((client) => {
    const metadata = { ...client };
    delete metadata.loopback_redirects;
    metadata.grant_types ??= ['authorization_code', 'refresh_token'];
    metadata.response_types ??= ['code'];
    metadata.token_endpoint_auth_method ??= 'client_secret_basic';
    return metadata;
  });

  const configuration = {
    clients,
    async findAccount(_ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: account.email,
            email_verified: account.email_verified ?? true,
            name: account.name,
            preferred_username: account.preferred_username ?? account.id,
            groups: account.groups ?? [],
            ...(account.claims || {}),
          };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    // Put the scope's claims (email, name, groups) into the ID token itself, not only /me.
    conformIdTokenClaims: false,
    pkce: { required: () => config.requirePkce !== false },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page('Sign out', `<h1>Sign out?</h1>${form}
<button id="logout" type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<h1>Signed out</h1>');
        },
      },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // Test accounts never see a consent screen: the grant covers whatever the client asked for.
    async loadExistingGrant(ctx) {
      const { provider: op, session, client } = ctx.oidc;
      const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
      let grant = grantId ? await op.Grant.find(grantId) : undefined;
      if (!grant) grant = new op.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
      const claims = ctx.oidc.requestParamClaims;
      if (claims && claims.size) grant.addOIDCClaims([...claims]);
      await grant.save();
      return grant;
    },
    // Fixed lifetimes (seconds); also silences the library's notices about its defaults.
    ttl: {
      AccessToken: 3600, AuthorizationCode: 600, ClientCredentials: 600, IdToken: 3600,
      Interaction: 3600, Grant: 14 * 24 * 3600, Session: 14 * 24 * 3600, RefreshToken: 14 * 24 * 3600,
      ...(config.ttl || {}),
    },
    jwks: signingKeys(stateDir),
    // Cookies are scoped to a host, not to a port: every server on 127.0.0.1 (Cuttle, a second
    // provider) shares one cookie jar, so the names carry the port and never collide.
    cookies: {
      keys: [crypto.randomBytes(32).toString('hex')],
      names: { session: `op_session_${port}`, interaction: `op_interaction_${port}`, resume: `op_resume_${port}` },
    },
    clientBasedCORS: () => true,
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Error</h1><p id="error">${escapeHtml(out.error)}: ${escapeHtml(out.error_description || '')}</p>`);
    },
  };

  const provider = new Provider(issuer, configuration);

  // loopback_redirects: "exact" = redirect_uris only; "any-port" = a registered http loopback URI
  // on any port (RFC 8252 style, for servers on ephemeral test ports); "any" = any http URL on
  // 127.0.0.1, localhost or [::1], whatever its port and path.
  for (const method of ['redirectUriAllowed', 'postLogoutRedirectUriAllowed']) {
    const original = provider.Client.prototype[method];
    const registered = method === 'redirectUriAllowed' ? 'redirectUris' : 'postLogoutRedirectUris';
    provider.Client.prototype[method] = function allowed(value) {
      if (original.call(this, value)) return true;
      const mode = loopbackModes.get(this.clientId) ?? 'any-port';
      if (mode === 'exact' || !isLoopbackHttp(value)) return false;
      if (mode === 'any') return true;
      return (this[registered] || []).some((uri) => isLoopbackHttp(uri) && withoutPort(uri) === withoutPort(value));
    };
  }

  provider.use(async (ctx, next) => {
    const started = Date.now();
    await next();
    log(`${ctx.method} ${ctx.path} -> ${ctx.status} (${Date.now() - started} ms)`);
  });
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error',
    'introspection.error', 'revocation.error', 'end_session.error', 'backchannel.error']) {
    provider.on(event, (...eventArgs) => {
      const err = eventArgs.find((a) => a instanceof Error);
      log(`${event}: ${err ? `${err.name}: ${err.message}${err.error_detail ? ` (${err.error_detail})` : ''}` : ''}`);
    });
  }

  const callback = provider.callback();
  const interactionRoute = /^\/interaction\/([A-Za-z0-9_-]+)(\/login|\/abort)?$/;

  async function interaction(req, res, uid, action) {
    let details;
    try {
      details = await provider.interactionDetails(req, res);
    } catch (err) {
      log(`interaction ${uid}: ${err.message}`);
      send(res, 400, 'text/html; charset=utf-8', page('Error', `<h1>Error</h1><p id="error">This sign-in request is unknown or has expired (${escapeHtml(err.message)}). Start again from the application.</p>`));
      return;
    }
    if (details.uid !== uid) {
      send(res, 400, 'text/plain; charset=utf-8', 'interaction cookie does not match the URL\n');
      return;
    }
    const clientId = details.params.client_id;
    if (action === '/abort') {
      log(`interaction ${uid}: aborted by the user`);
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user cancelled the sign-in' }, { mergeWithLastSubmission: false });
      return;
    }
    if (details.prompt.name === 'consent') {
      // Only reached when the client forces prompt=consent: grant what was asked and go on.
      const grant = details.grantId ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId });
      if (details.prompt.details.missingOIDCScope) grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(' '));
      if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
      await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
      return;
    }
    if (details.prompt.name !== 'login') {
      send(res, 400, 'text/plain; charset=utf-8', `unsupported prompt ${details.prompt.name}\n`);
      return;
    }
    if (action !== '/login') {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        send(res, 405, 'text/plain; charset=utf-8', 'use GET to show the form, POST /login to submit it\n');
        return;
      }
      send(res, 200, 'text/html; charset=utf-8', loginPage(uid, details, clientId));
      return;
    }
    if (req.method !== 'POST') {
      send(res, 405, 'text/plain; charset=utf-8', 'POST login and password here\n');
      return;
    }
    const form = await readForm(req);
    const account = findByLogin(form.get('login'));
    const password = form.get('password') ?? '';
    const matches = account && crypto.timingSafeEqual(
      crypto.createHash('sha256').update(password).digest(),
      crypto.createHash('sha256').update(account.password).digest(),
    );
    if (!matches) {
      log(`interaction ${uid}: wrong login or password for ${JSON.stringify(form.get('login'))}`);
      send(res, 401, 'text/html; charset=utf-8', loginPage(uid, details, clientId, 'Wrong login or password.', form.get('login')));
      return;
    }
    log(`interaction ${uid}: ${account.id} signed in for client ${clientId}`);
    await provider.interactionFinished(req, res, { login: { accountId: account.id } }, { mergeWithLastSubmission: false });
  }

  server.on('request', (req, res) => {
    const pathname = (req.url || '/').split('?')[0];
    const match = interactionRoute.exec(pathname);
    if (!match) {
      callback(req, res);
      return;
    }
    const started = Date.now();
    res.on('finish', () => log(`${req.method} ${pathname} -> ${res.statusCode} (${Date.now() - started} ms)`));
    interaction(req, res, match[1], match[2]).catch((err) => {
      log(`interaction ${match[1]}: ${err.stack || err}`);
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `internal error: ${err.message}\n`);
    });
  });

  const stop = (signal) => {
    log(`${signal}: shutting down`);
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  // The first stdout line is the one machine-readable line, for tests that spawn the provider
  // with --port 0; log lines follow.
  process.stdout.write(`${JSON.stringify({ issuer, port, pid: process.pid })}\n`);
  log(`oidc-provider ${version} serving issuer ${issuer} (config ${source}; ${config.clients.length} clients, ${config.accounts.length} accounts)`);
}

main().catch((err) => fatal(err.stack || String(err)));
