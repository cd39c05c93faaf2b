/* natsync.edge._speedups: the common case of natsync.edge.http's head parsers, in C.
 *
 * Why C: under keep-alive load the edge spends about a quarter of its CPU in the two regex
 * passes per head (request and response) and the Python around them; the benchmark goal
 * (issue 5: >= 80% of nginx's keep-alive rate) is out of reach with them. The rules stay in
 * natsync/edge/http.py: this module decides nothing on its own. For a head it fully
 * understands (the common, clean case) it returns exactly what the Python parser returns; for
 * anything else — an error, an unusual Connection value, a limit reached — it returns None and
 * the Python parser takes the head (and raises the precise error). tests/edge/test_speedups.py
 * checks the two agree on generated and hand-written heads; the Python parser is the reference
 * and the whole fallback when this module is not built.
 *
 * configure() receives the classes, the Framing members, the Connection token sets and the
 * limits from http.py, so each is defined once, there. A head is made by setting its fields at
 * their offsets (_slots.h), as its dataclass __init__ would, without that Python frame.
 *
 * The two serialisers' common case is here too (backend_request: the head the server gets;
 * client_response: the head the phone gets; issue 27, about 1 us of Python per keep-alive
 * request): a head this module made, whose Connection tokens name no other field, not chunked
 * (requests), with at most one line to drop, gives the Python serialiser's bytes; anything else
 * None, and the Python serialiser makes it. tests/edge/test_speedups.py and
 * fuzz/fuzz_edge_heads.py compare them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>

#include "_slots.h"
#include <poll.h>
#include <string.h>

static PyObject *request_cls, *response_cls;
static PyObject *f_none, *f_length, *f_chunked, *f_close;
static PyObject *tokens_none, *tokens_keep_alive, *tokens_close, *tokens_upgrade;
static PyObject *v_http11, *v_http10;
static Py_ssize_t max_head_size = 0, max_header_count = 0, max_length_digits = 0;

/* RFC 9110 5.6.2 tchar */
static unsigned char is_tchar[256];
/* field-value characters of the fast path: HT, SP-~, obs-text */
static unsigned char is_vchar[256];

static void init_tables(void) {
    const char *extra = "!#$%&'*+-.^_`|~";
    for (int c = '0'; c <= '9'; c++) is_tchar[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) is_tchar[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) is_tchar[c] = 1;
    for (const char *p = extra; *p; p++) is_tchar[(unsigned char)*p] = 1;
    is_vchar['\t'] = 1;
    for (int c = 0x20; c <= 0x7e; c++) is_vchar[c] = 1;
    for (int c = 0x80; c <= 0xff; c++) is_vchar[c] = 1;
}

enum name_kind {
    N_OTHER, N_HOST, N_CONTENT_LENGTH, N_TRANSFER_ENCODING, N_CONNECTION, N_HOP_OTHER
};

/* ASCII case-insensitive equality of name[0:n] with the lowercase literal lit (length n). */
static int name_is(const unsigned char *name, const char *lit, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = name[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (c != (unsigned char)lit[i]) return 0;
    }
    return 1;
}

/* What a field name means to the edge (the names of http._NAMES). */
static enum name_kind classify(const unsigned char *name, Py_ssize_t n) {
    switch (n) {
    case 2:
        return name_is(name, "te", 2) ? N_HOP_OTHER : N_OTHER;
    case 4:
        return name_is(name, "host", 4) ? N_HOST : N_OTHER;
    case 7:
        if (name_is(name, "trailer", 7) || name_is(name, "upgrade", 7)) return N_HOP_OTHER;
        return N_OTHER;
    case 9:
        if (name_is(name, "x-real-ip", 9) || name_is(name, "forwarded", 9)) return N_HOP_OTHER;
        return N_OTHER;
    case 10:
        if (name_is(name, "connection", 10)) return N_CONNECTION;
        return name_is(name, "keep-alive", 10) ? N_HOP_OTHER : N_OTHER;
    case 14:
        return name_is(name, "content-length", 14) ? N_CONTENT_LENGTH : N_OTHER;
    case 15:
        return name_is(name, "x-forwarded-for", 15) ? N_HOP_OTHER : N_OTHER;
    case 16:
        if (name_is(name, "proxy-connection", 16) || name_is(name, "x-forwarded-host", 16))
            return N_HOP_OTHER;
        return N_OTHER;
    case 17:
        if (name_is(name, "transfer-encoding", 17)) return N_TRANSFER_ENCODING;
        return name_is(name, "x-forwarded-proto", 17) ? N_HOP_OTHER : N_OTHER;
    default:
        return N_OTHER;
    }
}

