/*
 * The request hot path's loops in C: the multi-get's per-key loops, and
 * the ASCII codec's run of one-key gets (the most common request of all).
 *
 * Each function has a pure-Python twin (memcachier.stores.memory's
 * getMany, memcachier.protocols.text's renderValues and longestKey, the
 * ASCII codec's line loop for get_run) that defines its behaviour; the tests run the codec and store suites against both
 * (docs/performance.md, "The multi-get in C").  Items are the packed bytes
 * of memcachier.commands (ITEM_FIELDS states their layout): the offsets
 * below are the ones this file reads, exported as module constants so that
 * tests/unit/test_item_layout.py checks them against the Python layout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* memcachier.commands.ITEM_BITS_AT: the item's bits byte */
#define ITEM_BITS_AT 16
/* memcachier.commands.ITEM_SUFFIX_LENGTH_AT: the length of the suffix */
#define ITEM_SUFFIX_LENGTH_AT 17
/* memcachier.commands.ITEM_PREFIX_SIZE: where the ASCII reply suffix starts */
#define ITEM_PREFIX_SIZE 18
/* memcachier.commands.ITEM_CAS_AT: the CAS, little-endian */
#define ITEM_CAS_AT 0
/* memcachier.commands.KEY_MAX_LENGTH */
#define KEY_MAX_LENGTH 250

/* what bytes.split() splits on */
static inline int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* grow `*out` (a bytes object being built, `*used` bytes of it filled) to
 * hold `more` bytes more; on failure `*out` is left as it was */
static int
reserve(PyObject **out, Py_ssize_t used, Py_ssize_t more)
{
    Py_ssize_t size = PyBytes_GET_SIZE(*out);
    if (used + more <= size)
        return 0;
    Py_ssize_t want = size * 2;
    if (want < used + more)
        want = used + more;
    PyObject *grown = PyBytes_FromStringAndSize(NULL, want);
    if (grown == NULL)
        return -1;
    memcpy(PyBytes_AS_STRING(grown), PyBytes_AS_STRING(*out), used);
    Py_SETREF(*out, grown);
    return 0;
}

/*
 * get_many(shards, mask, keys, hot, slow) -> list
 *
 * Look every key of the sequence `keys` up in its dict of the list
 * `shards`: shards[hash(key) & mask], as Python computes it.  A found item
 * whose bits byte equals `hot` is taken as it is; any other found item is
 * handed to `slow(key, item)` (expiry check, LRU bits), whose result (an
 * item or None) is taken instead.  Misses are None.
 */
static PyObject *
get_many(PyObject *self, PyObject *args)
{
    PyObject *shards, *sequence, *slow;
    Py_ssize_t mask;
    int hot;
    if (!PyArg_ParseTuple(args, "O!nOiO:get_many", &PyList_Type, &shards,
                          &mask, &sequence, &hot, &slow))
        return NULL;
    if (mask < 0 || PyList_GET_SIZE(shards) <= mask) {
        PyErr_SetString(PyExc_ValueError, "get_many: mask beyond the shards");
        return NULL;
    }
    PyObject *keys = PySequence_Fast(sequence, "get_many: keys must be a sequence");
    if (keys == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys);
    PyObject *found = PyList_New(n);
    if (found == NULL) {
        Py_DECREF(keys);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(keys, i);
        Py_hash_t hash = PyObject_Hash(key);
        if (hash == -1) {
            Py_DECREF(found);
            Py_DECREF(keys);
            return NULL;
        }
        PyObject *items = PyList_GET_ITEM(shards, (Py_uhash_t)hash & (Py_uhash_t)mask);
        if (!PyDict_Check(items)) {
            PyErr_SetString(PyExc_TypeError, "get_many: shards must be dicts");
            Py_DECREF(found);
            Py_DECREF(keys);
            return NULL;
        }
        PyObject *item = PyDict_GetItemWithError(items, key);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(found);
                Py_DECREF(keys);
                return NULL;
            }
            item = Py_None;
            Py_INCREF(item);
        }
        else if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) <= ITEM_BITS_AT
                 || (unsigned char)PyBytes_AS_STRING(item)[ITEM_BITS_AT] != hot) {
            /* the dict's reference is borrowed: slow() may replace it */
            Py_INCREF(item);
            PyObject *result = PyObject_CallFunctionObjArgs(slow, key, item, NULL);
            Py_DECREF(item);
            if (result == NULL || PySequence_Fast_GET_SIZE(keys) != n) {
                /* slow() must not change the keys: if it did, stop here */
                if (result != NULL) {
                    Py_DECREF(result);
                    PyErr_SetString(PyExc_RuntimeError, "get_many: the keys changed");
                }
                Py_DECREF(found);
                Py_DECREF(keys);
                return NULL;
            }
            item = result;
        }
        else {
            Py_INCREF(item);
        }
        PyList_SET_ITEM(found, i, item);
    }
    Py_DECREF(keys);
    return found;
}

