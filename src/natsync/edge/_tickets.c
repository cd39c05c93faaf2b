/* natsync.edge._tickets: TLS session-ticket keys shared by every edge worker, rotating; and
 * the C steps of a new connection (accept, handshake steps without exceptions: see below).
 *
 * OpenSSL gives each SSL_CTX a random ticket key of its own, so a phone's ticket issued by one
 * edge worker (SO_REUSEPORT picks the worker per connection) is refused by the others, and the
 * phone pays a full handshake. Here the keys are derived from one secret the workers share
 * (made before they fork, never written anywhere) and the time: the key of period N is
 * HMAC-SHA256(secret, "natsync ticket" || N || label) for its name, AES-256 and HMAC parts.
 * A ticket is issued under the current period's key and accepted under the current and the
 * previous one, each resumption getting a new ticket, so a key lives two periods and every
 * worker agrees on it without talking to the others (RFC 5077 section 4 recommends such rotation; RFC 8446
 * section 4.6.1 is the TLS 1.3 ticket).
 *
 * Python's ssl module has no ticket-key API, hence this module: install() sets the callback
 * (SSL_CTX_set_tlsext_ticket_key_evp_cb, OpenSSL 3) on the SSL_CTX inside an ssl.SSLContext.
 * It reads that pointer from CPython's context object (the first field after the object
 * header, as in CPython 3.11's Modules/_ssl.c) and refuses unless the SSL_CTX it found reports
 * the same options and verify mode as the Python object: a layout it does not know is refused,
 * never used. The module must use the libssl Python's _ssl uses (both link libssl.so.3).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include "_ssl_layout.h"
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define SECRET_MAX 64
#define NAME_LEN 16
#define KEY_LEN 32

typedef struct {
    long long period_no; /* -1: empty slot */
    unsigned char name[NAME_LEN];
    unsigned char aes[KEY_LEN];
    unsigned char mac[KEY_LEN];
} TicketKey;

static unsigned char secret[SECRET_MAX];
static size_t secret_len = 0;
static long long period = 3600;
/* >= 0: the period number to use instead of the clock's (tests of rotation). */
static long long fixed_period_no = -1;
/* Slot n & 1 holds period n's key; period_no -1 marks an empty slot (set by set_secret). */
static TicketKey cache[2];
static unsigned long long issued = 0, resumed = 0, renewed = 0, refused = 0;
/* AES-256-CBC fetched once (install): EVP_aes_256_cbc() is a legacy handle that OpenSSL 3
 * looks up in its provider store again on every EVP_CipherInit_ex (name compares, locks). */
static EVP_CIPHER *aes_cbc = NULL;

static long long
current_period(void)
{
    if (fixed_period_no >= 0)
        return fixed_period_no;
    return (long long)(time(NULL) / period);
}

static int
derive_part(long long n, char label, unsigned char *out, size_t len)
{
    unsigned char msg[14 + 8 + 1];
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    memcpy(msg, "natsync ticket", 14);
    for (int i = 0; i < 8; i++)
        msg[14 + i] = (unsigned char)((unsigned long long)n >> (56 - 8 * i));
    msg[22] = (unsigned char)label;
    if (HMAC(EVP_sha256(), secret, (int)secret_len, msg, sizeof msg, digest, &digest_len) ==
            NULL ||
        digest_len < len)
        return 0;
    memcpy(out, digest, len);
    return 1;
}

/* The key of period n (from the two-slot cache, derived when missing); NULL on failure. */
static TicketKey *
key_for(long long n)
{
    TicketKey *slot = &cache[n & 1];
    if (slot->period_no == n)
        return slot;
    TicketKey key;
    key.period_no = n;
    if (!derive_part(n, 'n', key.name, NAME_LEN) || !derive_part(n, 'a', key.aes, KEY_LEN) ||
        !derive_part(n, 'h', key.mac, KEY_LEN))
        return NULL;
    *slot = key;
    return slot;
}

static int
use_key(TicketKey *key, unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key->mac, KEY_LEN);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "sha256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (!EVP_CipherInit_ex(cctx, aes_cbc, NULL, key->aes, iv, enc))
        return 0;
    return EVP_MAC_CTX_set_params(hctx, params);
}