typedef struct {
    const unsigned char *start; /* value, trimmed of SP/HT */
    Py_ssize_t len;
} span;

typedef struct {
    int hosts, connections, lengths, codings, hops;
    Py_ssize_t hop_at; /* start of the first hop-by-hop line, in the section */
    span connection, length, coding;
} section_info;

/* Check a whole field section (each line: token ":" value CRLF) and note the fields that
 * matter. 0: understood; -1: not the fast path's (the Python parser decides). */
static int scan_section(const unsigned char *s, Py_ssize_t n, section_info *info) {
    Py_ssize_t i = 0, lines = 0;
    memset(info, 0, sizeof(*info));
    info->hop_at = -1;
    while (i < n) {
        Py_ssize_t line_start = i;
        while (i < n && is_tchar[s[i]]) i++;
        if (i == line_start || i >= n || s[i] != ':') return -1;
        Py_ssize_t name_len = i - line_start;
        i++;
        Py_ssize_t value_start = i;
        while (i < n && is_vchar[s[i]]) i++;
        if (i + 1 >= n || s[i] != '\r' || s[i + 1] != '\n') return -1;
        Py_ssize_t value_end = i;
        i += 2;
        if (++lines > max_header_count) return -1;
        enum name_kind kind = classify(s + line_start, name_len);
        if (kind == N_OTHER) continue;
        while (value_start < value_end && (s[value_start] == ' ' || s[value_start] == '\t'))
            value_start++;
        while (value_end > value_start && (s[value_end - 1] == ' ' || s[value_end - 1] == '\t'))
            value_end--;
        span value = {s + value_start, value_end - value_start};
        switch (kind) {
        case N_HOST:
            info->hosts++;
            break;
        case N_CONTENT_LENGTH:
            if (info->lengths++ == 0) info->length = value;
            break;
        case N_TRANSFER_ENCODING:
            if (info->codings++ == 0) info->coding = value;
            break;
        case N_CONNECTION: /* hop-by-hop too */
            if (info->connections++ == 0) info->connection = value;
            if (info->hops++ == 0) info->hop_at = line_start;
            break;
        case N_HOP_OTHER:
            if (info->hops++ == 0) info->hop_at = line_start;
            break;
        default:
            break;
        }
    }
    return 0;
}

static int span_is(span v, const char *lit) {
    Py_ssize_t n = (Py_ssize_t)strlen(lit);
    return v.len == n && name_is(v.start, lit, n);
}

typedef struct {
    PyObject *framing;  /* borrowed */
    PyObject *tokens;   /* borrowed */
    long long length;
    int has_close, has_keep_alive;
} framing_info;

/* http._section_framing for what the fast path takes: 0, or -1 (the Python parser decides). */
static int section_framing(const section_info *info, int http11, int is_request,
                           framing_info *out) {
    out->tokens = tokens_none;
    out->has_close = out->has_keep_alive = 0;
    if (info->connections > 1) return -1;
    if (info->connections == 1) {
        if (span_is(info->connection, "keep-alive")) {
            out->tokens = tokens_keep_alive;
            out->has_keep_alive = 1;
        } else if (span_is(info->connection, "close")) {
            out->tokens = tokens_close;
            out->has_close = 1;
        } else if (span_is(info->connection, "upgrade")) {
            out->tokens = tokens_upgrade;
        } else {
            return -1; /* a token list: the Python parser splits it */
        }
    }
    out->length = 0;
    if (info->lengths) {
        if (info->codings || info->lengths > 1) return -1;
        span v = info->length;
        if (v.len == 0 || v.len > max_length_digits) return -1;
        long long length = 0;
        for (Py_ssize_t i = 0; i < v.len; i++) {
            if (v.start[i] < '0' || v.start[i] > '9') return -1;
            length = length * 10 + (v.start[i] - '0');
        }
        out->length = length;
        out->framing = length ? f_length : f_none;
        return 0;
    }
    if (info->codings) {
        if (info->codings > 1 || !http11 || !span_is(info->coding, "chunked")) return -1;
        out->framing = f_chunked;
        return 0;
    }
    out->framing = is_request ? f_none : f_close;
    return 0;
}

