/* natsync.edge._tlsio: the edge's TLS transport's per-request reads and writes, in C.
 *
 * Why C (issue 27, keep-alive requests at nginx's rate): the transport (natsync.edge.transport)
 * reads and writes through CPython's C TLS object (_ssl._SSLSocket), whose read costs per call a
 * weak-reference lookup of the socket, a timeout check, the GIL released and taken again, and,
 * with OpenSSL's read_ahead off (CPython's default), two recv(2) per TLS record: its 5-byte
 * header, then its body (strace: 4.1 reads per keep-alive request through the edge, as nginx).
 * Here:
 *
 *   set_read_ahead(raw)  read_ahead on: one recv takes what the kernel holds (up to OpenSSL's
 *                        buffer), so a request or a response in one record is one recv;
 *   read(raw, buffer)    SSL_read_ex into the buffer: n > 0 bytes; 0 at the peer's close_notify
 *                        or a TCP close or reset without it (where _ssl raises SSLZeroReturnError
 *                        or SSLEOFError, which the transport takes as EOF); -1 want read; -2 want
 *                        write; ssl.SSLError (OpenSSL's reason) otherwise;
 *   write(raw, data)     SSL_write_ex of all of data: 1 written; -1 / -2 want read / write (the
 *                        same bytes must come again: CPython sets ACCEPT_MOVING_WRITE_BUFFER);
 *                        ssl.SSLEOFError at the connection's end, ssl.SSLError otherwise;
 *   pending(raw)         SSL_has_pending: decrypted bytes or unprocessed records are held by
 *                        OpenSSL (with read_ahead, SSL_pending's "of the current record" is not
 *                        enough: a second record read with the first would wait for an event
 *                        the kernel will never give).
 *
 * The GIL stays held (the socket is non-blocking: nothing waits). The SSL * is read from
 * CPython's _SSLSocket object (_ssl_layout.h, shared with _tickets.c); configure() checks that
 * layout on a real object (the SSL's SSL_CTX must be the context's) and refuses otherwise, and every
 * call checks the object's type. The Python reference is the transport's own path through
 * _ssl (raw.read / raw.write / raw.pending), used when this module is not built or refused:
 * tests/edge/test_tlsio.py runs the same exchanges through both, and fuzz/fuzz_edge_tlsio.py
 * feeds both arbitrary bytes as the peer's records.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "_ssl_layout.h"

static PyTypeObject *socket_type = NULL;
static PyObject *ssl_error = NULL, *eof_error = NULL;

static SSL *ssl_of(PyObject *raw) {
    if (socket_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "natsync.edge._tlsio is not configured");
        return NULL;
    }
    if (Py_TYPE(raw) != socket_type) {
        PyErr_SetString(PyExc_TypeError, "expected an _ssl._SSLSocket");
        return NULL;
    }
    SSL *ssl = ((SocketHead *)raw)->ssl;
    if (ssl == NULL) PyErr_SetString(PyExc_ValueError, "the TLS connection is closed");
    return ssl;
}

/* An empty OpenSSL error queue before a call, as SSL_get_error needs (ERR_clear_error walks all
 * of the queue's slots: asked first, it is called only when something is there). */
static inline void clear_errors(void) {
    if (ERR_peek_error() != 0) ERR_clear_error();
}

/* The end of the connection (close_notify, or TCP closed or reset without it): 0 for a read
 * (the transport's EOF path), SSLEOFError for a write (its error path). CPython's _ssl in
 * 3.11-3.13 says SSLZeroReturnError or SSLEOFError for these, also for ECONNRESET: it passes
 * SSL_read_ex's 0 as the "ret" its SSL_ERROR_SYSCALL branch takes for an EOF. */
static PyObject *ended(int writing) {
    ERR_clear_error();
    if (!writing) return PyLong_FromLong(0);
    PyErr_SetString(eof_error, "EOF occurred in violation of protocol");
    return NULL;
}

