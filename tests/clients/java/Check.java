// spymemcached against a memcachier node, configured as MemCachier's
// documentation configures it (binary protocol, SASL PLAIN), from
// MEMCACHIER_SERVERS / MEMCACHIER_USERNAME / MEMCACHIER_PASSWORD.  Prints one
// JSON object of what it observed; tests/integration/test_foreign_clients.py
// checks it.  Run as a single-file program:
//     java -cp /usr/share/java/spymemcached.jar Check.java
// MEMCACHIER_TEST_BIG: the size of the largest value that fits.

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;

import net.spy.memcached.AddrUtil;
import net.spy.memcached.CASResponse;
import net.spy.memcached.CASValue;
import net.spy.memcached.ConnectionFactoryBuilder;
import net.spy.memcached.FailureMode;
import net.spy.memcached.MemcachedClient;
import net.spy.memcached.auth.AuthDescriptor;
import net.spy.memcached.auth.PlainCallbackHandler;
import net.spy.memcached.transcoders.SerializingTranscoder;

public class Check {
    /** spymemcached's log lines (through java.util.logging), to see an auth failure. */
    static final List<String> LOG = new ArrayList<>();

    static MemcachedClient client(String password) throws Exception {
        AuthDescriptor ad = new AuthDescriptor(new String[] {"PLAIN"},
            new PlainCallbackHandler(System.getenv("MEMCACHIER_USERNAME"), password));
        // values go to the server as they are: no gzip, so 1 MB stays 1 MB
        SerializingTranscoder transcoder = new SerializingTranscoder();
        transcoder.setCompressionThreshold(Integer.MAX_VALUE);
        return new MemcachedClient(
            new ConnectionFactoryBuilder()
                .setProtocol(ConnectionFactoryBuilder.Protocol.BINARY)
                .setAuthDescriptor(ad)
                .setTranscoder(transcoder)
                .setOpTimeout(2000)
                .setFailureMode(FailureMode.Redistribute)
                .build(),
            AddrUtil.getAddresses(System.getenv("MEMCACHIER_SERVERS").replace(",", " ")));
    }

    static Map<String, Object> outcome(MemcachedClient mc, String key, Object value) {
        Map<String, Object> result = new LinkedHashMap<>();
        try {
            boolean ok = mc.set(key, 0, value).get(3, TimeUnit.SECONDS);
            result.put("refused", !ok);
            result.put("error", null);
        } catch (Exception e) {
            result.put("refused", true);
            result.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
        }
        return result;
    }

    public static void main(String[] args) throws Exception {
        System.setProperty("net.spy.log.LoggerImpl", "net.spy.memcached.compat.log.SunLogger");
        Logger root = Logger.getLogger("");
        for (Handler h : root.getHandlers()) {
            root.removeHandler(h);
        }
        root.addHandler(new Handler() {
            public void publish(LogRecord r) {
                if (r.getLevel().intValue() >= Level.WARNING.intValue()) {
                    synchronized (LOG) {
                        LOG.add(String.valueOf(r.getMessage()));
                    }
                }
            }
            public void flush() {}
            public void close() {}
        });

        Map<String, Object> out = new LinkedHashMap<>();
        String version = MemcachedClient.class.getPackage().getImplementationVersion();
        out.put("client", "spymemcached " + (version == null ? "(Debian)" : version));
        MemcachedClient mc = client(System.getenv("MEMCACHIER_PASSWORD"));
        out.put("seed", mc.get("seed"));
        out.put("set", mc.set("k1", 0, "v1").get());
        mc.set("k2", 0, "v2").get();
        out.put("get", mc.get("k1"));
        out.put("multi", mc.getBulk("k1", "k2", "missing"));
        out.put("delete", mc.delete("k2").get());
        out.put("afterDelete", mc.get("k2"));
        mc.set("counter", 0, "10").get();
        out.put("incr", mc.incr("counter", 5));
        out.put("decr", mc.decr("counter", 3));
        mc.set("casKey", 0, "original").get();
        CASValue<Object> got = mc.gets("casKey");
        Map<String, Object> cas = new LinkedHashMap<>();
        cas.put("fresh", mc.cas("casKey", got.getCas(), "swapped") == CASResponse.OK);
        CASResponse stale = mc.cas("casKey", got.getCas(), "stale");
        cas.put("stale", stale == CASResponse.OK);
        cas.put("staleCode", stale.toString());
        cas.put("value", mc.get("casKey"));
        out.put("cas", cas);

        int size = Integer.parseInt(System.getenv("MEMCACHIER_TEST_BIG"));
        StringBuilder sb = new StringBuilder(size + 16);
        while (sb.length() < size) {
            sb.append("0123456789abcdef");
        }
        String big = sb.substring(0, size);
        Map<String, Object> bigResult = new LinkedHashMap<>();
        bigResult.put("size", size);
        bigResult.put("stored", mc.set("big", 0, big).get());
        bigResult.put("same", big.equals(mc.get("big")));
        out.put("big", bigResult);
        out.put("tooBig", outcome(mc, "big2", big));
        out.put("afterTooBig", mc.get("k1"));
        mc.set("written", 0, "java").get();

        MemcachedClient bad = client(System.getenv("MEMCACHIER_PASSWORD") + "x");
        Map<String, Object> refused = outcome(bad, "k3", "v3");
        synchronized (LOG) {
            String authLine = null;
            for (String line : LOG) {
                if (line.contains("Authentication failed")) {
                    authLine = line;
                }
            }
            // spymemcached retries a failed authentication and times the operation out;
            // its log says why
            refused.put("log", authLine);
        }
        out.put("wrongPassword", refused);
        out.put("wrongPasswordWrote", mc.get("k3"));
        bad.shutdown(1, TimeUnit.SECONDS);
        mc.shutdown(1, TimeUnit.SECONDS);
        System.out.println(json(out));
    }

    static String json(Object o) {
        if (o == null) {
            return "null";
        }
        if (o instanceof Boolean || o instanceof Number) {
            return o.toString();
        }
        if (o instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                if (sb.length() > 1) {
                    sb.append(',');
                }
                sb.append(json(String.valueOf(e.getKey()))).append(':').append(json(e.getValue()));
            }
            return sb.append('}').toString();
        }
        StringBuilder sb = new StringBuilder("\"");
        for (char c : o.toString().toCharArray()) {
            if (c == '"' || c == '\\') {
                sb.append('\\').append(c);
            } else if (c < 0x20) {
                sb.append(String.format("\\u%04x", (int) c));
            } else {
                sb.append(c);
            }
        }
        return sb.append('"').toString();
    }
}
