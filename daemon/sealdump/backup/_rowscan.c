/*
 * sealdump.backup._rowscan: MySQL text-protocol row packets -> SQL literal tuples, in bulk.
 *
 * Why C: a backup's cost is per row and per value. Reading rows through PyMySQL costs a
 * Python object per packet and per value, and asking the server to format each value as a
 * literal (QUOTE/HEX/CONCAT) doubles the database server's CPU. This module lets the
 * server send plain column values and turns whole buffers of row packets into the exact
 * bytes the server-side formatting produced (backup/values.py, docs/format.md section 6),
 * without the GIL, so several tables' readers use several cores.
 *
 * Per column, a kind byte says how a value becomes a literal:
 *   'r'  the bytes as they are (numbers, and values the server already formatted);
 *   'q'  QUOTE(): enclosed in single quotes; backslash, quote, NUL and Ctrl-Z escaped as
 *        \\ \' \0 \Z (exactly MariaDB's and MySQL's QUOTE(), newlines stay as they are);
 *   'x'  the column's prefix (b"" or b"_latin1 "), then X'<upper-case hex>'.
 * SQL NULL (length byte 0xFB) is written NULL whatever the kind.
 *
 * scan() stops at a packet it must not interpret (end of result, error, a row of 16 MiB or
 * more split over several packets, a wrong sequence number) and says where; the caller
 * (backup/rowscan.py) handles those with PyMySQL's own code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum state {
    NEED_MORE = 0, /* the packet at pos is incomplete: read more */
    LIMIT = 1,     /* max_rows or max_bytes reached */
    END = 2,       /* the packet at pos is the result's EOF packet */
    ERROR = 3,     /* the packet at pos is an error packet */
    LONG = 4,      /* the packet at pos is part of a row of 16 MiB or more */
    BAD_SEQ = 5,   /* the packet at pos has an unexpected sequence number */
    MALFORMED = 6, /* the row packet at pos does not hold the expected values */
};

#define MAX_PACKET 0xFFFFFF

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} out_t;

static int reserve(out_t *out, size_t more) {
    if (out->len + more <= out->cap)
        return 0;
    size_t cap = out->cap ? out->cap : 1 << 16;
    while (cap < out->len + more)
        cap *= 2;
    char *data = realloc(out->data, cap);
    if (data == NULL)
        return -1;
    out->data = data;
    out->cap = cap;
    return 0;
}

typedef struct {
    const char *kinds;
    Py_ssize_t ncols;
    const char **prefix;
    const Py_ssize_t *prefix_len;
    Py_ssize_t max_prefix;
} spec_t;

static const char HEX[] = "0123456789ABCDEF";

/* A length-encoded integer at p (at most end); -1 when it overruns, -2 for NULL. */
static int lenenc(const uint8_t **p, const uint8_t *end, uint64_t *value) {
    if (*p >= end)
        return -1;
    uint8_t first = **p;
    size_t width;
    if (first < 0xFB) {
        *value = first;
        *p += 1;
        return 0;
    }
    if (first == 0xFB) {
        *p += 1;
        return -2;
    }
    if (first == 0xFC)
        width = 2;
    else if (first == 0xFD)
        width = 3;
    else if (first == 0xFE)
        width = 8;
    else
        return -1;
    if ((size_t)(end - *p) < width + 1)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++)
        v |= (uint64_t)(*p)[1 + i] << (8 * i);
    *value = v;
    *p += width + 1;
    return 0;
}

/*
 * Write the literal tuple of one row payload into out; key value spans (offsets into out)
 * into spans when given. Returns 0, or -1 when the payload is malformed, -2 on no memory.
 */
