/*
 * sealdump.backup._multiset: the content hash of a table without a key, in bulk.
 *
 * A keyless table's rows come back in any order (parallel restores change the physical
 * order), so its content hash is order-independent: the sum, modulo 2^256, of every row
 * literal's SHA-256 read as a big-endian number (docs/format.md, section 6). In Python that
 * costs about 1.7 us of interpreter time per row with the GIL held (slicing, hashlib object,
 * int conversion): a second of a 600,000-row table's backup. Here a whole batch of rows is
 * hashed with OpenSSL (the CPU's SHA instructions where it has them) without the GIL, so
 * the other readers and the compressors keep running. The digest is fetched once per call
 * and one context reused for every row: OpenSSL 3's one-shot SHA256() fetches the
 * algorithm (under a lock shared by every thread) and allocates a context for each row.
 *
 * add(total, body, ends) -> new total
 *   total  32 bytes, the running sum (big-endian)
 *   body   row literals joined by one separator byte: row, sep, row, sep, ..., row
 *   ends   where each row ends in body, packed little-endian uint64 ("<Q" in struct);
 *          the next row starts one byte after the previous end
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>

/* acc[0] is the least significant 64 bits. */
static void load_be(const unsigned char *in, uint64_t acc[4]) {
    for (int limb = 0; limb < 4; limb++) {
        const unsigned char *p = in + 8 * (3 - limb);
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v = v << 8 | p[i];
        acc[limb] = v;
    }
}

static void store_be(const uint64_t acc[4], unsigned char *out) {
    for (int limb = 0; limb < 4; limb++) {
        unsigned char *p = out + 8 * (3 - limb);
        uint64_t v = acc[limb];
        for (int i = 7; i >= 0; i--) {
            p[i] = (unsigned char)(v & 0xFF);
            v >>= 8;
        }
    }
}

/* acc += the 256-bit big-endian number md, modulo 2^256. */
static void add_be(uint64_t acc[4], const unsigned char *md) {
    uint64_t term[4];
    load_be(md, term);
    unsigned carry = 0;
    for (int limb = 0; limb < 4; limb++) {
        uint64_t sum = acc[limb] + term[limb];
        unsigned next = sum < acc[limb];
        uint64_t with = sum + carry;
        next |= with < sum;
        acc[limb] = with;
        carry = next;
    }
}

static uint64_t load_le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

PyDoc_STRVAR(add_doc, "add(total, body, ends) -> total + sum of SHA-256 of each row, mod 2^256");

static PyObject *add(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer total, body, ends;
    if (!PyArg_ParseTuple(args, "y*y*y*", &total, &body, &ends))
        return NULL;
    PyObject *result = NULL;
    if (total.len != 32 || ends.len % 8) {
        PyErr_SetString(PyExc_ValueError, "total must be 32 bytes and ends a multiple of 8");
        goto done;
    }
    uint64_t acc[4];
    load_be(total.buf, acc);
    const unsigned char *data = body.buf, *packed = ends.buf;
    size_t rows = (size_t)ends.len / 8, size = (size_t)body.len;
    int bad = 0; /* 1: a row end outside the body; 2: OpenSSL failed */
    Py_BEGIN_ALLOW_THREADS
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    EVP_MD *sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
    const EVP_MD *sha256 = EVP_sha256();
#endif
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (sha256 == NULL || ctx == NULL)
        bad = 2;
    size_t start = 0;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    for (size_t i = 0; i < rows && !bad; i++) {
        uint64_t end = load_le(packed + 8 * i);
        if (end < start || end > size) {
            bad = 1;
            break;
        }
        if (EVP_DigestInit_ex(ctx, sha256, NULL) != 1
            || EVP_DigestUpdate(ctx, data + start, (size_t)(end - start)) != 1
            || EVP_DigestFinal_ex(ctx, md, &md_len) != 1 || md_len != 32) {
            bad = 2;
            break;
        }
        add_be(acc, md);
        start = (size_t)end + 1;
    }
    EVP_MD_CTX_free(ctx);
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    EVP_MD_free(sha256);
#endif
    Py_END_ALLOW_THREADS
    if (bad == 1) {
        PyErr_SetString(PyExc_ValueError, "a row end lies outside the body");
        goto done;
    }
    if (bad == 2) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not compute a SHA-256 digest");
        goto done;
    }
    unsigned char out[32];
    store_be(acc, out);
    result = PyBytes_FromStringAndSize((const char *)out, 32);
done:
    PyBuffer_Release(&total);
    PyBuffer_Release(&body);
    PyBuffer_Release(&ends);
    return result;
}

static PyMethodDef methods[] = {
    {"add", add, METH_VARARGS, add_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sealdump.backup._multiset",
    "The order-independent content hash of keyless tables, in bulk (see _multiset.c).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__multiset(void) { return PyModule_Create(&module); }