/* scan_section, then section_framing: 0, or -1 (the Python parser decides). */
static int read_section(const unsigned char *section, Py_ssize_t len, int http11,
                        int is_request, section_info *info, framing_info *fr) {
    if (len < 0 || scan_section(section, len, info) < 0) return -1;
    return section_framing(info, http11, is_request, fr);
}

/* The heads' fields at their offsets (RequestHead's and ResponseHead's, in their order), found
 * by configure(): a head is made as its __init__ would make it (it only sets them), without
 * the Python frame of a dataclass' __init__. */
#define REQUEST_FIELDS 12
#define RESPONSE_FIELDS 9
static Py_ssize_t request_fields[REQUEST_FIELDS], response_fields[RESPONSE_FIELDS];
enum { Q_METHOD, Q_TARGET, Q_VERSION, Q_SECTION, Q_HAS_HOST, Q_FRAMING, Q_LENGTH, Q_KEEP_ALIVE,
       Q_TOKENS, Q_HOP, Q_LENGTH_FIELD, Q_HOP_AT };
enum { R_STATUS, R_SECTION, R_FRAMING, R_LENGTH, R_KEEP_ALIVE, R_VERSION, R_TOKENS, R_HOP,
       R_HOP_AT };

/* cls(*items) (its fields at *offsets*), the items taken; NULL when one could not be made. */
static PyObject *construct(PyObject *cls, PyObject **items, int n, const Py_ssize_t *offsets) {
    PyObject *result = NULL;
    int made = 1;
    for (int k = 0; k < n; k++)
        if (items[k] == NULL) made = 0;
    if (made) result = ((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
    for (int k = 0; k < n; k++) {
        if (result != NULL)
            SLOT(result, offsets[k]) = items[k]; /* taken */
        else
            Py_XDECREF(items[k]);
    }
    return result;
}

/* The head's first line end and its field section, for a head that ends in a blank line. */
static int split(const unsigned char *h, Py_ssize_t n, Py_ssize_t *line_end) {
    if (n < 4 || n > max_head_size + 4) return -1;
    if (memcmp(h + n - 4, "\r\n\r\n", 4) != 0) return -1;
    const unsigned char *cr = memchr(h, '\r', (size_t)n);
    /* the first CR must start the first CRLF (a bare CR is the Python parser's to refuse) */
    if (cr == NULL || cr + 1 >= h + n || cr[1] != '\n') return -1;
    *line_end = cr - h;
    return 0;
}

/* readable(fd: int) -> bool: whether the socket has something to read, or its peer's FIN, now
 * (one poll(2), no wait: natsync.edge.pool checks a pooled connection before reusing it). */
static PyObject *readable(PyObject *self, PyObject *arg) {
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd < 0 || fd > INT_MAX) Py_RETURN_TRUE; /* no socket: nothing to trust */
    struct pollfd p = {(int)fd, POLLIN | POLLPRI, 0};
    int n;
    do {
        n = poll(&p, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(n > 0);
}

static PyObject *cached_method(const unsigned char *m, Py_ssize_t n);

/* The RequestHead of h[0:n] (a head through its blank line), or None: not the fast path's. */
static PyObject *build_request(const unsigned char *h, Py_ssize_t n, long long max_body) {
    Py_ssize_t line_end;
    if (request_cls == NULL || split(h, n, &line_end) < 0) Py_RETURN_NONE;
    /* request line: token SP "/" [!-~]* SP HTTP/1.[01] */
    Py_ssize_t i = 0;
    while (i < line_end && is_tchar[h[i]]) i++;
    Py_ssize_t method_len = i;
    if (method_len == 0 || i >= line_end || h[i] != ' ') Py_RETURN_NONE;
    Py_ssize_t target_start = ++i;
    if (i >= line_end || h[i] != '/') Py_RETURN_NONE; /* "*" too: the Python parser's */
    while (i < line_end && h[i] >= 0x21 && h[i] <= 0x7e) i++;
    Py_ssize_t target_len = i - target_start;
    if (i >= line_end || h[i] != ' ' || line_end - i - 1 != 8) Py_RETURN_NONE;
    const unsigned char *v = h + i + 1;
    if (memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '1' && v[7] != '0')) Py_RETURN_NONE;
    int http11 = v[7] == '1';
    const unsigned char *section = h + line_end + 2;
    Py_ssize_t section_len = n - 2 - (line_end + 2);
    section_info info;
    framing_info fr;
    if (read_section(section, section_len, http11, 1, &info, &fr) < 0) Py_RETURN_NONE;
    if (info.hosts > 1 || (http11 && info.hosts == 0)) Py_RETURN_NONE;
    if (fr.framing == f_length && fr.length > max_body) Py_RETURN_NONE;
    int keep_alive = http11 ? !fr.has_close : fr.has_keep_alive;

    PyObject *items[REQUEST_FIELDS] = {NULL};
    items[0] = cached_method(h, method_len);
    items[1] = PyBytes_FromStringAndSize((const char *)h + target_start, target_len);
    items[2] = Py_NewRef(http11 ? v_http11 : v_http10);
    items[3] = PyBytes_FromStringAndSize((const char *)section, section_len);
    items[4] = PyBool_FromLong(info.hosts == 1);
    items[5] = Py_NewRef(fr.framing);
    items[6] = PyLong_FromLongLong(fr.length);
    items[7] = PyBool_FromLong(keep_alive);
    items[8] = Py_NewRef(fr.tokens);
    items[9] = PyBool_FromLong(info.hops > 0);
    items[10] = PyBool_FromLong(info.lengths > 0);
    items[11] = PyLong_FromSsize_t(info.hops == 1 ? info.hop_at : -1);
    return construct(request_cls, items, REQUEST_FIELDS, request_fields);
}

/* The ResponseHead of h[0:n] (a head through its blank line), or None: not the fast path's. */
static PyObject *build_response(const unsigned char *h, Py_ssize_t n, PyObject *method) {
    Py_ssize_t line_end;
    if (response_cls == NULL || split(h, n, &line_end) < 0) Py_RETURN_NONE;
    /* status line: HTTP/1.[01] SP 3DIGIT [SP reason] */
    if (line_end < 12 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '1' && h[7] != '0')
        || h[8] != ' ')
        Py_RETURN_NONE;
    int http11 = h[7] == '1';
    for (int k = 9; k < 12; k++)
        if (h[k] < '0' || h[k] > '9') Py_RETURN_NONE;
    long status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    if (line_end > 12) {
        if (h[12] != ' ') Py_RETURN_NONE;
        for (Py_ssize_t k = 13; k < line_end; k++)
            if (!is_vchar[h[k]]) Py_RETURN_NONE;
    }
    const unsigned char *section = h + line_end + 2;
    Py_ssize_t section_len = n - 2 - (line_end + 2);
    section_info info;
    framing_info fr;
    if (read_section(section, section_len, http11, 0, &info, &fr) < 0) Py_RETURN_NONE;
    if ((PyBytes_GET_SIZE(method) == 4 && memcmp(PyBytes_AS_STRING(method), "HEAD", 4) == 0)
        || status < 200 || status == 204 || status == 304) {
        fr.framing = f_none;
        fr.length = 0;
    }
    int keep_alive = fr.framing != f_close && !fr.has_close && (http11 || fr.has_keep_alive);

    PyObject *items[RESPONSE_FIELDS] = {NULL};
    items[0] = PyLong_FromLong(status);
    items[1] = PyBytes_FromStringAndSize((const char *)section, section_len);
    items[2] = Py_NewRef(fr.framing);
    items[3] = PyLong_FromLongLong(fr.length);
    items[4] = PyBool_FromLong(keep_alive);
    items[5] = Py_NewRef(http11 ? v_http11 : v_http10);
    items[6] = Py_NewRef(fr.tokens);
    items[7] = PyBool_FromLong(info.hops > 0);
    items[8] = PyLong_FromSsize_t(info.hops == 1 ? info.hop_at : -1);
    return construct(response_cls, items, RESPONSE_FIELDS, response_fields);
}

/* The methods phones send, as shared bytes objects (no allocation per request). */
static PyObject *m_get, *m_post, *m_options, *m_head;

/* Where the head in buf[0:n] ends (just past its blank line), or -1: none within the size
 * limit (incomplete or too long: the Python side says which). */
static Py_ssize_t head_length(const char *buf, Py_ssize_t n) {
    Py_ssize_t window = n < max_head_size + 4 ? n : max_head_size + 4;
    for (Py_ssize_t i = 0; i + 3 < window;) {
        const char *cr = memchr(buf + i, '\r', (size_t)(window - 3 - i));
        if (cr == NULL) return -1;
        i = cr - buf;
        if (cr[1] == '\n' && cr[2] == '\r' && cr[3] == '\n') return i + 4;
        i++;
    }
    return -1;
}

static PyObject *empty_bytes;

/* (head object, the bytes after the head) for the head at the start of buf, or None. */
static PyObject *take(PyObject *buf, PyObject *(*build)(const unsigned char *, Py_ssize_t,
                                                       void *), void *arg) {
    const char *b = PyBytes_AS_STRING(buf);
    Py_ssize_t n = PyBytes_GET_SIZE(buf);
    Py_ssize_t end = head_length(b, n);
    if (end < 0) Py_RETURN_NONE;
    PyObject *head = build((const unsigned char *)b, end, arg);
    if (head == NULL || head == Py_None) return head;
    PyObject *rest = end == n ? Py_NewRef(empty_bytes) : PyBytes_FromStringAndSize(b + end, n - end);
    if (rest == NULL) {
        Py_DECREF(head);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, head, rest);
    Py_DECREF(head);
    Py_DECREF(rest);
    return pair;
}

static PyObject *build_request_arg(const unsigned char *h, Py_ssize_t n, void *arg) {
    return build_request(h, n, *(long long *)arg);
}

static PyObject *build_response_arg(const unsigned char *h, Py_ssize_t n, void *arg) {
    return build_response(h, n, (PyObject *)arg);
}

/* The arguments (bytes, int) of request_head and take_request: 0, or -1 with an exception. */
static int request_args(PyObject *const *args, Py_ssize_t nargs, const char *usage,
                        long long *max_body) {
    if (nargs != 2 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    *max_body = PyLong_AsLongLong(args[1]);
    return *max_body == -1 && PyErr_Occurred() ? -1 : 0;
}

/* The arguments (bytes, bytes) of response_head and take_response. */
static int response_args(PyObject *const *args, Py_ssize_t nargs, const char *usage) {
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    return 0;
}

static PyObject *request_head(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long max_body;
    if (request_args(args, nargs, "request_head(head: bytes, max_body: int)", &max_body) < 0)
        return NULL;
    return build_request((const unsigned char *)PyBytes_AS_STRING(args[0]),
                         PyBytes_GET_SIZE(args[0]), max_body);
}

static PyObject *response_head(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (response_args(args, nargs, "response_head(head: bytes, request_method: bytes)") < 0)
        return NULL;
    return build_response((const unsigned char *)PyBytes_AS_STRING(args[0]),
                          PyBytes_GET_SIZE(args[0]), args[1]);
}

static PyObject *take_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long max_body;
    if (request_args(args, nargs, "take_request(buffer: bytes, max_body: int)", &max_body) < 0)
        return NULL;
    return take(args[0], build_request_arg, &max_body);
}

static PyObject *take_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (response_args(args, nargs, "take_response(buffer: bytes, request_method: bytes)") < 0)
        return NULL;
    return take(args[0], build_response_arg, args[1]);
}