static int format_row(const spec_t *spec, const uint8_t *p, size_t len, out_t *out,
                      const Py_ssize_t *keys, Py_ssize_t nkeys, size_t *spans) {
    /* Worst case: every byte doubles (hex or escapes), plus prefix, quotes and commas. */
    if (reserve(out, 2 * len + (size_t)spec->ncols * (size_t)(spec->max_prefix + 8) + 4))
        return -2;
    const uint8_t *end = p + len;
    char *o = out->data + out->len;
    char *const start = o;
    *o++ = '(';
    for (Py_ssize_t c = 0; c < spec->ncols; c++) {
        if (c)
            *o++ = ',';
        size_t value_start = (size_t)(o - out->data);
        uint64_t n;
        int got = lenenc(&p, end, &n);
        if (got == -1 || (got == 0 && n > (uint64_t)(end - p)))
            return -1;
        if (got == -2) {
            memcpy(o, "NULL", 4);
            o += 4;
        } else {
            const uint8_t *v = p;
            p += n;
            switch (spec->kinds[c]) {
            case 'r':
                memcpy(o, v, n);
                o += n;
                break;
            case 'q':
                *o++ = '\'';
                for (uint64_t i = 0; i < n; i++) {
                    uint8_t b = v[i];
                    if (b == '\\' || b == '\'') {
                        *o++ = '\\';
                        *o++ = (char)b;
                    } else if (b == 0) {
                        *o++ = '\\';
                        *o++ = '0';
                    } else if (b == 0x1A) {
                        *o++ = '\\';
                        *o++ = 'Z';
                    } else {
                        *o++ = (char)b;
                    }
                }
                *o++ = '\'';
                break;
            case 'x':
                memcpy(o, spec->prefix[c], (size_t)spec->prefix_len[c]);
                o += spec->prefix_len[c];
                *o++ = 'X';
                *o++ = '\'';
                for (uint64_t i = 0; i < n; i++) {
                    *o++ = HEX[v[i] >> 4];
                    *o++ = HEX[v[i] & 15];
                }
                *o++ = '\'';
                break;
            default:
                return -1;
            }
        }
        if (spans) {
            for (Py_ssize_t k = 0; k < nkeys; k++) {
                if (keys[k] == c) {
                    spans[2 * k] = value_start;
                    spans[2 * k + 1] = (size_t)(o - out->data);
                }
            }
        }
    }
    if (p != end)
        return -1; /* more values than columns */
    *o++ = ')';
    out->len += (size_t)(o - start);
    return 0;
}

typedef struct {
    PyObject *prefix_list;
    const char **prefix;
    Py_ssize_t *prefix_len;
    Py_ssize_t *keys;
    Py_ssize_t nkeys;
} owned_t;

static void release(owned_t *owned) {
    free(owned->prefix);
    free(owned->prefix_len);
    free(owned->keys);
}

/* Fill spec and owned from the kinds, prefixes and keys arguments (with the GIL). */
static int parse_spec(Py_buffer *kinds, PyObject *prefixes, PyObject *keys, spec_t *spec,
                      owned_t *owned) {
    memset(owned, 0, sizeof(*owned));
    spec->kinds = kinds->buf;
    spec->ncols = kinds->len;
    spec->max_prefix = 0;
    if (!PyTuple_Check(prefixes) || PyTuple_GET_SIZE(prefixes) != spec->ncols) {
        PyErr_SetString(PyExc_ValueError, "prefixes: a tuple of bytes, one per column");
        return -1;
    }
    if (!PyTuple_Check(keys)) {
        PyErr_SetString(PyExc_TypeError, "keys: a tuple of column indexes");
        return -1;
    }
    owned->prefix = calloc((size_t)spec->ncols + 1, sizeof(char *));
    owned->prefix_len = calloc((size_t)spec->ncols + 1, sizeof(Py_ssize_t));
    owned->nkeys = PyTuple_GET_SIZE(keys);
    owned->keys = calloc((size_t)owned->nkeys + 1, sizeof(Py_ssize_t));
    if (!owned->prefix || !owned->prefix_len || !owned->keys) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t c = 0; c < spec->ncols; c++) {
        char kind = spec->kinds[c];
        if (kind != 'r' && kind != 'q' && kind != 'x') {
            PyErr_Format(PyExc_ValueError, "unknown column kind %c", kind);
            return -1;
        }
        PyObject *prefix = PyTuple_GET_ITEM(prefixes, c);
        if (!PyBytes_Check(prefix)) {
            PyErr_SetString(PyExc_TypeError, "prefixes: a tuple of bytes");
            return -1;
        }
        owned->prefix[c] = PyBytes_AS_STRING(prefix);
        owned->prefix_len[c] = PyBytes_GET_SIZE(prefix);
        if (owned->prefix_len[c] > spec->max_prefix)
            spec->max_prefix = owned->prefix_len[c];
    }
    for (Py_ssize_t k = 0; k < owned->nkeys; k++) {
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(keys, k));
        if (index == -1 && PyErr_Occurred())
            return -1;
        if (index < 0 || index >= spec->ncols) {
            PyErr_SetString(PyExc_ValueError, "keys: a column index out of range");
            return -1;
        }
        owned->keys[k] = index;
    }
    spec->prefix = owned->prefix;
    spec->prefix_len = owned->prefix_len;
    return 0;
}