/*
 * render_run(keys, items, start, prefix, budget, big, end) -> (bytes, next)
 *
 * "VALUE " + key + item[prefix:] + "\r\n" for the items from `start` on
 * that are not None (items[i] was fetched for keys[i]), in one allocation
 * with one copy of each value, until the reply reaches `budget` bytes or
 * the next hit's value (after its suffix) is `big` bytes or more, which the
 * caller sends by reference.  `end` is appended when every item is
 * rendered.  `next` is the index of the first item not rendered.
 */
static PyObject *
render_run(PyObject *self, PyObject *args)
{
    PyObject *keySequence, *itemSequence;
    Py_ssize_t start, prefix, budget, big;
    Py_buffer end;
    if (!PyArg_ParseTuple(args, "OOnnnny*:render_run", &keySequence, &itemSequence,
                          &start, &prefix, &budget, &big, &end))
        return NULL;
    PyObject *result = NULL, *items = NULL;
    PyObject *keys = PySequence_Fast(keySequence, "render_run: keys must be a sequence");
    if (keys == NULL)
        goto done;
    items = PySequence_Fast(itemSequence, "render_run: items must be a sequence");
    if (items == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    if (PySequence_Fast_GET_SIZE(keys) < n || prefix < 0 || start < 0) {
        PyErr_SetString(PyExc_ValueError, "render_run: fewer keys than items");
        goto done;
    }
    /* first pass: how far to go, and how many bytes */
    Py_ssize_t total = 0, stop = start;
    for (; stop < n && total < budget; stop++) {
        PyObject *item = PySequence_Fast_GET_ITEM(items, stop);
        if (item == Py_None)
            continue;
        PyObject *key = PySequence_Fast_GET_ITEM(keys, stop);
        if (!PyBytes_Check(item) || !PyBytes_Check(key)
            || PyBytes_GET_SIZE(item) < prefix || PyBytes_GET_SIZE(item) < ITEM_PREFIX_SIZE) {
            PyErr_SetString(PyExc_TypeError, "render_run: keys and items must be packed bytes");
            goto done;
        }
        /* the length of the suffix that precedes the value */
        Py_ssize_t tail = PyBytes_GET_SIZE(item) - prefix;
        Py_ssize_t suffix = (unsigned char)PyBytes_AS_STRING(item)[ITEM_SUFFIX_LENGTH_AT];
        if (tail - suffix >= big)
            break;
        total += 6 + PyBytes_GET_SIZE(key) + tail + 2;
    }
    int finished = stop >= n;
    PyObject *reply = PyBytes_FromStringAndSize(NULL, total + (finished ? end.len : 0));
    if (reply == NULL)
        goto done;
    char *out = PyBytes_AS_STRING(reply);
    for (Py_ssize_t i = start; i < stop; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(items, i);
        if (item == Py_None)
            continue;
        PyObject *key = PySequence_Fast_GET_ITEM(keys, i);
        Py_ssize_t klen = PyBytes_GET_SIZE(key);
        Py_ssize_t tail = PyBytes_GET_SIZE(item) - prefix;
        memcpy(out, "VALUE ", 6);
        out += 6;
        memcpy(out, PyBytes_AS_STRING(key), klen);
        out += klen;
        memcpy(out, PyBytes_AS_STRING(item) + prefix, tail);
        out += tail;
        memcpy(out, "\r\n", 2);
        out += 2;
    }
    if (finished)
        memcpy(out, end.buf, end.len);
    result = Py_BuildValue("(Nn)", reply, stop);
done:
    Py_XDECREF(keys);
    Py_XDECREF(items);
    PyBuffer_Release(&end);
    return result;
}

/* the item's value: after the prefix and the ASCII suffix */
static inline Py_ssize_t
value_at(PyObject *item)
{
    return ITEM_PREFIX_SIZE + (unsigned char)PyBytes_AS_STRING(item)[ITEM_SUFFIX_LENGTH_AT];
}

/*
 * `get(key)`, the keyspace's lookup: a new reference to the item or to
 * None, or NULL with no error set when it raised (the error dropped: the
 * codec's own path answers that request) or gave what is not an item (a
 * keyspace that answers later).
 */
static PyObject *
fetch(PyObject *get, PyObject *key)
{
    PyObject *item = PyObject_CallOneArg(get, key);
    if (item == NULL || (item != Py_None && (!PyBytes_Check(item)
            || PyBytes_GET_SIZE(item) < ITEM_PREFIX_SIZE
            || PyBytes_GET_SIZE(item) < value_at(item)))) {
        Py_XDECREF(item);
        PyErr_Clear();
        return NULL;
    }
    return item;
}

/* `tap((op, key, value length or -1))`, as Session.get taps; -1 with no
 * error set when it failed */
static int
tap_get(PyObject *tap, PyObject *op, PyObject *key, PyObject *item)
{
    PyObject *size = PyLong_FromSsize_t(
        item == Py_None ? -1 : PyBytes_GET_SIZE(item) - value_at(item));
    PyObject *event = size == NULL ? NULL : PyTuple_Pack(3, op, key, size);
    Py_XDECREF(size);
    PyObject *tapped = event == NULL ? NULL : PyObject_CallOneArg(tap, event);
    Py_XDECREF(event);
    if (tapped == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_DECREF(tapped);
    return 0;
}

/*
 * A codec's one-key get: where its key is and where the next request
 * starts (0 if `buf` from `pos` is not such a request, whole), and how
 * its answer is written.
 */
typedef Py_ssize_t (*parse_get)(const unsigned char *buf, Py_ssize_t pos, Py_ssize_t end,
                                Py_ssize_t *key_at, Py_ssize_t *klen);
/* the bytes the answer takes (0: none), then the answer itself at `w` */
typedef Py_ssize_t (*answer_size)(const unsigned char *request, Py_ssize_t klen, PyObject *item);
typedef void (*answer_get)(unsigned char *w, const unsigned char *request,
                           const unsigned char *key, Py_ssize_t klen, PyObject *item);

/*
 * The run of one-key gets of `data` from `pos` on, each parsed by
 * `parse`, looked up (fetch), tapped (tap_get) and answered by `answer`,
 * as the codec's own loop, Session.get and its rendering do it.  Stops
 * before the first other request (or an incomplete one), before a request
 * it could not look up, tap or make room for (the codec's own path answers
 * it, memcached's way), or once the replies reach `budget` bytes.  Returns (pos, reply, hits,
 * misses): where it stopped, the replies, and what the session counts.
 */
static PyObject *
run_gets(PyObject *args, const char *format, parse_get parse, answer_size size,
         answer_get answer)
{
    Py_buffer data;
    Py_ssize_t pos, budget;
    PyObject *get, *tap, *op;
    if (!PyArg_ParseTuple(args, format, &data, &pos, &get, &tap, &op, &budget))
        return NULL;
    const unsigned char *buf = data.buf;
    Py_ssize_t end = data.len, used = 0, hits = 0, misses = 0;
    if (pos < 0)
        pos = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 256);
    if (out == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    while (used < budget && pos < end) {
        Py_ssize_t at, klen, next = parse(buf, pos, end, &at, &klen);
        if (next == 0)
            break;
        PyObject *key = PyBytes_FromStringAndSize((const char *)buf + at, klen);
        PyObject *item = key == NULL ? NULL : fetch(get, key);
        Py_ssize_t n = item == NULL ? -1 : size(buf + pos, klen, item);
        if (n < 0 || reserve(&out, used, n) < 0 || tap_get(tap, op, key, item) < 0) {
            PyErr_Clear();
            Py_XDECREF(item);
            Py_XDECREF(key);
            break;
        }
        Py_DECREF(key);
        if (n > 0)
            answer((unsigned char *)PyBytes_AS_STRING(out) + used, buf + pos, buf + at, klen, item);
        used += n;
        if (item == Py_None)
            misses++;
        else
            hits++;
        Py_DECREF(item);
        pos = next;
    }
    PyBuffer_Release(&data);
    if (_PyBytes_Resize(&out, used) < 0)
        return NULL;
    return Py_BuildValue("nNnn", pos, out, hits, misses);
}

/* ASCII: exactly "get <key>\n" or "get <key>\r\n", the key 1 to
 * KEY_MAX_LENGTH bytes without whitespace */
static Py_ssize_t
ascii_parse(const unsigned char *buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t *key_at,
            Py_ssize_t *klen)
{
    if (end - pos < 6 || memcmp(buf + pos, "get ", 4) != 0)
        return 0;
    Py_ssize_t at = pos + 4, k = at;
    while (k < end && k - at <= KEY_MAX_LENGTH && !is_space(buf[k]))
        k++;
    if (k == at || k - at > KEY_MAX_LENGTH || k >= end)
        return 0;
    *key_at = at;
    *klen = k - at;
    if (buf[k] == '\n')
        return k + 1;
    if (buf[k] == '\r' && k + 1 < end && buf[k + 1] == '\n')
        return k + 2;
    return 0;
}

/* END, or VALUE <key><the item's suffix and value>\r\nEND\r\n */
static Py_ssize_t
ascii_size(const unsigned char *request, Py_ssize_t klen, PyObject *item)
{
    if (item == Py_None)
        return 5;
    return 6 + klen + (PyBytes_GET_SIZE(item) - ITEM_PREFIX_SIZE) + 7;
}

static void
ascii_answer(unsigned char *w, const unsigned char *request, const unsigned char *key,
             Py_ssize_t klen, PyObject *item)
{
    if (item == Py_None) {
        memcpy(w, "END\r\n", 5);
        return;
    }
    Py_ssize_t tail = PyBytes_GET_SIZE(item) - ITEM_PREFIX_SIZE;
    memcpy(w, "VALUE ", 6);
    memcpy(w + 6, key, klen);
    memcpy(w + 6 + klen, PyBytes_AS_STRING(item) + ITEM_PREFIX_SIZE, tail);
    memcpy(w + 6 + klen + tail, "\r\nEND\r\n", 7);
}

/*
 * get_run(data, pos, get, tap, op, budget) -> (pos, reply, hits, misses)
 *
 * The ASCII codec's run of one-key gets (run_gets, ascii_parse).
 */
static PyObject *
get_run(PyObject *self, PyObject *args)
{
    return run_gets(args, "y*nOOOn:get_run", ascii_parse, ascii_size, ascii_answer);
}

/* memcachier.protocols.binary: a plain GET's miss (KEY_ENOENT), the
 * opaque at OPAQUE_AT */
static const char BINARY_MISS[] =
    "\x81\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00Not found";
#define BINARY_MISS_SIZE ((Py_ssize_t)sizeof(BINARY_MISS) - 1)
#define BINARY_HEADER 24
#define OPAQUE_AT 12

static inline void
put_be(unsigned char *w, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        w[i] = (unsigned char)v;
}

/* binary opcodes (protocol_binary.h) of the gets a run answers */
#define OP_GET 0x00
#define OP_GETQ 0x09
#define OP_GETK 0x0C
#define OP_GETKQ 0x0D

/* binary: a whole request frame of opcode GET, GETQ, GETK or GETKQ, no
 * extras, no value, a key of 1 to KEY_MAX_LENGTH bytes */
static Py_ssize_t
binary_parse(const unsigned char *buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t *key_at,
             Py_ssize_t *klen)
{
    if (end - pos < BINARY_HEADER)
        return 0;
    const unsigned char *h = buf + pos;
    Py_ssize_t k = (h[2] << 8) | h[3];
    uint32_t bodylen = ((uint32_t)h[8] << 24) | ((uint32_t)h[9] << 16) | ((uint32_t)h[10] << 8) | h[11];
    if (h[0] != 0x80 || (h[1] != OP_GET && h[1] != OP_GETQ && h[1] != OP_GETK && h[1] != OP_GETKQ)
        || h[4] != 0 || bodylen != (uint32_t)k || k == 0 || k > KEY_MAX_LENGTH
        || end - pos - BINARY_HEADER < k)
        return 0;
    *key_at = pos + BINARY_HEADER;
    *klen = k;
    return pos + BINARY_HEADER + k;
}

/* GETK and GETKQ answer with the key */
static inline int
keyed(const unsigned char *request)
{
    return request[1] == OP_GETK || request[1] == OP_GETKQ;
}

/* a miss: nothing for GETQ and GETKQ, the key for GETK, "Not found" for
 * GET; a hit: the header, the flags, the key (GETK, GETKQ), the value */
static Py_ssize_t
binary_size(const unsigned char *request, Py_ssize_t klen, PyObject *item)
{
    if (item == Py_None) {
        if (request[1] == OP_GETQ || request[1] == OP_GETKQ)
            return 0;
        return request[1] == OP_GETK ? BINARY_HEADER + klen : BINARY_MISS_SIZE;
    }
    Py_ssize_t body = 4 + (keyed(request) ? klen : 0) + PyBytes_GET_SIZE(item) - value_at(item);
    return (uint64_t)body > 0xFFFFFFFFu ? -1 : BINARY_HEADER + body;
}

static void
binary_answer(unsigned char *w, const unsigned char *request, const unsigned char *key,
              Py_ssize_t klen, PyObject *item)
{
    if (item == Py_None && request[1] == OP_GET) {
        memcpy(w, BINARY_MISS, BINARY_MISS_SIZE);
        memcpy(w + OPAQUE_AT, request + OPAQUE_AT, 4);
        return;
    }
    memset(w, 0, BINARY_HEADER);
    w[0] = 0x81;
    w[1] = request[1];
    memcpy(w + OPAQUE_AT, request + OPAQUE_AT, 4);
    if (item == Py_None) {
        /* GETK: the key, status KEY_ENOENT */
        put_be(w + 2, (uint64_t)klen, 2);
        w[7] = 0x01;
        put_be(w + 8, (uint64_t)klen, 4);
        memcpy(w + BINARY_HEADER, key, klen);
        return;
    }
    const unsigned char *it = (const unsigned char *)PyBytes_AS_STRING(item);
    Py_ssize_t at = value_at(item), vlen = PyBytes_GET_SIZE(item) - at;
    Py_ssize_t shown = keyed(request) ? klen : 0;
    /* the suffix is " <flags> <bytes>\r\n": flags in decimal */
    uint64_t flags = 0;
    for (Py_ssize_t i = ITEM_PREFIX_SIZE + 1; i < at && it[i] >= '0' && it[i] <= '9'; i++)
        flags = flags * 10 + (uint64_t)(it[i] - '0');
    uint64_t cas = 0;
    for (int i = 7; i >= 0; i--)
        cas = (cas << 8) | it[ITEM_CAS_AT + i];
    put_be(w + 2, (uint64_t)shown, 2);
    w[4] = 4;
    put_be(w + 8, (uint64_t)(4 + shown + vlen), 4);
    put_be(w + 16, cas, 8);
    put_be(w + BINARY_HEADER, flags, 4);
    memcpy(w + BINARY_HEADER + 4, key, shown);
    memcpy(w + BINARY_HEADER + 4 + shown, it + at, vlen);
}

/*
 * binary_get_run(data, pos, get, tap, op, budget) -> (pos, reply, hits, misses)
 *
 * The binary codec's run of GET, GETQ, GETK and GETKQ frames (run_gets,
 * binary_parse): a client's multi-get of quiet gets ends at its NOOP.
 */
static PyObject *
binary_get_run(PyObject *self, PyObject *args)
{
    return run_gets(args, "y*nOOOn:binary_get_run", binary_parse, binary_size, binary_answer);
}

/*
 * longest(keys) -> int
 *
 * The length of the longest of the bytes in the sequence `keys` (0 for
 * none): the multi-get's key length check, max(map(len, keys)) in Python,
 * without a call to len per key.
 */
static PyObject *
longest(PyObject *self, PyObject *sequence)
{
    PyObject *keys = PySequence_Fast(sequence, "longest: keys must be a sequence");
    if (keys == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys), most = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(keys, i);
        if (!PyBytes_Check(key)) {
            Py_DECREF(keys);
            PyErr_SetString(PyExc_TypeError, "longest: keys must be bytes");
            return NULL;
        }
        if (PyBytes_GET_SIZE(key) > most)
            most = PyBytes_GET_SIZE(key);
    }
    Py_DECREF(keys);
    return PyLong_FromSsize_t(most);
}

static PyMethodDef methods[] = {
    {"get_many", get_many, METH_VARARGS, "The multi-get lookup loop."},
    {"render_run", render_run, METH_VARARGS, "The multi-get VALUE blocks, up to a budget."},
    {"longest", longest, METH_O, "The length of the longest key of a multi-get."},
    {"get_run", get_run, METH_VARARGS, "The ASCII codec's run of one-key gets."},
    {"binary_get_run", binary_get_run, METH_VARARGS, "The binary codec's run of one-key gets."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "memcachier._speedups",
    "The request hot path's loops in C (pure-Python twins in the store and codec).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntMacro(m, ITEM_BITS_AT) < 0
        || PyModule_AddIntMacro(m, ITEM_SUFFIX_LENGTH_AT) < 0
        || PyModule_AddIntMacro(m, ITEM_PREFIX_SIZE) < 0
        || PyModule_AddIntMacro(m, ITEM_CAS_AT) < 0
        || PyModule_AddIntMacro(m, KEY_MAX_LENGTH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