/* The proxy's one read buffer (natsync.edge.proxy._READ_VIEW): handed to the TLS layer by
 * read_buffer (the protocols' get_buffer), copied out by read_bytes (their buffer_updated).
 * Both run once per TLS read, so they are C calls, not Python frames. */
static PyObject *read_view;

/* set_read_buffer(view: memoryview) */
static PyObject *set_read_buffer(PyObject *self, PyObject *view) {
    if (!PyMemoryView_Check(view) || PyMemoryView_GET_BUFFER(view)->readonly
        || !PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(view), 'C')
        || PyMemoryView_GET_BUFFER(view)->itemsize != 1) {
        PyErr_SetString(PyExc_TypeError, "set_read_buffer: a writable byte memoryview");
        return NULL;
    }
    Py_XSETREF(read_view, Py_NewRef(view));
    Py_RETURN_NONE;
}

/* read_buffer(sizehint: int) -> memoryview: the read buffer, whatever the hint */
static PyObject *read_buffer(PyObject *self, PyObject *sizehint) {
    if (read_view == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "read_buffer: set_read_buffer was not called");
        return NULL;
    }
    return Py_NewRef(read_view);
}

/* read_bytes(nbytes: int) -> bytes: the first nbytes of the read buffer, copied */
static PyObject *read_bytes(PyObject *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (read_view == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "read_bytes: set_read_buffer was not called");
        return NULL;
    }
    Py_buffer *view = PyMemoryView_GET_BUFFER(read_view);
    if (n < 0 || n > view->len) {
        PyErr_SetString(PyExc_ValueError, "read_bytes: more bytes than the buffer holds");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)view->buf, n);
}