/* A tuple of the key literals whose spans in data are given, or None when there are none. */
static PyObject *key_tuple(const char *data, const size_t *spans, Py_ssize_t nkeys) {
    if (nkeys == 0)
        Py_RETURN_NONE;
    PyObject *tuple = PyTuple_New(nkeys);
    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *value = PyBytes_FromStringAndSize(data + spans[2 * k],
                                                    (Py_ssize_t)(spans[2 * k + 1] - spans[2 * k]));
        if (value == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, k, value);
    }
    return tuple;
}

PyDoc_STRVAR(scan_doc,
"scan(buffer, pos, seq, kinds, prefixes, keys, max_rows, max_bytes, with_digest)\n"
"--\n\n"
"Format the complete row packets of buffer from pos on, until a limit or a packet\n"
"that is not a plain row. Returns (state, pos, seq, rows, body, digest, first_key,\n"
"last_key, need): body is the rows' literal tuples joined by ',', digest (with_digest\n"
"1) the same tuples each followed by a newline, or (with_digest 2) each row's end offset\n"
"in body as a little-endian uint64, or None (0); first_key/last_key the\n"
"key literals of the first and last row (None without keys or rows), need the size a\n"
"packet that is still incomplete will take (0 when unknown).");

static PyObject *scan(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buffer, kinds;
    Py_ssize_t pos, max_rows, max_bytes;
    int seq, with_digest;
    PyObject *prefixes, *keys;
    if (!PyArg_ParseTuple(args, "y*niy*OOnni", &buffer, &pos, &seq, &kinds, &prefixes, &keys,
                          &max_rows, &max_bytes, &with_digest))
        return NULL;
    PyObject *result = NULL;
    spec_t spec;
    owned_t owned;
    out_t body = {0}, digest = {0};
    size_t *first = NULL, *last = NULL, *current = NULL;
    if (parse_spec(&kinds, prefixes, keys, &spec, &owned) < 0)
        goto done;
    if (pos < 0 || pos > buffer.len) {
        PyErr_SetString(PyExc_ValueError, "pos outside the buffer");
        goto done;
    }
    first = calloc(2 * (size_t)owned.nkeys + 2, sizeof(size_t));
    last = calloc(2 * (size_t)owned.nkeys + 2, sizeof(size_t));
    current = calloc(2 * (size_t)owned.nkeys + 2, sizeof(size_t));
    if (!first || !last || !current) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *data = buffer.buf;
    size_t size = (size_t)buffer.len, at = (size_t)pos;
    Py_ssize_t rows = 0;
    size_t need = 0, row_start = 0;
    int state = NEED_MORE, failed = 0;

    Py_BEGIN_ALLOW_THREADS
    while (1) {
        if (rows >= max_rows || (rows && body.len >= (size_t)max_bytes)) {
            state = LIMIT;
            break;
        }
        if (size - at < 4) {
            state = NEED_MORE;
            break;
        }
        size_t len = data[at] | (size_t)data[at + 1] << 8 | (size_t)data[at + 2] << 16;
        if (data[at + 3] != (uint8_t)seq) {
            state = BAD_SEQ;
            break;
        }
        if (len == MAX_PACKET) {
            state = LONG;
            break;
        }
        if (size - at - 4 < len) {
            need = len + 4;
            state = NEED_MORE;
            break;
        }
        const uint8_t *payload = data + at + 4;
        if (len > 0 && payload[0] == 0xFF) {
            state = ERROR;
            break;
        }
        if (len > 0 && len < 9 && payload[0] == 0xFE) {
            state = END;
            break;
        }
        if (rows && reserve(&body, 1)) {
            failed = -2;
            break;
        }
        if (rows)
            body.data[body.len++] = ',';
        row_start = body.len;
        int got = format_row(&spec, payload, len, &body, owned.keys, owned.nkeys, current);
        if (got) {
            body.len = row_start ? row_start - 1 : 0;
            if (got == -2)
                failed = -2;
            else
                state = MALFORMED;
            break;
        }
        if (with_digest == 2) {
            uint64_t row_end = body.len;
            if (reserve(&digest, 8)) {
                failed = -2;
                break;
            }
            for (int i = 0; i < 8; i++)
                digest.data[digest.len++] = (char)(row_end >> (8 * i));
        } else if (with_digest) {
            size_t n = body.len - row_start;
            if (reserve(&digest, n + 1)) {
                failed = -2;
                break;
            }
            memcpy(digest.data + digest.len, body.data + row_start, n);
            digest.len += n;
            digest.data[digest.len++] = '\n';
        }
        size_t span_bytes = 2 * (size_t)owned.nkeys * sizeof(size_t);
        if (rows == 0)
            memcpy(first, current, span_bytes);
        memcpy(last, current, span_bytes);
        rows++;
        at += 4 + len;
        seq = (seq + 1) & 0xFF;
    }
    Py_END_ALLOW_THREADS

    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *first_key, *last_key;
    if (rows) {
        first_key = key_tuple(body.data, first, owned.nkeys);
        last_key = first_key ? key_tuple(body.data, last, owned.nkeys) : NULL;
    } else {
        first_key = Py_NewRef(Py_None);
        last_key = Py_NewRef(Py_None);
    }
    if (first_key && last_key) {
        result = Py_BuildValue(
            "inniy#NNNn", state, (Py_ssize_t)at, seq, rows, body.data ? body.data : "",
            (Py_ssize_t)body.len,
            with_digest ? PyBytes_FromStringAndSize(digest.data ? digest.data : "",
                                                    (Py_ssize_t)digest.len)
                        : Py_NewRef(Py_None),
            first_key, last_key, (Py_ssize_t)need);
    } else {
        Py_XDECREF(first_key);
        Py_XDECREF(last_key);
    }
done:
    free(first);
    free(last);
    free(current);
    free(body.data);
    free(digest.data);
    release(&owned);
    PyBuffer_Release(&buffer);
    PyBuffer_Release(&kinds);
    return result;
}

