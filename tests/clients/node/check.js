// memjs against a memcachier node, configured as MemCachier's documentation
// configures it: memjs reads MEMCACHIER_SERVERS / MEMCACHIER_USERNAME /
// MEMCACHIER_PASSWORD itself.  Prints one JSON object of what it observed;
// tests/integration/test_foreign_clients.py checks it.
// MEMCACHIER_TEST_BIG: the size of the largest value that fits.
'use strict';
const memjs = require('memjs');
const version = require('memjs/package.json').version;

const quiet = { log: () => {} };

function client(options) {
  return memjs.Client.create(process.env.MEMCACHIER_SERVERS, {
    failover: true, // default: false
    timeout: 1, // seconds, default: 0.5
    keepAlive: true, // default: false
    logger: quiet,
    ...options,
  });
}

async function value(mc, key) {
  const got = await mc.get(key);
  return got.value === null ? null : got.value.toString();
}

async function outcome(promise) {
  try {
    const ok = await promise;
    return { refused: !ok, error: null };
  } catch (err) {
    return { refused: true, error: String(err && err.message ? err.message : err) };
  }
}

async function main() {
  const mc = client({});
  const out = { client: `memjs ${version}` };
  out.seed = await value(mc, 'seed');
  out.set = await mc.set('k1', 'v1', { expires: 0 });
  await mc.set('k2', 'v2', {});
  out.get = await value(mc, 'k1');
  // memjs 1.3.2 has no multi-get: concurrent gets, pipelined on one socket
  const keys = ['k1', 'k2', 'missing'];
  const values = await Promise.all(keys.map((k) => value(mc, k)));
  out.multi = {};
  keys.forEach((k, i) => { if (values[i] !== null) out.multi[k] = values[i]; });
  out.delete = await mc.delete('k2');
  out.afterDelete = await value(mc, 'k2');
  await mc.set('counter', '10', {});
  out.incr = (await mc.increment('counter', 5, {})).value;
  out.decr = (await mc.decrement('counter', 3, {})).value;
  // memjs 1.3.2 has no cas

  const size = parseInt(process.env.MEMCACHIER_TEST_BIG, 10);
  const big = '0123456789abcdef'.repeat(Math.floor(size / 16) + 1).slice(0, size);
  const stored = await mc.set('big', big, {});
  out.big = { size, stored, same: (await value(mc, 'big')) === big };
  out.tooBig = await outcome(mc.set('big2', big, {}));
  out.afterTooBig = await value(mc, 'k1');
  await mc.set('written', 'node', {});

  const bad = client({ password: process.env.MEMCACHIER_PASSWORD + 'x', retries: 1 });
  out.wrongPassword = await outcome(bad.set('k3', 'v3', {}));
  out.wrongPasswordWrote = await value(mc, 'k3');
  bad.close();
  mc.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