static PyObject *cached_method(const unsigned char *m, Py_ssize_t n) {
    if (n == 3 && memcmp(m, "GET", 3) == 0) return Py_NewRef(m_get);
    if (n == 4 && memcmp(m, "POST", 4) == 0) return Py_NewRef(m_post);
    if (n == 7 && memcmp(m, "OPTIONS", 7) == 0) return Py_NewRef(m_options);
    if (n == 4 && memcmp(m, "HEAD", 4) == 0) return Py_NewRef(m_head);
    return PyBytes_FromStringAndSize((const char *)m, n);
}

static void set_ref(PyObject **slot, PyObject *value) {
    Py_XSETREF(*slot, Py_NewRef(value));
}

/* configure(request_cls, response_cls, framings, tokens, limits): from natsync.edge.http.
 * framings: (NONE, LENGTH, CHUNKED, CLOSE); tokens: (none, keep-alive, close, upgrade)
 * frozensets; limits: (MAX_HEAD_SIZE, MAX_HEADER_COUNT, MAX_LENGTH_DIGITS). */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *req, *resp;
    PyObject *fn, *fl, *fc, *fx, *tn, *tk, *tc, *tu;
    Py_ssize_t head_size, header_count, length_digits;
    if (!PyArg_ParseTuple(args, "OO(OOOO)(OOOO)(nnn)", &req, &resp, &fn, &fl, &fc, &fx, &tn,
                          &tk, &tc, &tu, &head_size, &header_count, &length_digits))
        return NULL;
    if (!PyType_Check(req) || !PyType_Check(resp)) {
        PyErr_SetString(PyExc_TypeError, "configure: the head classes must be classes");
        return NULL;
    }
    if (field_offsets((PyTypeObject *)req, request_fields, REQUEST_FIELDS) < 0 ||
        field_offsets((PyTypeObject *)resp, response_fields, RESPONSE_FIELDS) < 0)
        return NULL;
    if (length_digits < 1 || length_digits > 18 || head_size < 1 || header_count < 1) {
        PyErr_SetString(PyExc_ValueError, "configure: limits out of range");
        return NULL;
    }
    set_ref(&request_cls, req);
    set_ref(&response_cls, resp);
    set_ref(&f_none, fn);
    set_ref(&f_length, fl);
    set_ref(&f_chunked, fc);
    set_ref(&f_close, fx);
    set_ref(&tokens_none, tn);
    set_ref(&tokens_keep_alive, tk);
    set_ref(&tokens_close, tc);
    set_ref(&tokens_upgrade, tu);
    max_head_size = head_size;
    max_header_count = header_count;
    max_length_digits = length_digits;
    Py_RETURN_NONE;
}