PyDoc_STRVAR(row_doc,
"row(payload, kinds, prefixes, keys)\n"
"--\n\n"
"The literal tuple of one row payload (a row of 16 MiB or more, reassembled by the\n"
"caller) and its key literals: (literal, key). ValueError when malformed.");

static PyObject *row(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer payload, kinds;
    PyObject *prefixes, *keys;
    if (!PyArg_ParseTuple(args, "y*y*OO", &payload, &kinds, &prefixes, &keys))
        return NULL;
    PyObject *result = NULL;
    spec_t spec;
    owned_t owned;
    out_t out = {0};
    size_t *spans = NULL;
    int got = 0;
    if (parse_spec(&kinds, prefixes, keys, &spec, &owned) < 0)
        goto done;
    spans = calloc(2 * (size_t)owned.nkeys + 2, sizeof(size_t));
    if (!spans) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    got = format_row(&spec, payload.buf, (size_t)payload.len, &out, owned.keys, owned.nkeys,
                     spans);
    Py_END_ALLOW_THREADS
    if (got == -2) {
        PyErr_NoMemory();
        goto done;
    }
    if (got) {
        PyErr_SetString(PyExc_ValueError, "a row packet does not hold the expected values");
        goto done;
    }
    PyObject *key = key_tuple(out.data, spans, owned.nkeys);
    if (key)
        result = Py_BuildValue("y#N", out.data, (Py_ssize_t)out.len, key);
done:
    free(spans);
    free(out.data);
    release(&owned);
    PyBuffer_Release(&payload);
    PyBuffer_Release(&kinds);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"row", row, METH_VARARGS, row_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sealdump.backup._rowscan",
    "MySQL text-protocol row packets to SQL literal tuples, in bulk (see _rowscan.c).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rowscan(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "NEED_MORE", NEED_MORE) || PyModule_AddIntConstant(m, "LIMIT", LIMIT)
        || PyModule_AddIntConstant(m, "END", END) || PyModule_AddIntConstant(m, "ERROR", ERROR)
        || PyModule_AddIntConstant(m, "LONG", LONG) || PyModule_AddIntConstant(m, "BAD_SEQ", BAD_SEQ)
        || PyModule_AddIntConstant(m, "MALFORMED", MALFORMED)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