static int
ticket_key_cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
              EVP_MAC_CTX *hctx, int enc)
{
    long long now = current_period();
    if (enc) {
        TicketKey *key = key_for(now);
        if (key == NULL || aes_cbc == NULL || RAND_bytes(iv, EVP_CIPHER_get_iv_length(aes_cbc)) <= 0)
            return -1;
        memcpy(key_name, key->name, NAME_LEN);
        if (!use_key(key, iv, cctx, hctx, 1))
            return -1;
        issued++;
        return 1;
    }
    for (long long n = now; n >= now - 1 && n >= 0; n--) {
        TicketKey *key = key_for(n);
        if (key == NULL)
            return -1;
        if (memcmp(key_name, key->name, NAME_LEN) == 0) {
            if (aes_cbc == NULL || !use_key(key, iv, cctx, hctx, 0))
                return -1;
            if (n == now)
                resumed++;
            else
                renewed++; /* the previous period's key: the new ticket has the current one */
            /* A TLS 1.2 ticket may be offered again (only TLS 1.3 ones are single-use): one
             * under the current key is kept (1: no new ticket; nginx and HAProxy send none
             * after a TLS 1.2 resumption either), one under the previous key is renewed. */
            if (n == now && SSL_version(s) < TLS1_3_VERSION)
                return 1;
            /* 2: good, and a new ticket goes with the resumed session. TLS 1.3 clients use a
             * ticket once (RFC 8446 appendix C.4): answering 1 sends none after a resumption,
             * so every other reconnect would be a full handshake (measured with wrk: half of
             * them; OpenSSL's own key path sends one, and nginx resumes them all). */
            return 2;
        }
    }
    refused++; /* unknown or expired key: a full handshake */
    return 0;
}

/* The SSL_CTX of an ssl.SSLContext (ContextHead, _ssl_layout.h), checked against what the
 * object says of itself (its options and verify mode). */
static SSL_CTX *
ssl_ctx_of(PyObject *context)
{
    PyObject *ssl_module = PyImport_ImportModule("_ssl");
    if (ssl_module == NULL)
        return NULL;
    PyObject *base = PyObject_GetAttrString(ssl_module, "_SSLContext");
    Py_DECREF(ssl_module);
    if (base == NULL)
        return NULL;
    int ok = PyObject_IsInstance(context, base);
    Py_DECREF(base);
    if (ok <= 0) {
        if (ok == 0)
            PyErr_SetString(PyExc_TypeError, "install() needs an ssl.SSLContext");
        return NULL;
    }
    SSL_CTX *ctx = ((ContextHead *)context)->ctx;
    PyObject *options = PyObject_GetAttrString(context, "options");
    PyObject *verify = PyObject_GetAttrString(context, "verify_mode");
    long long want_options = options ? PyLong_AsLongLong(options) : -1;
    long want_verify = verify ? PyLong_AsLong(verify) : -1;
    Py_XDECREF(options);
    Py_XDECREF(verify);
    if (PyErr_Occurred())
        return NULL;
    int mode = ctx ? SSL_CTX_get_verify_mode(ctx) : -1;
    long verify_as_python = mode == SSL_VERIFY_NONE ? 0
                            : (mode & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) ? 2
                                                                       : 1;
    if (ctx == NULL || (long long)SSL_CTX_get_options(ctx) != want_options ||
        verify_as_python != want_verify) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this Python's ssl.SSLContext layout is not the one natsync knows");
        return NULL;
    }
    return ctx;
}

/* 1 when set_secret() was called; else 0 with RuntimeError set. */
static int
have_secret(void)
{
    if (secret_len > 0)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "set_secret() first");
    return 0;
}

static PyObject *
install(PyObject *self, PyObject *args)
{
    PyObject *context;
    if (!PyArg_ParseTuple(args, "O", &context))
        return NULL;
    if (!have_secret())
        return NULL;
    SSL_CTX *ctx = ssl_ctx_of(context);
    if (ctx == NULL)
        return NULL;
    if (aes_cbc == NULL && (aes_cbc = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL)) == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL has no AES-256-CBC for the tickets");
        return NULL;
    }
    if (!SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL refused the ticket key callback");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
set_secret(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    long long seconds;
    if (!PyArg_ParseTuple(args, "y*L", &buf, &seconds))
        return NULL;
    if (buf.len < 16 || buf.len > SECRET_MAX || seconds < 1) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "a secret of 16..64 bytes and a period >= 1 s");
        return NULL;
    }
    memcpy(secret, buf.buf, (size_t)buf.len);
    secret_len = (size_t)buf.len;
    period = seconds;
    cache[0].period_no = cache[1].period_no = -1;
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

static PyObject *
set_period_no(PyObject *self, PyObject *args)
{
    long long n;
    if (!PyArg_ParseTuple(args, "L", &n))
        return NULL;
    fixed_period_no = n;
    Py_RETURN_NONE;
}