/* -- the heads the edge sends (natsync.edge.http.backend_request and client_response): their
 * common case, byte for byte the Python serialisers' (the reference; tests/edge/test_speedups.py
 * and fuzz/fuzz_edge_heads.py compare them); anything else is None and the Python one's. */

static PyObject *status_lines; /* http._STATUS_LINES: status -> its status line */

/* The section less the one line the edge drops (at hop_at), as http._without_hop: 0 with
 * *cut* set (a slice of the section: [0, cut_at) + [cut_end, len)), or -1 (Python's). */
typedef struct {
    const char *data;
    Py_ssize_t len, cut_at, cut_end;
} Section;

static int section_of(PyObject *head, const Py_ssize_t *fields, int section, int hop_i,
                      int hop_at_i, Section *out) {
    PyObject *bytes = SLOT(head, fields[section]), *hop = SLOT(head, fields[hop_i]);
    PyObject *hop_at = SLOT(head, fields[hop_at_i]);
    if (bytes == NULL || !PyBytes_CheckExact(bytes) || hop == NULL || hop_at == NULL ||
        !PyLong_CheckExact(hop_at))
        return -1;
    out->data = PyBytes_AS_STRING(bytes);
    out->len = PyBytes_GET_SIZE(bytes);
    out->cut_at = out->cut_end = out->len;
    if (hop == Py_False) return 0;
    if (hop != Py_True) return -1;
    Py_ssize_t at = PyLong_AsSsize_t(hop_at);
    if (at < 0 || at > out->len) { /* several lines to drop: the Python regex pass */
        PyErr_Clear();
        return -1;
    }
    const char *crlf = NULL;
    for (Py_ssize_t i = at; i + 1 < out->len; i++)
        if (out->data[i] == '\r' && out->data[i + 1] == '\n') {
            crlf = out->data + i;
            break;
        }
    if (crlf == NULL) return -1;
    out->cut_at = at;
    out->cut_end = crlf - out->data + 2;
    return 0;
}

