/*
 * The multi-get's per-key loops in C: the only place where the request hot
 * path costs Python bytecode once per key rather than once per request.
 *
 * Each function has a pure-Python twin (memcachier.stores.memory's
 * getMany, memcachier.protocols.text's renderValues and longestKey) that
 * defines its behaviour; the tests run the codec and store suites against both
 * (docs/performance.md, "The multi-get in C").  Items are the packed bytes
 * of memcachier.commands (ITEM_FIELDS states their layout): the offsets
 * below are the ones this file reads, exported as module constants so that
 * tests/unit/test_item_layout.py checks them against the Python layout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* memcachier.commands.ITEM_BITS_AT: the item's bits byte */
#define ITEM_BITS_AT 16
/* memcachier.commands.ITEM_SUFFIX_LENGTH_AT: the length of the suffix */
#define ITEM_SUFFIX_LENGTH_AT 17
/* memcachier.commands.ITEM_PREFIX_SIZE: where the ASCII reply suffix starts */
#define ITEM_PREFIX_SIZE 18

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
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "memcachier._speedups",
    "The multi-get's per-key loops in C (pure-Python twins in the store and codec).",
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
        || PyModule_AddIntMacro(m, ITEM_PREFIX_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