static PyObject *
derive(PyObject *self, PyObject *args)
{
    long long n;
    if (!PyArg_ParseTuple(args, "L", &n))
        return NULL;
    if (!have_secret())
        return NULL;
    TicketKey *key = key_for(n);
    if (key == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not derive the key");
        return NULL;
    }
    return Py_BuildValue("(y#y#y#)", key->name, (Py_ssize_t)NAME_LEN, key->aes,
                         (Py_ssize_t)KEY_LEN, key->mac, (Py_ssize_t)KEY_LEN);
}

static PyObject *
counters(PyObject *self, PyObject *noargs)
{
    return Py_BuildValue("{s:K,s:K,s:K,s:K}", "issued", issued, "resumed", resumed, "renewed",
                         renewed, "refused", refused);
}

/* --- A new connection's accept and handshake steps, without Python exceptions (issue 27).
 *
 * CPython's _SSLSocket.do_handshake() answers "not yet" by raising SSLWantReadError: building
 * that exception (message, library and reason looked up) cost 4.6 us a step, one or two steps
 * per new phone. handshake_step() runs SSL_do_handshake on the same SSL object and returns
 * what to wait for; a failure returns STEP_FAILED with OpenSSL's error queue left as it is,
 * and the caller runs do_handshake() again to get CPython's exception (the Python reference,
 * natsync.edge.transport._Handshake, is that path alone; fuzz/fuzz_handshake_steps.py and
 * tests/edge/test_transport.py compare the two). */

#define STEP_DONE 0
#define STEP_READ 1
#define STEP_WRITE 2
#define STEP_FAILED 3

/* _ssl._SSLSocket, once an object of it was checked (SocketHead, _ssl_layout.h: its SSL
 * belongs to its context). */
static PyTypeObject *sslsocket_type = NULL;

static SSL *
ssl_of(PyObject *sslobj)
{
    if (sslsocket_type != NULL && Py_TYPE(sslobj) == sslsocket_type)
        return ((SocketHead *)sslobj)->ssl;
    if (strcmp(Py_TYPE(sslobj)->tp_name, "_ssl._SSLSocket") != 0) {
        PyErr_SetString(PyExc_TypeError, "handshake_step() needs an _ssl._SSLSocket");
        return NULL;
    }
    PyObject *context = PyObject_GetAttrString(sslobj, "context");
    if (context == NULL)
        return NULL;
    SSL_CTX *ctx = ssl_ctx_of(context);
    Py_DECREF(context);
    if (ctx == NULL)
        return NULL;
    if (!layout_holds(sslobj, ctx)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this Python's _ssl._SSLSocket layout is not the one natsync knows");
        return NULL;
    }
    sslsocket_type = Py_TYPE(sslobj);
    return ((SocketHead *)sslobj)->ssl;
}

static PyObject *
handshake_step(PyObject *self, PyObject *sslobj)
{
    SSL *ssl = ssl_of(sslobj);
    if (ssl == NULL)
        return NULL;
    ERR_clear_error(); /* SSL_get_error reads the queue: nothing stale in it */
    int ret = SSL_do_handshake(ssl);
    if (ret == 1)
        return PyLong_FromLong(STEP_DONE);
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        return PyLong_FromLong(STEP_READ);
    case SSL_ERROR_WANT_WRITE:
        return PyLong_FromLong(STEP_WRITE);
    default:
        return PyLong_FromLong(STEP_FAILED);
    }
}

/* accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: the descriptor, or -1 when none is waiting;
 * OSError for anything else. (socket.accept() makes it blocking, then a setblocking(False)
 * is one more system call, and the last accept of each batch raises BlockingIOError.) */