/* The connection tokens name no other field (none, keep-alive or close: the C parser's sets). */
static int plain_tokens(PyObject *tokens) {
    return tokens == tokens_none || tokens == tokens_keep_alive || tokens == tokens_close;
}

/* Bytes made of pieces: each (data, length). */
typedef struct {
    const char *data;
    Py_ssize_t len;
} Piece;

static PyObject *joined(const Piece *pieces, int n) {
    Py_ssize_t total = 0;
    for (int k = 0; k < n; k++) total += pieces[k].len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) return NULL;
    char *at = PyBytes_AS_STRING(out);
    for (int k = 0; k < n; k++) {
        memcpy(at, pieces[k].data, (size_t)pieces[k].len);
        at += pieces[k].len;
    }
    return out;
}

#define PIECE(s) ((Piece){(s), (Py_ssize_t)(sizeof(s) - 1)})

/* backend_request(head, client_ip) -> bytes | None */
static PyObject *backend_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "backend_request(head, client_ip)");
        return NULL;
    }
    PyObject *head = args[0], *ip = args[1];
    if (request_cls == NULL || Py_TYPE(head) != (PyTypeObject *)request_cls ||
        !PyUnicode_CheckExact(ip) || !PyUnicode_IS_ASCII(ip))
        Py_RETURN_NONE;
    const Py_ssize_t *f = request_fields;
    PyObject *method = SLOT(head, f[Q_METHOD]), *target = SLOT(head, f[Q_TARGET]);
    PyObject *framing = SLOT(head, f[Q_FRAMING]), *length = SLOT(head, f[Q_LENGTH]);
    PyObject *has_host = SLOT(head, f[Q_HAS_HOST]), *tokens = SLOT(head, f[Q_TOKENS]);
    PyObject *length_field = SLOT(head, f[Q_LENGTH_FIELD]);
    Section section;
    if (method == NULL || !PyBytes_CheckExact(method) || target == NULL ||
        !PyBytes_CheckExact(target) || (framing != f_none && framing != f_length) ||
        length == NULL || !PyLong_CheckExact(length) ||
        (has_host != Py_True && has_host != Py_False) || !plain_tokens(tokens) ||
        (length_field != Py_True && length_field != Py_False) ||
        section_of(head, f, Q_SECTION, Q_HOP, Q_HOP_AT, &section) < 0)
        Py_RETURN_NONE;
    char content_length[48] = "";
    Py_ssize_t content_length_len = 0;
    if (length_field == Py_False) {
        const char *m = PyBytes_AS_STRING(method);
        Py_ssize_t mn = PyBytes_GET_SIZE(method);
        if (framing == f_length) {
            long long value = PyLong_AsLongLong(length);
            if (value == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                Py_RETURN_NONE;
            }
            content_length_len = snprintf(content_length, sizeof content_length,
                                          "Content-Length: %lld\r\n", value);
        } else if ((mn == 4 && memcmp(m, "POST", 4) == 0) || (mn == 3 && memcmp(m, "PUT", 3) == 0))
            content_length_len = snprintf(content_length, sizeof content_length,
                                          "Content-Length: 0\r\n");
    }
    Piece pieces[] = {
        {PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method)},
        PIECE(" "),
        {PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target)},
        PIECE(" HTTP/1.1\r\n"),
        {section.data, section.cut_at},
        {section.data + section.cut_end, section.len - section.cut_end},
        has_host == Py_True ? (Piece){"", 0} : PIECE("Host: localhost\r\n"),
        {content_length, content_length_len},
        PIECE("X-Forwarded-For: "),
        {(const char *)PyUnicode_1BYTE_DATA(ip), PyUnicode_GET_LENGTH(ip)},
        PIECE("\r\nX-Forwarded-Proto: https\r\n\r\n"),
    };
    return joined(pieces, sizeof pieces / sizeof pieces[0]);
}