/* The failure of an SSL call as the transport sees it: a code, or an exception set (NULL). */
static PyObject *failure(SSL *ssl, int ret, int writing) {
    int err = SSL_get_error(ssl, ret);
    switch (err) {
    case SSL_ERROR_WANT_READ:
        return PyLong_FromLong(-1);
    case SSL_ERROR_WANT_WRITE:
        return PyLong_FromLong(-2);
    case SSL_ERROR_ZERO_RETURN:
        return ended(writing);
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_last_error() == 0) return ended(writing);
        break;
    case SSL_ERROR_SSL:
        if (ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            return ended(writing);
        break;
    default:
        break;
    }
    unsigned long code = ERR_get_error();
    char reason[256];
    if (code != 0)
        ERR_error_string_n(code, reason, sizeof(reason));
    else
        snprintf(reason, sizeof(reason), "TLS error %d", err);
    ERR_clear_error();
    PyErr_SetString(ssl_error, reason);
    return NULL;
}

static PyObject *tls_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "read(raw, buffer)");
        return NULL;
    }
    SSL *ssl = ssl_of(args[0]);
    if (ssl == NULL) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0) return NULL;
    size_t count = 0;
    clear_errors();
    int ret = SSL_read_ex(ssl, view.buf, (size_t)view.len, &count);
    PyBuffer_Release(&view);
    if (ret > 0) return PyLong_FromSize_t(count);
    return failure(ssl, ret, 0);
}

static PyObject *tls_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "write(raw, data)");
        return NULL;
    }
    SSL *ssl = ssl_of(args[0]);
    if (ssl == NULL) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) return NULL;
    size_t written = 0;
    clear_errors();
    int ret = view.len ? SSL_write_ex(ssl, view.buf, (size_t)view.len, &written) : 1;
    PyBuffer_Release(&view);
    if (ret > 0) return PyLong_FromLong(1);
    return failure(ssl, ret, 1);
}

static PyObject *tls_pending(PyObject *self, PyObject *raw) {
    SSL *ssl = ssl_of(raw);
    if (ssl == NULL) return NULL;
    return PyBool_FromLong(SSL_has_pending(ssl));
}

static PyObject *set_read_ahead(PyObject *self, PyObject *raw) {
    SSL *ssl = ssl_of(raw);
    if (ssl == NULL) return NULL;
    SSL_set_read_ahead(ssl, 1);
    Py_RETURN_NONE;
}

/* configure(sslsocket_type, probe, context, ssl_error, eof_error): True when probe (an
 * _SSLSocket of that type made by context) has its SSL where this module looks and that SSL
 * belongs to the context's SSL_CTX; then the module is ready. False (nothing set) otherwise. */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *type, *probe, *context, *error, *eof;
    if (!PyArg_ParseTuple(args, "O!OOOO", &PyType_Type, &type, &probe, &context, &error, &eof))
        return NULL;
    if (Py_TYPE(probe) != (PyTypeObject *)type) Py_RETURN_FALSE;
    if (!layout_holds(probe, ((ContextHead *)context)->ctx)) Py_RETURN_FALSE;
    Py_INCREF(type);
    Py_XSETREF(socket_type, (PyTypeObject *)type);
    Py_INCREF(error);
    Py_XSETREF(ssl_error, error);
    Py_INCREF(eof);
    Py_XSETREF(eof_error, eof);
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Check CPython's _ssl layout on a real object."},
    {"read", (PyCFunction)(void (*)(void))tls_read, METH_FASTCALL,
     "SSL_read_ex into the buffer: bytes read, 0 EOF, -1 want read, -2 want write."},
    {"write", (PyCFunction)(void (*)(void))tls_write, METH_FASTCALL,
     "SSL_write_ex of all the data: 1 written, -1 want read, -2 want write."},
    {"pending", tls_pending, METH_O, "Whether OpenSSL holds bytes or records not read yet."},
    {"set_read_ahead", set_read_ahead, METH_O, "OpenSSL reads what the kernel holds at once."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tlsio", "The edge TLS transport's reads and writes in C.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tlsio(void) { return PyModule_Create(&module); }