static PyObject *
accept_nonblocking(PyObject *self, PyObject *arg)
{
    int listener = (int)PyLong_AsLong(arg);
    if (listener == -1 && PyErr_Occurred())
        return NULL;
    int fd;
    do {
        fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd >= 0)
        return PyLong_FromLong(fd);
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return PyLong_FromLong(-1);
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* hung_up(fd) -> bool: whether the socket has an error or hang-up pending now (one poll(2)
 * asking for no event: only POLLERR, POLLHUP and POLLNVAL come back; no wait). A handshake
 * that completes in the callback uvloop runs for an error event must not hand its reader on
 * (natsync.edge.transport._Handshake._end); such an event leaves one of these set. */
static PyObject *
hung_up(PyObject *self, PyObject *arg)
{
    int fd = (int)PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    struct pollfd p = {fd, 0, 0};
    int n;
    do {
        n = poll(&p, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(n > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0);
}

/* --- TLS-ALPN-01 without peeking (RFC 8737 section 3): whether a ClientHello offers ALPN
 * "acme-tls/1", seen by OpenSSL's ClientHello callback on the listening context and kept on
 * the connection (ex_data) for the SNI callback, which asks offers_acme_tls(). The Python
 * reference peeks at the ClientHello in the kernel (natsync.edge.transport, with
 * natsync.cert.client_hello): a recv(MSG_PEEK) and a parse per connection. */

#define ACME_TLS "acme-tls/1"
#define ALPN_UNSEEN 0
#define ALPN_OTHER 1
#define ALPN_ACME 2

static int alpn_index = -1;

/* ALPN_ACME when the extension's protocol list (RFC 7301 section 3.1) names acme-tls/1. */
static long
alpn_offer(const unsigned char *ext, size_t len)
{
    if (len < 2)
        return ALPN_OTHER;
    size_t end = 2 + (((size_t)ext[0] << 8) | ext[1]);
    if (end > len)
        return ALPN_OTHER;
    for (size_t at = 2; at < end;) {
        size_t n = ext[at];
        if (n == 0 || at + 1 + n > end)
            return ALPN_OTHER;
        if (n == sizeof ACME_TLS - 1 && memcmp(ext + at + 1, ACME_TLS, n) == 0)
            return ALPN_ACME;
        at += 1 + n;
    }
    return ALPN_OTHER;
}

static int
client_hello_cb(SSL *s, int *alert, void *arg)
{
    const unsigned char *ext = NULL;
    size_t len = 0;
    long seen = ALPN_OTHER;
    if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
                                  &len))
        seen = alpn_offer(ext, len);
    SSL_set_ex_data(s, alpn_index, (void *)seen);
    return SSL_CLIENT_HELLO_SUCCESS;
}

static PyObject *
probe_alpn(PyObject *self, PyObject *context)
{
    SSL_CTX *ctx = ssl_ctx_of(context);
    if (ctx == NULL)
        return NULL;
    if (alpn_index < 0 && (alpn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL)) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL gave no ex_data index");
        return NULL;
    }
    SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
    Py_RETURN_NONE;
}

static PyObject *
offers_acme_tls(PyObject *self, PyObject *sslobj)
{
    SSL *ssl = ssl_of(sslobj);
    if (ssl == NULL)
        return NULL;
    long seen = alpn_index < 0 ? ALPN_UNSEEN : (long)SSL_get_ex_data(ssl, alpn_index);
    if (seen == ALPN_UNSEEN)
        Py_RETURN_NONE;
    return PyBool_FromLong(seen == ALPN_ACME);
}

static PyMethodDef methods[] = {
    {"probe_alpn", probe_alpn, METH_O,
     "probe_alpn(context): note on each connection whether its ClientHello offers acme-tls/1"},
    {"offers_acme_tls", offers_acme_tls, METH_O,
     "offers_acme_tls(sslobj): whether its ClientHello offered ALPN acme-tls/1 (None: not seen)"},
    {"handshake_step", handshake_step, METH_O,
     "handshake_step(sslobj): one SSL_do_handshake on an _ssl._SSLSocket: 0 done, 1 wants "
     "to read, 2 wants to write, 3 failed (do_handshake() again raises CPython's error)"},
    {"hung_up", hung_up, METH_O,
     "hung_up(fd): whether the socket fd has an error or hang-up pending (poll, no wait)"},
    {"accept", accept_nonblocking, METH_O,
     "accept(fd): a connection from listening socket fd, non-blocking (-1: none waiting)"},
    {"set_secret", set_secret, METH_VARARGS,
     "set_secret(secret, period): the shared secret (16..64 bytes) and the key period (s)"},
    {"install", install, METH_VARARGS,
     "install(context): issue and accept tickets under the shared rotating keys"},
    {"set_period_no", set_period_no, METH_VARARGS,
     "set_period_no(n): use period number n instead of the clock's (-1: the clock; tests)"},
    {"derive", derive, METH_VARARGS,
     "derive(n): period n's key as (name, AES key, HMAC key), for the Python reference"},
    {"counters", counters, METH_NOARGS,
     "counters(): tickets issued, resumed, renewed (previous key) and refused"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "natsync.edge._tickets",
    "Shared, rotating TLS session-ticket keys for the edge's workers.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__tickets(void)
{
    return PyModule_Create(&module);
}