/* client_response(head, keep_alive) -> bytes | None */
static PyObject *client_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "client_response(head, keep_alive)");
        return NULL;
    }
    PyObject *head = args[0];
    if (response_cls == NULL || status_lines == NULL ||
        Py_TYPE(head) != (PyTypeObject *)response_cls)
        Py_RETURN_NONE;
    int keep_alive = PyObject_IsTrue(args[1]);
    if (keep_alive < 0) return NULL;
    const Py_ssize_t *f = response_fields;
    PyObject *status = SLOT(head, f[R_STATUS]), *tokens = SLOT(head, f[R_TOKENS]);
    Section section;
    if (status == NULL || !PyLong_CheckExact(status) || !plain_tokens(tokens)) Py_RETURN_NONE;
    long code = PyLong_AsLong(status);
    if (code == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (code < 200 || code == 204 || code == 304) Py_RETURN_NONE;
    PyObject *line = PyDict_GetItemWithError(status_lines, status); /* borrowed */
    if (line == NULL || !PyBytes_CheckExact(line) ||
        section_of(head, f, R_SECTION, R_HOP, R_HOP_AT, &section) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Piece pieces[] = {
        {PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line)},
        {section.data, section.cut_at},
        {section.data + section.cut_end, section.len - section.cut_end},
        keep_alive ? PIECE("\r\n") : PIECE("Connection: close\r\n\r\n"),
    };
    return joined(pieces, sizeof pieces / sizeof pieces[0]);
}

/* set_status_lines(lines: dict[int, bytes]) */
static PyObject *set_status_lines(PyObject *self, PyObject *lines) {
    if (!PyDict_CheckExact(lines)) {
        PyErr_SetString(PyExc_TypeError, "set_status_lines: a dict");
        return NULL;
    }
    Py_XSETREF(status_lines, Py_NewRef(lines));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_read_buffer", set_read_buffer, METH_O, "Keep the proxy's read buffer."},
    {"read_buffer", read_buffer, METH_O, "The read buffer, whatever the size hint."},
    {"read_bytes", read_bytes, METH_O, "The first nbytes of the read buffer, as bytes."},
    {"readable", readable, METH_O, "Whether the socket fd has something to read now (poll)."},
    {"configure", configure, METH_VARARGS, "Receive the classes, constants and limits."},
    {"set_status_lines", set_status_lines, METH_O, "Receive the status lines, by status."},
    {"backend_request", (PyCFunction)(void (*)(void))backend_request, METH_FASTCALL,
     "The head the server receives, or None: the Python serialiser's case."},
    {"client_response", (PyCFunction)(void (*)(void))client_response, METH_FASTCALL,
     "The response head the phone receives, or None: the Python serialiser's case."},
    {"request_head", (PyCFunction)(void (*)(void))request_head, METH_FASTCALL,
     "The RequestHead for a clean, common head, else None (the Python parser decides)."},
    {"response_head", (PyCFunction)(void (*)(void))response_head, METH_FASTCALL,
     "The ResponseHead for a clean, common head, else None (the Python parser decides)."},
    {"take_request", (PyCFunction)(void (*)(void))take_request, METH_FASTCALL,
     "(RequestHead, rest) for a buffer starting with a clean, common head, else None."},
    {"take_response", (PyCFunction)(void (*)(void))take_response, METH_FASTCALL,
     "(ResponseHead, rest) for a buffer starting with a clean, common head, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "The common case of natsync.edge.http's head parsers, in C (see the source's header).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    init_tables();
    v_http11 = PyBytes_FromString("HTTP/1.1");
    v_http10 = PyBytes_FromString("HTTP/1.0");
    m_get = PyBytes_FromString("GET");
    m_post = PyBytes_FromString("POST");
    m_options = PyBytes_FromString("OPTIONS");
    m_head = PyBytes_FromString("HEAD");
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (!empty_bytes || !v_http11 || !v_http10 || !m_get || !m_post || !m_options || !m_head) return NULL;
    return PyModule_Create(&module);
}
