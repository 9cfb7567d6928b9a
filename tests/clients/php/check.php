<?php
// php-memcached (libmemcached, binary protocol, SASL) against a memcachier
// node, configured as MemCachier's documentation configures it, from
// MEMCACHIER_SERVERS / MEMCACHIER_USERNAME / MEMCACHIER_PASSWORD.  Prints one
// JSON object of what it observed; tests/integration/test_foreign_clients.py
// checks it.  MEMCACHIER_TEST_BIG: the size of the largest value that fits.

function client($password) {
    $m = new Memcached();
    $m->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
    $m->setOption(Memcached::OPT_TCP_NODELAY, true);
    $m->setOption(Memcached::OPT_NO_BLOCK, false);
    $m->setOption(Memcached::OPT_CONNECT_TIMEOUT, 2000);    // ms
    $m->setOption(Memcached::OPT_POLL_TIMEOUT, 2000);       // ms
    $m->setOption(Memcached::OPT_RECV_TIMEOUT, 750 * 1000); // us
    $m->setOption(Memcached::OPT_SEND_TIMEOUT, 750 * 1000); // us
    $m->setOption(Memcached::OPT_DISTRIBUTION, Memcached::DISTRIBUTION_CONSISTENT);
    $m->setOption(Memcached::OPT_LIBKETAMA_COMPATIBLE, true);
    $m->setOption(Memcached::OPT_RETRY_TIMEOUT, 2);
    $m->setOption(Memcached::OPT_SERVER_FAILURE_LIMIT, 1);
    $m->setOption(Memcached::OPT_AUTO_EJECT_HOSTS, true);
    // values go to the server as they are (no zlib), so the 1 MB value is 1 MB
    $m->setOption(Memcached::OPT_COMPRESSION, false);
    $m->setSaslAuthData(getenv('MEMCACHIER_USERNAME'), $password);
    foreach (explode(',', getenv('MEMCACHIER_SERVERS')) as $s) {
        $parts = explode(':', $s);
        $m->addServer($parts[0], (int) $parts[1]);
    }
    return $m;
}

function connected($password) {
    // libmemcached 1.1 reads the SASL_LIST_MECHS reply into a buffer it does
    // not NUL-terminate: now and then Cyrus SASL finds no mechanism and the
    // client fails with "FAILED TO SEND AUTHENTICATION TO SERVER" before
    // sending SASL_AUTH (a client bug; memcached's reply is the same bytes).
    // Retry only that, with a fresh client.
    for ($attempt = 0; $attempt < 5; $attempt++) {
        $m = client($password);
        $m->get('php-warm-up');
        if ($m->getResultCode() != Memcached::RES_AUTH_PROBLEM) {
            return $m;
        }
    }
    return $m;
}

function outcome($m, $ok) {
    return ['refused' => !$ok,
            'error' => $ok ? null : $m->getResultCode() . ' ' . $m->getResultMessage()];
}

function orNull($m, $value) {
    // a miss is false with RES_NOTFOUND: JSON null
    return $m->getResultCode() == Memcached::RES_NOTFOUND ? null : $value;
}

$mc = connected(getenv('MEMCACHIER_PASSWORD'));
$out = ['client' => 'php-memcached ' . phpversion('memcached')];
$out['seed'] = orNull($mc, $mc->get('seed'));
$out['set'] = $mc->set('k1', 'v1');
$mc->set('k2', 'v2');
$out['get'] = orNull($mc, $mc->get('k1'));
$out['multi'] = (object) $mc->getMulti(['k1', 'k2', 'missing']);
$out['delete'] = $mc->delete('k2');
$out['afterDelete'] = orNull($mc, $mc->get('k2'));
$mc->set('counter', '10');
$out['incr'] = $mc->increment('counter', 5);
$out['decr'] = $mc->decrement('counter', 3);
$mc->set('casKey', 'original');
$got = $mc->get('casKey', null, Memcached::GET_EXTENDED);
$fresh = $mc->cas($got['cas'], 'casKey', 'swapped');
$stale = $mc->cas($got['cas'], 'casKey', 'stale');
$out['cas'] = ['fresh' => $fresh, 'stale' => $stale,
               'staleCode' => $mc->getResultCode() == Memcached::RES_DATA_EXISTS ? 'RES_DATA_EXISTS' : $mc->getResultMessage(),
               'value' => $mc->get('casKey')];

$size = (int) getenv('MEMCACHIER_TEST_BIG');
$big = substr(str_repeat('0123456789abcdef', intdiv($size, 16) + 1), 0, $size);
$stored = $mc->set('big', $big);
$out['big'] = ['size' => $size, 'stored' => $stored, 'same' => $mc->get('big') === $big];
$out['tooBig'] = outcome($mc, $mc->set('big2', $big));
$out['afterTooBig'] = orNull($mc, $mc->get('k1'));
$mc->set('written', 'php');

// the first operation meets the refusal (after it, libmemcached marks the
// server dead and says only that)
for ($attempt = 0; $attempt < 5; $attempt++) {
    $bad = client(getenv('MEMCACHIER_PASSWORD') . 'x');
    $ok = $bad->set('k3', 'v3');
    if ($bad->getResultCode() != Memcached::RES_AUTH_PROBLEM) {
        break;
    }
}
$out['wrongPassword'] = outcome($bad, $ok);
$out['wrongPasswordWrote'] = orNull($mc, $mc->get('k3'));
echo json_encode($out), "\n";
