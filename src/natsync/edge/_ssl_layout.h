/* CPython's _ssl objects as natsync.edge's C modules (_tickets, _tlsio) read them, in one place.
 *
 * Modules/_ssl.c (the same in 3.11-3.13) does not export its structs: a PySSLContext holds its
 * SSL_CTX * right after the object header; a PySSLSocket (the _ssl._SSLSocket inside
 * ssl.SSLObject, ssl.SSLSocket and natsync.edge.transport.TLSObject) a weak reference to its
 * socket, then its SSL *. Neither module trusts this before layout_holds() said yes on a real
 * object. (natsync.edge.memory reads the same two offsets with ctypes, and checks them the
 * same way.)
 */
#ifndef NATSYNC_SSL_LAYOUT_H
#define NATSYNC_SSL_LAYOUT_H

#include <Python.h>
#include <openssl/ssl.h>

/* PySSLContext, up to its SSL_CTX. */
typedef struct {
    PyObject_HEAD
    SSL_CTX *ctx;
} ContextHead;

/* PySSLSocket, up to its SSL. */
typedef struct {
    PyObject_HEAD
    PyObject *socket_ref;
    SSL *ssl;
} SocketHead;

/* Whether sslsocket (an _ssl._SSLSocket made by a context whose SSL_CTX is ctx) has its SSL
 * where SocketHead says: an SSL that belongs to ctx. */
static inline int
layout_holds(PyObject *sslsocket, SSL_CTX *ctx)
{
    SSL *ssl = ((SocketHead *)sslsocket)->ssl;
    return ssl != NULL && ctx != NULL && SSL_get_SSL_CTX(ssl) == ctx;
}

#endif
