/* natsync.edge._steady: the phone connection machine's steady keep-alive moves, in C.
 *
 * Why C (issue 27, keep-alive requests at nginx's rate): a keep-alive request through the edge
 * makes three machine calls (natsync.edge.connection.ClientMachine: the head, the server
 * ready, the answer) and each walks five to nine Python functions (the funnels, the judge, the
 * rate limit, the body, the end of the answer, the log, the next head): about half of the
 * Python run per request (python bench/edge_bench.py hot-path). Here each of the three calls
 * has its usual case in one C function that reads and writes the machine's slots directly:
 *
 *   client_data(machine, data, now)   a whole request head (and what follows it) in one read,
 *                                     between requests: its target already judged and
 *                                     published, the address within its rate, the access log
 *                                     off: [OPEN_BACKEND];
 *   backend_ready(machine, now)       the server connection for it: the head (and the body's
 *                                     bytes that came with it, Content-Length or none) sent;
 *   backend_data(machine, data, now)  the answer's head and whole Content-Length body in one
 *                                     read, the request wholly sent, nothing held for a next
 *                                     request, the access log off: the answer sent, the server
 *                                     connection released (or dropped) and the machine back to
 *                                     reading heads (or closed).
 *
 * Each returns the same commands and leaves the machine, the rate limiter's bucket and the
 * counters exactly as the Python method does, or returns None having changed nothing: then the
 * Python method decides (every other case, and every error: a head C declines, a bad head, an
 * interim or chunked answer, a first request from an address, a target not yet judged). This
 * module decides nothing of its own: what is a valid head is natsync.edge._speedups' parsers'
 * (called here), the heads sent are natsync.edge.http's serialisers' (their C halves in
 * _speedups, else their Python halves: called here), what the moves are is the Python
 * machine's. tests/edge/test_steady.py runs generated transcripts through a machine with these
 * and one without and compares every command and every slot after every event;
 * fuzz/fuzz_edge_steady.py does so with arbitrary bytes. The shell's reads and the transport's
 * usual read and write further down are checked the same way (test_steady.py,
 * fuzz/fuzz_edge_shell.py). NATSYNC_PURE_PYTHON, or this module not built: the Python methods
 * alone.
 *
 * The slots are read and written at their offsets (from the classes' member descriptors,
 * found by configure()); every call checks each object's exact type first and declines
 * otherwise. The rate limiter's arithmetic is Python's (the same doubles in the same order).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_slots.h"

#define PUT(obj, offset, value) \
    do { if (put_slot((obj), (offset), (value)) < 0) goto failed; } while (0)

/* -- what configure() receives */

static PyTypeObject *machine_type, *policy_type, *config_type, *limiter_type, *metrics_type,
    *fields_type, *request_type, *response_type, *to_client_type, *to_backend_type;
static PyObject *req_head, *req_connecting, *req_body, *req_sent, *req_closed;
static PyObject *resp_none, *resp_head;
static PyObject *open_backend, *release_backend, *drop_backend, *backend_answered,
    *close_client, *pause_client, *resume_client;
static PyObject *f_none, *f_length;
static PyObject *take_request, *take_response, *c_backend_request, *backend_request,
    *c_client_response, *client_response;
static PyObject *empty_bytes, *zero_float, *one_int, *dash, *other;
/* the longest command name counted as itself (natsync.edge.metrics.Metrics.count_request) */
static Py_ssize_t longest_cmd;

/* ClientMachine */
static Py_ssize_t m_attached, m_buf, m_bytes_out, m_chunks, m_deadline, m_fields, m_head, m_ip,
    m_keep_alive, m_left, m_logged, m_method, m_over_limit, m_paused, m_ping, m_policy,
    m_request, m_resp_buf, m_resp_chunks, m_response, m_response_head, m_started, m_status;
/* EdgePolicy, EdgeConfig, RateLimiter, Metrics, EasFields */
static Py_ssize_t p_config, p_limits, p_metrics, p_access_logged, p_targets;
static Py_ssize_t c_max_body, c_client_idle_timeout, c_body_timeout;
static Py_ssize_t l_buckets, l_rate, l_burst;
static Py_ssize_t x_held_pings, x_requests;
static Py_ssize_t e_cmd;
/* RequestHead, ResponseHead, SendToClient, SendToBackend */
static Py_ssize_t q_method, q_target, q_framing, q_length, q_keep_alive, q_section;
static Py_ssize_t r_status, r_framing, r_length, r_keep_alive;
static Py_ssize_t s_client_data, s_backend_data;

static int configured = 0;

typedef struct {
    const char *name;
    Py_ssize_t *offset;
} SlotName;

static int offsets(PyTypeObject *type, const SlotName *names) {
    for (; names->name != NULL; names++)
        if (slot_offset(type, names->name, names->offset) < 0) return -1;
    return 0;
}

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *types, *states, *commands, *framings, *functions;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!n", &PyTuple_Type, &types, &PyTuple_Type, &states,
                          &PyTuple_Type, &commands, &PyTuple_Type, &framings, &PyTuple_Type,
                          &functions, &longest_cmd))
        return NULL;
    PyTypeObject **type_slots[] = {&machine_type, &policy_type, &config_type, &limiter_type,
                                   &metrics_type, &fields_type, &request_type, &response_type,
                                   &to_client_type, &to_backend_type};
    PyObject **state_slots[] = {&req_head, &req_connecting, &req_body, &req_sent, &req_closed,
                                &resp_none, &resp_head};
    PyObject **command_slots[] = {&open_backend, &release_backend, &drop_backend,
                                  &backend_answered, &close_client, &pause_client,
                                  &resume_client};
    PyObject **framing_slots[] = {&f_none, &f_length};
    PyObject **function_slots[] = {&take_request,      &take_response,  &c_backend_request,
                                   &backend_request,   &c_client_response, &client_response};
    struct {
        PyObject *tuple;
        PyObject ***slots;
        Py_ssize_t n;
    } groups[] = {
        {types, (PyObject ***)type_slots, 10},
        {states, state_slots, 7},
        {commands, command_slots, 7},
        {framings, framing_slots, 2},
        {functions, function_slots, 6},
    };
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        if (PyTuple_GET_SIZE(groups[g].tuple) != groups[g].n) {
            PyErr_Format(PyExc_ValueError, "configure: group %zu wants %zd values", g,
                         groups[g].n);
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < 10; i++)
        if (!PyType_Check(PyTuple_GET_ITEM(types, i))) {
            PyErr_SetString(PyExc_TypeError, "configure: the first group holds the classes");
            return NULL;
        }
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
        for (Py_ssize_t i = 0; i < groups[g].n; i++) {
            PyObject *value = PyTuple_GET_ITEM(groups[g].tuple, i);
            Py_INCREF(value);
            Py_XSETREF(*groups[g].slots[i], value);
        }
    const SlotName machine_names[] = {
        {"attached", &m_attached}, {"buf", &m_buf}, {"bytes_out", &m_bytes_out},
        {"chunks", &m_chunks}, {"deadline", &m_deadline}, {"fields", &m_fields},
        {"head", &m_head}, {"ip", &m_ip}, {"keep_alive", &m_keep_alive}, {"left", &m_left},
        {"logged", &m_logged}, {"method", &m_method}, {"over_limit", &m_over_limit},
        {"paused", &m_paused}, {"ping", &m_ping}, {"policy", &m_policy},
        {"request", &m_request}, {"resp_buf", &m_resp_buf}, {"resp_chunks", &m_resp_chunks},
        {"response", &m_response}, {"response_head", &m_response_head},
        {"started", &m_started}, {"status", &m_status}, {NULL, NULL}};
    const SlotName policy_names[] = {{"config", &p_config}, {"limits", &p_limits},
                                     {"metrics", &p_metrics},
                                     {"access_logged", &p_access_logged},
                                     {"targets", &p_targets}, {NULL, NULL}};
    const SlotName config_names[] = {{"max_body", &c_max_body},
                                     {"client_idle_timeout", &c_client_idle_timeout},
                                     {"body_timeout", &c_body_timeout}, {NULL, NULL}};
    const SlotName limiter_names[] = {
        {"buckets", &l_buckets}, {"rate", &l_rate}, {"burst", &l_burst}, {NULL, NULL}};
    const SlotName metrics_names[] = {
        {"held_pings", &x_held_pings}, {"requests", &x_requests}, {NULL, NULL}};
    const SlotName fields_names[] = {{"cmd", &e_cmd}, {NULL, NULL}};
    const SlotName request_names[] = {
        {"method", &q_method}, {"target", &q_target}, {"framing", &q_framing},
        {"length", &q_length}, {"keep_alive", &q_keep_alive}, {"section", &q_section},
        {NULL, NULL}};
    const SlotName response_names[] = {{"status", &r_status}, {"framing", &r_framing},
                                       {"length", &r_length}, {"keep_alive", &r_keep_alive},
                                       {NULL, NULL}};
    const SlotName client_names[] = {{"data", &s_client_data}, {NULL, NULL}};
    const SlotName backend_names[] = {{"data", &s_backend_data}, {NULL, NULL}};
    configured = 0;
    if (offsets(machine_type, machine_names) < 0 || offsets(policy_type, policy_names) < 0 ||
        offsets(config_type, config_names) < 0 || offsets(limiter_type, limiter_names) < 0 ||
        offsets(metrics_type, metrics_names) < 0 || offsets(fields_type, fields_names) < 0 ||
        offsets(request_type, request_names) < 0 || offsets(response_type, response_names) < 0 ||
        offsets(to_client_type, client_names) < 0 || offsets(to_backend_type, backend_names) < 0)
        return NULL;
    configured = 1;
    Py_RETURN_NONE;
}

/* -- small steps */

/* A command carrying bytes (SendToClient or SendToBackend), built as its __init__ would. */
static PyObject *command(PyTypeObject *type, Py_ssize_t offset, PyObject *data) {
    PyObject *cmd = type->tp_alloc(type, 0);
    if (cmd == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    SLOT(cmd, offset) = data; /* stolen */
    return cmd;
}

static PyObject *concat(PyObject *a, const char *b, Py_ssize_t nb) {
    Py_ssize_t na = PyBytes_GET_SIZE(a);
    if (nb == 0) return Py_NewRef(a);
    PyObject *joined = PyBytes_FromStringAndSize(NULL, na + nb);
    if (joined == NULL) return NULL;
    memcpy(PyBytes_AS_STRING(joined), PyBytes_AS_STRING(a), (size_t)na);
    memcpy(PyBytes_AS_STRING(joined) + na, b, (size_t)nb);
    return joined;
}

/* int + delta, as Python's += on the slot's int. */
static PyObject *plus(PyObject *value, Py_ssize_t delta) {
    if (value == NULL) { /* an unset slot: what Python's += would say */
        PyErr_SetString(PyExc_AttributeError, "natsync.edge._steady: a counter is not set");
        return NULL;
    }
    PyObject *step = PyLong_FromSsize_t(delta);
    if (step == NULL) return NULL;
    PyObject *sum = PyNumber_Add(value, step);
    Py_DECREF(step);
    return sum;
}

/* The command name of the head's fields is "ping", in any case (str.lower() == "ping"; no
 * character outside ASCII lowers to one of its letters). */
static int is_ping(PyObject *cmd) {
    if (PyUnicode_GET_LENGTH(cmd) != 4 || !PyUnicode_IS_ASCII(cmd)) return 0;
    const char *s = (const char *)PyUnicode_1BYTE_DATA(cmd);
    return (s[0] | 32) == 'p' && (s[1] | 32) == 'i' && (s[2] | 32) == 'n' && (s[3] | 32) == 'g';
}

static int truth(PyObject *value) {
    if (value == Py_True) return 1;
    if (value == Py_False || value == Py_None) return 0;
    return PyObject_IsTrue(value);
}

/* The policy's objects, each of its exact type, or NULL (decline). */
typedef struct {
    PyObject *policy, *config, *limits, *metrics;
} Policy;

static int policy_of(PyObject *machine, Policy *p) {
    p->policy = SLOT(machine, m_policy);
    if (p->policy == NULL || Py_TYPE(p->policy) != policy_type) return 0;
    p->config = SLOT(p->policy, p_config);
    p->limits = SLOT(p->policy, p_limits);
    p->metrics = SLOT(p->policy, p_metrics);
    return p->config != NULL && Py_TYPE(p->config) == config_type && p->limits != NULL &&
           Py_TYPE(p->limits) == limiter_type && p->metrics != NULL &&
           Py_TYPE(p->metrics) == metrics_type;
}

/* metrics.count_request(cmd or "-", status) */
static int count_request(PyObject *metrics, PyObject *fields, PyObject *status) {
    PyObject *requests = SLOT(metrics, x_requests);
    PyObject *cmd = SLOT(fields, e_cmd);
    if (requests == NULL || !PyDict_CheckExact(requests) || cmd == NULL ||
        !PyUnicode_CheckExact(cmd)) {
        PyErr_SetString(PyExc_TypeError, "natsync.edge._steady: unexpected counters");
        return -1;
    }
    PyObject *name = PyUnicode_GET_LENGTH(cmd) == 0 ? dash
                     : PyUnicode_GET_LENGTH(cmd) <= longest_cmd ? cmd
                                                                : other;
    PyObject *key = PyTuple_Pack(2, name, status);
    if (key == NULL) return -1;
    PyObject *count = PyDict_GetItemWithError(requests, key); /* borrowed */
    PyObject *next = count != NULL ? plus(count, 1)
                     : PyErr_Occurred() ? NULL
                                        : Py_NewRef(one_int);
    int done = next != NULL ? PyDict_SetItem(requests, key, next) : -1;
    Py_XDECREF(next);
    Py_DECREF(key);
    return done;
}

static PyObject *declined(void) {
    Py_RETURN_NONE;
}

/* A call whose failure means "not the steady case" (the Python method will make it again and
 * raise or decide): its result, or NULL with no exception set. */
static PyObject *attempt(PyObject *callable, PyObject *const *args, size_t nargs) {
    PyObject *result = PyObject_Vectorcall(callable, args, nargs, NULL);
    if (result == NULL) PyErr_Clear();
    return result;
}

/* A head serialised: by C's half (natsync.edge._speedups), else by the Python half (the bytes,
 * or NULL with no exception set: decline). */
static PyObject *serialised(PyObject *c_half, PyObject *python_half, PyObject *const *args) {
    PyObject *result = attempt(c_half, args, 2);
    if (result == Py_None) {
        Py_DECREF(result);
        result = attempt(python_half, args, 2);
    }
    if (result != NULL && !PyBytes_CheckExact(result)) Py_CLEAR(result);
    return result;
}

/* -- the three moves */

static PyObject *client_data(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "client_data(machine, data, now)");
        return NULL;
    }
    PyObject *machine = args[0], *data = args[1], *now = args[2];
    PyObject *taken = NULL, *out = NULL, *held = NULL;
    Policy p;
    if (!configured || Py_TYPE(machine) != machine_type || !PyBytes_CheckExact(data) ||
        !PyFloat_CheckExact(now) || SLOT(machine, m_request) != req_head ||
        !policy_of(machine, &p))
        return declined();
    PyObject *buf = SLOT(machine, m_buf), *over_limit = SLOT(machine, m_over_limit);
    PyObject *ip = SLOT(machine, m_ip);
    if (buf == NULL || !PyBytes_CheckExact(buf) || PyBytes_GET_SIZE(buf) != 0 ||
        over_limit != Py_False || ip == NULL)
        return declined();
    PyObject *access_logged = SLOT(p.policy, p_access_logged);
    PyObject *targets = SLOT(p.policy, p_targets);
    PyObject *buckets = SLOT(p.limits, l_buckets);
    PyObject *rate = SLOT(p.limits, l_rate), *burst = SLOT(p.limits, l_burst);
    PyObject *max_body = SLOT(p.config, c_max_body);
    if (access_logged == NULL || targets == NULL || !PyDict_CheckExact(targets) ||
        buckets == NULL || !PyDict_CheckExact(buckets) || rate == NULL || burst == NULL ||
        !PyFloat_CheckExact(burst) || max_body == NULL)
        return declined();
    double rate_value;
    if (PyFloat_CheckExact(rate))
        rate_value = PyFloat_AS_DOUBLE(rate);
    else if (PyLong_CheckExact(rate)) {
        rate_value = PyLong_AsDouble(rate);
        if (rate_value == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return declined();
        }
    } else
        return declined();
    /* the access log on: the request's record needs the Python path */
    PyObject *logged = attempt(access_logged, NULL, 0);
    if (logged == NULL) return declined();
    int on = truth(logged);
    if (on != 0) {
        Py_DECREF(logged);
        if (on < 0) PyErr_Clear();
        return declined();
    }
    PyObject *take_args[2] = {data, max_body};
    taken = attempt(take_request, take_args, 2);
    if (taken == NULL || !PyTuple_CheckExact(taken) || PyTuple_GET_SIZE(taken) != 2) goto decline;
    PyObject *head = PyTuple_GET_ITEM(taken, 0), *body = PyTuple_GET_ITEM(taken, 1);
    if (Py_TYPE(head) != request_type || !PyBytes_CheckExact(body)) goto decline;
    PyObject *target = SLOT(head, q_target), *method = SLOT(head, q_method);
    PyObject *keep_alive = SLOT(head, q_keep_alive);
    if (target == NULL || method == NULL || keep_alive == NULL) goto decline;
    /* policy.judge(head, False): a target judged before, published */
    PyObject *known = PyDict_GetItemWithError(targets, target); /* borrowed */
    if (known == NULL || !PyTuple_CheckExact(known) || PyTuple_GET_SIZE(known) != 2) {
        PyErr_Clear();
        goto decline;
    }
    PyObject *fields = PyTuple_GET_ITEM(known, 0), *published = PyTuple_GET_ITEM(known, 1);
    PyObject *cmd = Py_TYPE(fields) == fields_type ? SLOT(fields, e_cmd) : NULL;
    if (cmd == NULL || !PyUnicode_CheckExact(cmd) || published != Py_True) goto decline;
    /* policy.limits.allow_request(ip, now): an address seen before, within its rate */
    PyObject *bucket = PyDict_GetItemWithError(buckets, ip); /* borrowed */
    if (bucket == NULL || !PyList_CheckExact(bucket) || PyList_GET_SIZE(bucket) != 2 ||
        !PyFloat_CheckExact(PyList_GET_ITEM(bucket, 0)) ||
        !PyFloat_CheckExact(PyList_GET_ITEM(bucket, 1))) {
        PyErr_Clear();
        goto decline;
    }
    double refilled = PyFloat_AS_DOUBLE(PyList_GET_ITEM(bucket, 0)) +
                      (PyFloat_AS_DOUBLE(now) - PyFloat_AS_DOUBLE(PyList_GET_ITEM(bucket, 1))) *
                          rate_value;
    double burst_value = PyFloat_AS_DOUBLE(burst);
    double tokens = refilled < burst_value ? refilled : burst_value; /* min(burst, refilled) */
    if (tokens < 1.0) goto decline;                                  /* the 503: Python's */
    int ping = is_ping(cmd);
    if (ping) {
        PyObject *count = SLOT(p.metrics, x_held_pings);
        if (count == NULL || (held = plus(count, 1)) == NULL) {
            PyErr_Clear();
            goto decline;
        }
    }
    PyObject *left_tokens = PyFloat_FromDouble(tokens - 1.0);
    out = PyList_New(1);
    if (left_tokens == NULL || out == NULL) {
        Py_XDECREF(left_tokens);
        goto failed;
    }
    /* from here on, the moves: none can fail but for memory */
    PyList_SetItem(bucket, 1, Py_NewRef(now));
    PyList_SetItem(bucket, 0, left_tokens);
    PUT(machine, m_head, Py_NewRef(head));
    PUT(machine, m_method, Py_NewRef(method));
    PUT(machine, m_logged, logged);
    logged = NULL;
    PUT(machine, m_fields, Py_NewRef(fields));
    PUT(machine, m_started, Py_NewRef(now));
    PUT(machine, m_status, PyLong_FromLong(0));
    PUT(machine, m_bytes_out, PyLong_FromLong(0));
    PUT(machine, m_keep_alive, Py_NewRef(keep_alive));
    PUT(machine, m_deadline, Py_NewRef(zero_float));
    if (ping) {
        PUT(machine, m_ping, Py_NewRef(Py_True));
        PUT(p.metrics, x_held_pings, held);
        held = NULL;
    }
    PUT(machine, m_buf, Py_NewRef(body));
    PUT(machine, m_request, Py_NewRef(req_connecting));
    PyList_SET_ITEM(out, 0, Py_NewRef(open_backend));
    Py_DECREF(taken);
    return out;
decline:
    Py_XDECREF(taken);
    Py_XDECREF(logged);
    Py_XDECREF(held);
    return declined();
failed:
    Py_XDECREF(taken);
    Py_XDECREF(logged);
    Py_XDECREF(out);
    Py_XDECREF(held);
    return NULL;
}

/* The machine waits for the phone again: its deadline *timeout* from now (a slot of the
 * config at *timeout_offset*), and its reading resumed when it was paused (RESUME_CLIENT added
 * to *items*). 0, or -1 (raised). */
static int await_phone(PyObject *machine, PyObject *config, Py_ssize_t timeout_offset,
                       PyObject *now, int paused, PyObject **items, Py_ssize_t *n) {
    PyObject *timeout = SLOT(config, timeout_offset);
    if (timeout == NULL) {
        PyErr_SetString(PyExc_AttributeError, "natsync.edge._steady: a timeout is not set");
        return -1;
    }
    if (put_slot(machine, m_deadline, PyNumber_Add(now, timeout)) < 0) return -1;
    if (paused) {
        put_slot(machine, m_paused, Py_NewRef(Py_False));
        items[(*n)++] = Py_NewRef(resume_client);
    }
    return 0;
}

/* A list of the commands in *items* (new references; a NULL one fails the whole). */
static PyObject *commands(PyObject **items, Py_ssize_t n) {
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (out == NULL || items[i] == NULL) {
            for (Py_ssize_t j = i; j < n; j++) Py_XDECREF(items[j]);
            Py_XDECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, items[i]);
    }
    return out;
}

static PyObject *backend_ready(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "backend_ready(machine, now)");
        return NULL;
    }
    PyObject *machine = args[0], *now = args[1];
    Policy p;
    if (!configured || Py_TYPE(machine) != machine_type || !PyFloat_CheckExact(now) ||
        SLOT(machine, m_request) != req_connecting || SLOT(machine, m_response) != resp_none ||
        !policy_of(machine, &p))
        return declined();
    PyObject *head = SLOT(machine, m_head), *body = SLOT(machine, m_buf);
    PyObject *ip = SLOT(machine, m_ip), *logged = SLOT(machine, m_logged);
    PyObject *paused = SLOT(machine, m_paused);
    if (head == NULL || Py_TYPE(head) != request_type || body == NULL ||
        !PyBytes_CheckExact(body) || ip == NULL || logged == NULL || paused == NULL)
        return declined();
    PyObject *framing = SLOT(head, q_framing), *length = SLOT(head, q_length);
    if (framing == NULL || length == NULL || !PyLong_CheckExact(length) ||
        (framing != f_none && framing != f_length))
        return declined(); /* chunked: the Python path's scanner */
    Py_ssize_t left = PyLong_AsSsize_t(length);
    if (left < 0) {
        PyErr_Clear();
        return declined();
    }
    int is_logged = truth(logged), is_paused = truth(paused);
    if (is_logged < 0 || is_paused < 0) {
        PyErr_Clear();
        return declined();
    }
    PyObject *serialise_args[2] = {head, ip};
    PyObject *request = serialised(c_backend_request, backend_request, serialise_args);
    if (request == NULL) return declined();
    Py_ssize_t size = PyBytes_GET_SIZE(body);
    Py_INCREF(body); /* the machine's buf is replaced below */
    PyObject *items[2] = {NULL, NULL};
    Py_ssize_t n = 0;
    PUT(machine, m_attached, Py_NewRef(Py_True));
    PUT(machine, m_response, Py_NewRef(resp_head));
    PUT(machine, m_resp_buf, Py_NewRef(empty_bytes));
    PUT(machine, m_response_head, Py_NewRef(Py_None));
    PUT(machine, m_resp_chunks, Py_NewRef(Py_None));
    PUT(machine, m_left, Py_NewRef(length));
    PUT(machine, m_chunks, Py_NewRef(Py_None));
    PUT(machine, m_buf, Py_NewRef(empty_bytes));
    PUT(head, q_section, Py_NewRef(empty_bytes));
    if (framing == f_none && size == 0) { /* the usual GET, OPTIONS or Ping: sent whole */
        items[n++] = command(to_backend_type, s_backend_data, Py_NewRef(request));
        PUT(machine, m_request, Py_NewRef(req_sent));
        if (!is_logged) PUT(machine, m_head, Py_NewRef(Py_None));
    } else {
        /* _body(body, request): what of the body is the request's, sent after its head */
        Py_ssize_t used = framing == f_length ? (left < size ? left : size) : 0;
        int done = framing == f_length ? left - used == 0 : 1;
        if (framing == f_length) PUT(machine, m_left, PyLong_FromSsize_t(left - used));
        items[n++] = command(to_backend_type, s_backend_data,
                             concat(request, PyBytes_AS_STRING(body), used));
        if (done) {
            PUT(machine, m_deadline, Py_NewRef(zero_float));
            PUT(machine, m_request, Py_NewRef(req_sent));
            if (!is_logged) PUT(machine, m_head, Py_NewRef(Py_None));
            if (used < size) { /* what follows the body: a pipelined request, held for later */
                PUT(machine, m_buf, PyBytes_FromStringAndSize(PyBytes_AS_STRING(body) + used,
                                                              size - used));
                if (!is_paused) {
                    PUT(machine, m_paused, Py_NewRef(Py_True));
                    items[n++] = Py_NewRef(pause_client);
                }
            }
        } else { /* more to come: within body_timeout of this byte */
            PUT(machine, m_request, Py_NewRef(req_body));
            if (await_phone(machine, p.config, c_body_timeout, now, is_paused, items, &n) < 0)
                goto failed;
        }
    }
    Py_DECREF(request);
    Py_DECREF(body);
    return commands(items, n);
failed:
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(items[i]);
    Py_DECREF(request);
    Py_DECREF(body);
    return NULL;
}

static PyObject *backend_data(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "backend_data(machine, data, now)");
        return NULL;
    }
    PyObject *machine = args[0], *data = args[1], *now = args[2];
    PyObject *taken = NULL, *held = NULL, *items[4] = {NULL, NULL, NULL, NULL};
    Py_ssize_t n = 0;
    Policy p;
    if (!configured || Py_TYPE(machine) != machine_type) return declined();
    PyObject *request_state = SLOT(machine, m_request);
    if (!PyBytes_CheckExact(data) ||
        !PyFloat_CheckExact(now) || SLOT(machine, m_response) != resp_head ||
        SLOT(machine, m_response_head) != Py_None ||
        (request_state != req_sent && request_state != req_body) || !policy_of(machine, &p))
        return declined();
    PyObject *resp_buf = SLOT(machine, m_resp_buf), *buf = SLOT(machine, m_buf);
    PyObject *method = SLOT(machine, m_method), *logged = SLOT(machine, m_logged);
    PyObject *keep_alive = SLOT(machine, m_keep_alive), *fields = SLOT(machine, m_fields);
    PyObject *attached = SLOT(machine, m_attached), *ping = SLOT(machine, m_ping);
    PyObject *paused = SLOT(machine, m_paused), *bytes_out = SLOT(machine, m_bytes_out);
    if (resp_buf == NULL || !PyBytes_CheckExact(resp_buf) || PyBytes_GET_SIZE(resp_buf) != 0 ||
        buf == NULL || !PyBytes_CheckExact(buf) || PyBytes_GET_SIZE(buf) != 0 ||
        method == NULL || logged != Py_False || keep_alive == NULL || fields == NULL ||
        Py_TYPE(fields) != fields_type || attached == NULL || ping == NULL || paused == NULL ||
        bytes_out == NULL)
        return declined();
    PyObject *take_args[2] = {data, method};
    taken = attempt(take_response, take_args, 2);
    if (taken == NULL) return declined();
    if (!PyTuple_CheckExact(taken) || PyTuple_GET_SIZE(taken) != 2) goto decline;
    PyObject *head = PyTuple_GET_ITEM(taken, 0), *rest = PyTuple_GET_ITEM(taken, 1);
    if (Py_TYPE(head) != response_type || !PyBytes_CheckExact(rest)) goto decline;
    PyObject *status = SLOT(head, r_status), *framing = SLOT(head, r_framing);
    PyObject *length = SLOT(head, r_length), *reusable = SLOT(head, r_keep_alive);
    if (status == NULL || !PyLong_CheckExact(status) || framing != f_length || length == NULL ||
        !PyLong_CheckExact(length) || reusable == NULL)
        goto decline;
    long code = PyLong_AsLong(status);
    Py_ssize_t expected = PyLong_AsSsize_t(length);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        goto decline;
    }
    /* an interim answer, or a body not wholly in this read: the Python path */
    if (code < 200 || expected != PyBytes_GET_SIZE(rest)) goto decline;
    int kept = truth(keep_alive), reuse = truth(reusable), is_attached = truth(attached);
    int was_ping = truth(ping), is_paused = truth(paused);
    if (kept < 0 || reuse < 0 || is_attached < 0 || was_ping < 0 || is_paused < 0) {
        PyErr_Clear();
        goto decline;
    }
    PyObject *answer_keep_alive = kept ? reusable : keep_alive; /* self.keep_alive and head's */
    int keep = kept && reuse;
    PyObject *serialise_args[2] = {head, keep ? Py_True : Py_False};
    PyObject *answer_head = serialised(c_client_response, client_response, serialise_args);
    if (answer_head == NULL) goto decline;
    PyObject *answer = concat(answer_head, PyBytes_AS_STRING(rest), PyBytes_GET_SIZE(rest));
    Py_DECREF(answer_head);
    if (answer == NULL) goto failed;
    if (was_ping) {
        PyObject *count = SLOT(p.metrics, x_held_pings);
        held = count != NULL ? plus(count, -1) : NULL;
        if (held == NULL) {
            PyErr_Clear();
            Py_DECREF(answer);
            goto decline;
        }
    }
    /* the moves (none fails but for memory) */
    int request_sent = request_state == req_sent;
    PUT(machine, m_resp_buf, Py_NewRef(empty_bytes));
    PUT(machine, m_status, Py_NewRef(status));
    PUT(machine, m_keep_alive, Py_NewRef(answer_keep_alive));
    PUT(machine, m_bytes_out, plus(bytes_out, PyBytes_GET_SIZE(answer)));
    items[n++] = command(to_client_type, s_client_data, answer);
    items[n++] = Py_NewRef(backend_answered);
    /* _response_ended(head.keep_alive) */
    PUT(machine, m_response_head, Py_NewRef(Py_None));
    PUT(machine, m_response, Py_NewRef(resp_none));
    if (is_attached) {
        PUT(machine, m_attached, Py_NewRef(Py_False));
        items[n++] = Py_NewRef(reuse && request_sent ? release_backend : drop_backend);
    }
    if (was_ping) {
        PUT(machine, m_ping, Py_NewRef(Py_False));
        PUT(p.metrics, x_held_pings, held);
        held = NULL;
    }
    if (count_request(p.metrics, fields, status) < 0) goto failed;
    if (!request_sent) PUT(machine, m_keep_alive, Py_NewRef(Py_False));
    if (!request_sent || !keep) {
        PUT(machine, m_request, Py_NewRef(req_closed));
        items[n++] = Py_NewRef(close_client);
    } else { /* _ready_for_next: nothing held, so the idle deadline */
        PUT(machine, m_request, Py_NewRef(req_head));
        PUT(machine, m_head, Py_NewRef(Py_None));
        if (await_phone(machine, p.config, c_client_idle_timeout, now, is_paused, items, &n) < 0)
            goto failed;
    }
    Py_DECREF(taken);
    return commands(items, n);
failed:
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(items[i]);
    Py_XDECREF(held);
    Py_DECREF(taken);
    return NULL;
decline:
    Py_DECREF(taken);
    return declined();
}

/* -- the shell's steady path (natsync.edge.proxy): a phone's read and a server's read
 *
 * ClientConn.buffer_updated and BackendConn.buffer_updated call these. Each does what the
 * Python method does — the bytes, the clock, the machine's move, then the commands — with the
 * usual commands carried out here: [OPEN_BACKEND] with an idle pooled connection to the one
 * server that is usable (taken, attached, the request sent), and the usual answer's
 * [SendToClient, BACKEND_ANSWERED, RELEASE_BACKEND] (sent, the server's failures forgotten, the
 * connection back in its pool when it may go). At the first thing that is not the usual, the
 * rest is the Python shell's (Edge.acquire, ClientConn.backend_ready, ClientConn.run,
 * Pool.release, BackendConn.drop): called from here before anything of that step is done. */

static PyTypeObject *client_conn_type, *backend_conn_type, *backend_machine_type, *pool_type,
    *upstream_type, *server_type, *tls_transport_type;
static PyObject *proxy_module, *readable_fallback, *poll_readable, *b_idle, *b_busy,
    *pool_idle, *read_view_bytes, *tlsio_module, *tlsio_write, *tlsio_read, *tlsio_pending,
    *python_read_ready, *minus_one;
static PyObject *s_clock, *s_single, *s_pool, *s_write, *s_acquire, *s_backend_ready, *s_run,
    *s_release, *s_drop, *n_client_data, *n_backend_data, *s_is_closing, *s_unwritten,
    *s_fatal, *s_get_buffer, *s_buffer_updated, *s_eof, *s_read_failed, *s_add_writer,
    *s_read_wants_write;
static Py_ssize_t cc_backend, cc_edge, cc_machine, cc_transport;
static Py_ssize_t bc_client, bc_fd, bc_machine, bc_transport, bc_upstream;
static Py_ssize_t bm_counted, bm_deadline, bm_read_timeout, bm_remembered, bm_server, bm_state;
static Py_ssize_t pl_config, pl_upstreams, up_pool, up_server, sv_address, sv_up, sv_fails,
    sv_active, c_pool_size, tt_state, tt_wsize, tt_c, tt_raw, tt_write_wants_read, tt_paused,
    tt_buffered, tt_protocol, tt_read_wants_write;
static int shell_configured = 0;

static PyMethodDef client_read_def, backend_read_def, read_ready_def; /* below, with the reads */

static PyObject *configure_shell(PyObject *module, PyObject *args) {
    PyObject *types, *values;
    if (!PyArg_ParseTuple(args, "O!O!", &PyTuple_Type, &types, &PyTuple_Type, &values))
        return NULL;
    PyTypeObject **type_slots[] = {&client_conn_type, &backend_conn_type, &backend_machine_type,
                                   &pool_type,        &upstream_type,     &server_type,
                                   &tls_transport_type};
    PyObject **value_slots[] = {&proxy_module,   &readable_fallback, &poll_readable,
                                &b_idle,         &b_busy,            &pool_idle,
                                &read_view_bytes, &tlsio_module,     &python_read_ready};
    if (PyTuple_GET_SIZE(types) != 7 || PyTuple_GET_SIZE(values) != 9) {
        PyErr_SetString(PyExc_ValueError, "configure_shell: 7 classes and 9 values");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 7; i++)
        if (!PyType_Check(PyTuple_GET_ITEM(types, i))) {
            PyErr_SetString(PyExc_TypeError, "configure_shell: the first group holds classes");
            return NULL;
        }
    for (Py_ssize_t i = 0; i < 7; i++)
        Py_XSETREF(*type_slots[i], (PyTypeObject *)Py_NewRef(PyTuple_GET_ITEM(types, i)));
    for (Py_ssize_t i = 0; i < 9; i++)
        Py_XSETREF(*value_slots[i], Py_NewRef(PyTuple_GET_ITEM(values, i)));
    /* the transport's C reads and writes (natsync.edge._tlsio), when the transport has them */
    Py_CLEAR(tlsio_write);
    Py_CLEAR(tlsio_read);
    Py_CLEAR(tlsio_pending);
    if (tlsio_module != Py_None &&
        ((tlsio_write = PyObject_GetAttrString(tlsio_module, "write")) == NULL ||
         (tlsio_read = PyObject_GetAttrString(tlsio_module, "read")) == NULL ||
         (tlsio_pending = PyObject_GetAttrString(tlsio_module, "pending")) == NULL))
        return NULL;
    shell_configured = 0;
    const SlotName client_names[] = {{"backend", &cc_backend}, {"edge", &cc_edge},
                                     {"machine", &cc_machine}, {"transport", &cc_transport},
                                     {NULL, NULL}};
    const SlotName backend_names[] = {{"client", &bc_client}, {"fd", &bc_fd},
                                      {"machine", &bc_machine}, {"transport", &bc_transport},
                                      {"upstream", &bc_upstream}, {NULL, NULL}};
    const SlotName machine_names[] = {
        {"counted", &bm_counted}, {"deadline", &bm_deadline}, {"read_timeout", &bm_read_timeout},
        {"remembered", &bm_remembered}, {"server", &bm_server}, {"state", &bm_state},
        {NULL, NULL}};
    const SlotName pool_names[] = {{"config", &pl_config}, {"upstreams", &pl_upstreams},
                                   {NULL, NULL}};
    const SlotName upstream_names[] = {{"pool", &up_pool}, {"server", &up_server}, {NULL, NULL}};
    const SlotName server_names[] = {{"address", &sv_address}, {"up", &sv_up},
                                     {"fails", &sv_fails}, {"active", &sv_active},
                                     {NULL, NULL}};
    const SlotName config_names[] = {{"pool_size", &c_pool_size}, {NULL, NULL}};
    const SlotName transport_names[] = {
        {"_state", &tt_state},       {"_wsize", &tt_wsize},
        {"_c", &tt_c},               {"_raw", &tt_raw},
        {"_paused", &tt_paused},     {"_write_wants_read", &tt_write_wants_read},
        {"_buffered", &tt_buffered}, {"_protocol", &tt_protocol},
        {"_read_wants_write", &tt_read_wants_write}, {NULL, NULL}};
    if (config_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_shell: configure() first");
        return NULL;
    }
    if (offsets(client_conn_type, client_names) < 0 ||
        offsets(backend_conn_type, backend_names) < 0 ||
        offsets(backend_machine_type, machine_names) < 0 || offsets(pool_type, pool_names) < 0 ||
        offsets(upstream_type, upstream_names) < 0 || offsets(server_type, server_names) < 0 ||
        offsets(config_type, config_names) < 0 ||
        offsets(tls_transport_type, transport_names) < 0)
        return NULL;
    PyObject *client_method = PyDescr_NewMethod(client_conn_type, &client_read_def);
    PyObject *backend_method =
        client_method != NULL ? PyDescr_NewMethod(backend_conn_type, &backend_read_def) : NULL;
    PyObject *transport_method =
        backend_method != NULL ? PyDescr_NewMethod(tls_transport_type, &read_ready_def) : NULL;
    PyObject *all = transport_method != NULL
                        ? PyTuple_Pack(3, client_method, backend_method, transport_method)
                        : NULL;
    Py_XDECREF(client_method);
    Py_XDECREF(backend_method);
    Py_XDECREF(transport_method);
    if (all != NULL) shell_configured = 1;
    return all;
}

/* A method of *obj* called with up to one argument: its result (new), or NULL (raised). */
static PyObject *call_method(PyObject *obj, PyObject *name, PyObject *arg) {
    PyObject *args[2] = {obj, arg};
    return PyObject_VectorcallMethod(name, args, (arg != NULL ? 2 : 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

static PyObject *call_method2(PyObject *obj, PyObject *name, PyObject *a, PyObject *b) {
    PyObject *args[3] = {obj, a, b};
    return PyObject_VectorcallMethod(name, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* A Python call's result dropped: 0, or -1 (raised). */
static int done_with(PyObject *result) {
    if (result == NULL) return -1;
    Py_DECREF(result);
    return 0;
}

/* The shell's clock (proxy.clock, looked up per call: a test may set it). */
static PyObject *shell_now(void) {
    PyObject *clock = PyObject_GetAttr(proxy_module, s_clock);
    if (clock == NULL) return NULL;
    PyObject *now = PyObject_CallNoArgs(clock);
    Py_DECREF(clock);
    return now;
}

/* The first nbytes of the proxy's read buffer, as bytes (read_bytes). */
static PyObject *read_bytes(PyObject *nbytes) {
    PyObject *args[1] = {nbytes};
    return PyObject_Vectorcall(read_view_bytes, args, 1, NULL);
}

/* The transport is open: TLSTransport's _state, else its is_closing(). 1, 0, or -1 (raised). */
static int transport_open(PyObject *transport) {
    if (Py_TYPE(transport) == tls_transport_type) {
        PyObject *state = SLOT(transport, tt_state);
        if (state == NULL) return 0;
        long value = PyLong_AsLong(state);
        if (value == -1 && PyErr_Occurred()) return -1;
        return value == 0;
    }
    PyObject *closing = call_method(transport, s_is_closing, NULL);
    if (closing == NULL) return -1;
    int is = PyObject_IsTrue(closing);
    Py_DECREF(closing);
    return is < 0 ? -1 : !is;
}

/* transport.write(data): TLSTransport's usual write (open, nothing buffered) by its C write
 * here, what did not go handed to its _unwritten and a failure to its _fatal, as its write
 * does; any other transport, or any other case, by its write. 0, or -1 (raised). */
static int send_bytes(PyObject *transport, PyObject *data) {
    if (Py_TYPE(transport) != tls_transport_type || tlsio_write == NULL ||
        !PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) == 0)
        return done_with(call_method(transport, s_write, data));
    PyObject *state = SLOT(transport, tt_state), *wsize = SLOT(transport, tt_wsize);
    PyObject *raw = SLOT(transport, tt_raw);
    if (state == NULL || wsize == NULL || raw == NULL || SLOT(transport, tt_c) != tlsio_module ||
        !PyLong_CheckExact(state) || !PyLong_CheckExact(wsize) || PyLong_AsLong(state) != 0 ||
        PyLong_AsLong(wsize) != 0) {
        if (PyErr_Occurred()) return -1;
        return done_with(call_method(transport, s_write, data));
    }
    PyObject *args[2] = {raw, data};
    PyObject *done = PyObject_Vectorcall(tlsio_write, args, 2, NULL);
    if (done == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_OSError)) return -1;
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL) PyException_SetTraceback(value, traceback);
        int result = done_with(call_method(transport, s_fatal, value));
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return result;
    }
    long code = PyLong_AsLong(done);
    if (code == 1) {
        Py_DECREF(done);
        return 0;
    }
    int result = code == -1 && PyErr_Occurred() ? -1
                                                 : done_with(call_method2(transport, s_unwritten,
                                                                          data, done));
    Py_DECREF(done);
    return result;
}

/* The one command [SendToBackend(data)] or [SendToClient(data)] of *type*: its data, or NULL. */
static PyObject *only_send(PyObject *out, PyTypeObject *type) {
    if (!PyList_CheckExact(out) || PyList_GET_SIZE(out) != 1) return NULL;
    PyObject *cmd = PyList_GET_ITEM(out, 0);
    return Py_TYPE(cmd) == type ? SLOT(cmd, type == to_backend_type ? s_backend_data
                                                                     : s_client_data)
                                : NULL;
}

/* ClientConn.run(out) for what the machine decided after a server connection was attached:
 * the request sent when it is [SendToBackend], else the Python run. */
static int run_sent(PyObject *conn, PyObject *out) {
    PyObject *data = only_send(out, to_backend_type);
    if (data == NULL) return done_with(call_method(conn, s_run, out));
    PyObject *backend = SLOT(conn, cc_backend);
    if (backend == NULL || backend == Py_None || Py_TYPE(backend) != backend_conn_type)
        return done_with(call_method(conn, s_run, out));
    PyObject *transport = SLOT(backend, bc_transport);
    if (transport == NULL || transport == Py_None) return 0;
    return send_bytes(transport, data);
}

/* ClientConn.backend_ready(backend) with *now*: attach it (BackendMachine.attach) and send. */
static int ready(PyObject *conn, PyObject *backend, PyObject *now) {
    PyObject *machine = SLOT(conn, cc_machine), *transport = SLOT(conn, cc_transport);
    PyObject *bm = SLOT(backend, bc_machine);
    PyObject *server = bm != NULL && Py_TYPE(bm) == backend_machine_type ? SLOT(bm, bm_server)
                                                                         : NULL;
    PyObject *counted = server != NULL ? SLOT(bm, bm_counted) : NULL;
    PyObject *read_timeout = counted != NULL ? SLOT(bm, bm_read_timeout) : NULL;
    if (machine == NULL || Py_TYPE(machine) != machine_type ||
        SLOT(machine, m_request) != req_connecting || transport == NULL || transport == Py_None ||
        read_timeout == NULL || SLOT(bm, bm_state) != b_idle || Py_TYPE(server) != server_type ||
        (counted != Py_False && counted != Py_True))
        return done_with(call_method(conn, s_backend_ready, backend));
    PyObject *deadline = PyNumber_Add(now, read_timeout);
    PyObject *active = counted == Py_False ? plus(SLOT(server, sv_active), 1) : NULL;
    if (deadline == NULL || (counted == Py_False && active == NULL)) {
        Py_XDECREF(deadline);
        return -1;
    }
    put_slot(conn, cc_backend, Py_NewRef(backend));
    put_slot(backend, bc_client, Py_NewRef(conn));
    put_slot(bm, bm_state, Py_NewRef(b_busy));
    if (active != NULL) {
        put_slot(bm, bm_counted, Py_NewRef(Py_True));
        put_slot(server, sv_active, active);
    }
    put_slot(bm, bm_deadline, deadline);
    PyObject *args[2] = {machine, now};
    PyObject *out = backend_ready(NULL, args, 2);
    if (out == Py_None) {
        Py_DECREF(out);
        out = call_method(machine, s_backend_ready, now);
    }
    if (out == NULL) return -1;
    int result = run_sent(conn, out);
    Py_DECREF(out);
    return result;
}

/* Edge.acquire(conn) with *now*: an idle pooled connection to the one server, attached. */
static int acquire(PyObject *conn, PyObject *now) {
    PyObject *edge = SLOT(conn, cc_edge);
    PyObject *single = edge != NULL ? PyObject_GetAttr(edge, s_single) : NULL;
    PyObject *pool = single != NULL ? PyObject_GetAttr(edge, s_pool) : NULL;
    PyObject *backend = NULL, *idle = NULL;
    int python = 1;
    if (pool == NULL) PyErr_Clear();
    if (pool != NULL && Py_TYPE(pool) == pool_type && Py_TYPE(single) == server_type) {
        PyObject *upstreams = SLOT(pool, pl_upstreams), *address = SLOT(single, sv_address);
        PyObject *upstream = upstreams != NULL && PyDict_CheckExact(upstreams) && address != NULL
                                 ? PyDict_GetItemWithError(upstreams, address)
                                 : NULL;
        idle = upstream != NULL && Py_TYPE(upstream) == upstream_type ? SLOT(upstream, up_pool)
                                                                      : NULL;
        Py_ssize_t n = idle != NULL && PyList_CheckExact(idle) ? PyList_GET_SIZE(idle) : 0;
        backend = n > 0 ? PyList_GET_ITEM(idle, n - 1) : NULL;
        if (backend != NULL && Py_TYPE(backend) == backend_conn_type) {
            PyObject *transport = SLOT(backend, bc_transport), *bm = SLOT(backend, bc_machine);
            PyObject *fd = SLOT(backend, bc_fd);
            PyObject *deadline = bm != NULL && Py_TYPE(bm) == backend_machine_type
                                     ? SLOT(bm, bm_deadline)
                                     : NULL;
            int usable = transport != NULL && transport != Py_None && deadline != NULL &&
                         PyFloat_CheckExact(deadline) && fd != NULL && PyLong_CheckExact(fd) &&
                         SLOT(bm, bm_state) == b_idle;
            usable = usable && transport_open(transport) == 1;
            double when = usable ? PyFloat_AS_DOUBLE(deadline) : 0.0;
            usable = usable && !(when != 0.0 && PyFloat_AS_DOUBLE(now) > when);
            if (usable) { /* readable: closed or untrustworthy (Pool.take's poll) */
                long number = PyLong_AsLong(fd);
                PyObject *readable = number >= 0 ? PyObject_CallOneArg(poll_readable, fd)
                                                 : PyObject_CallOneArg(readable_fallback,
                                                                       transport);
                usable = readable == Py_False;
                Py_XDECREF(readable);
            }
            python = !usable;
        }
    }
    if (PyErr_Occurred()) PyErr_Clear(); /* what failed is the Python path's to meet again */
    int result;
    if (python)
        result = done_with(call_method(edge, s_acquire, conn));
    else {
        Py_INCREF(backend);
        result = PyList_SetSlice(idle, PyList_GET_SIZE(idle) - 1, PyList_GET_SIZE(idle), NULL);
        if (result == 0) result = ready(conn, backend, now);
        Py_DECREF(backend);
    }
    Py_XDECREF(single);
    Py_XDECREF(pool);
    return result;
}

/* client_read(conn, nbytes): ClientConn.buffer_updated. */
static PyObject *client_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !shell_configured || Py_TYPE(args[0]) != client_conn_type) {
        /* the class it was configured with only (natsync.edge.proxy has no subclasses) */
        PyErr_SetString(PyExc_TypeError, "client_read(conn: ClientConn, nbytes: int)");
        return NULL;
    }
    PyObject *conn = args[0];
    PyObject *machine = SLOT(conn, cc_machine);
    PyObject *data = read_bytes(args[1]);
    PyObject *now = data != NULL ? shell_now() : NULL;
    PyObject *out = NULL;
    int result = -1;
    if (now == NULL || machine == NULL) goto end;
    PyObject *move_args[3] = {machine, data, now};
    out = client_data(NULL, move_args, 3);
    if (out == Py_None) {
        Py_DECREF(out);
        out = call_method2(machine, n_client_data, data, now);
    }
    if (out == NULL) goto end;
    if (PyList_CheckExact(out) && PyList_GET_SIZE(out) == 1 &&
        PyList_GET_ITEM(out, 0) == open_backend)
        result = acquire(conn, now);
    else
        result = done_with(call_method(conn, s_run, out));
end:
    Py_XDECREF(data);
    Py_XDECREF(now);
    Py_XDECREF(out);
    if (result < 0) return NULL;
    Py_RETURN_NONE;
}

/* Pool.release(backend, now) when it goes back to its pool as it is, else the Python one. */
static int release(PyObject *pool, PyObject *backend, PyObject *now) {
    PyObject *transport = SLOT(backend, bc_transport), *bm = SLOT(backend, bc_machine);
    PyObject *upstream = SLOT(backend, bc_upstream);
    int fast = transport != NULL && transport != Py_None && bm != NULL &&
               Py_TYPE(bm) == backend_machine_type && SLOT(bm, bm_remembered) == Py_True &&
               SLOT(bm, bm_state) == b_busy && upstream != NULL &&
               Py_TYPE(upstream) == upstream_type && Py_TYPE(pool) == pool_type;
    PyObject *idle = fast ? SLOT(upstream, up_pool) : NULL;
    PyObject *server = fast ? SLOT(bm, bm_server) : NULL;
    PyObject *config = fast ? SLOT(pool, pl_config) : NULL;
    PyObject *size = config != NULL && Py_TYPE(config) == config_type
                         ? SLOT(config, c_pool_size)
                         : NULL;
    fast = fast && idle != NULL && PyList_CheckExact(idle) && server != NULL &&
           Py_TYPE(server) == server_type && SLOT(server, sv_up) == Py_True && size != NULL &&
           PyLong_CheckExact(size) && (SLOT(bm, bm_counted) == Py_True ||
                                       SLOT(bm, bm_counted) == Py_False);
    if (fast) {
        long room = PyLong_AsLong(size);
        if (room == -1 && PyErr_Occurred()) return -1;
        fast = PyList_GET_SIZE(idle) < room && transport_open(transport) == 1;
        if (PyErr_Occurred()) return -1;
    }
    if (!fast) return done_with(call_method2(pool, s_release, backend, now));
    PyObject *deadline = PyNumber_Add(now, pool_idle);
    PyObject *active = SLOT(bm, bm_counted) == Py_True ? plus(SLOT(server, sv_active), -1)
                                                        : NULL;
    if (deadline == NULL || (SLOT(bm, bm_counted) == Py_True && active == NULL)) {
        Py_XDECREF(deadline);
        return -1;
    }
    put_slot(backend, bc_client, Py_NewRef(Py_None));
    if (active != NULL) {
        put_slot(bm, bm_counted, Py_NewRef(Py_False));
        put_slot(server, sv_active, active);
    }
    put_slot(bm, bm_state, Py_NewRef(b_idle));
    put_slot(bm, bm_deadline, deadline);
    return PyList_Append(idle, backend);
}

/* ClientConn.run for the usual answer: [SendToClient(data), BACKEND_ANSWERED,
 * RELEASE_BACKEND] (1: carried out; 0: not that answer; -1: raised). */
static int run_answer(PyObject *conn, PyObject *out, PyObject *backend_now) {
    if (!PyList_CheckExact(out) || PyList_GET_SIZE(out) != 3 ||
        Py_TYPE(PyList_GET_ITEM(out, 0)) != to_client_type ||
        PyList_GET_ITEM(out, 1) != backend_answered || PyList_GET_ITEM(out, 2) != release_backend)
        return 0;
    PyObject *data = SLOT(PyList_GET_ITEM(out, 0), s_client_data);
    PyObject *transport = SLOT(conn, cc_transport);
    if (data == NULL) return 0;
    if (transport != NULL && transport != Py_None && send_bytes(transport, data) < 0) return -1;
    PyObject *backend = SLOT(conn, cc_backend);
    if (backend != NULL && backend != Py_None) { /* BackendAnswered: its failures are past */
        PyObject *upstream = Py_TYPE(backend) == backend_conn_type ? SLOT(backend, bc_upstream)
                                                                   : NULL;
        PyObject *server = upstream != NULL && Py_TYPE(upstream) == upstream_type
                               ? SLOT(upstream, up_server)
                               : NULL;
        if (server == NULL || Py_TYPE(server) != server_type) {
            PyErr_SetString(PyExc_TypeError, "natsync.edge._steady: unexpected server");
            return -1;
        }
        PyObject *zero = PyLong_FromLong(0);
        if (put_slot(server, sv_fails, zero) < 0) return -1;
    }
    backend = SLOT(conn, cc_backend);
    if (backend == NULL || backend == Py_None) return 1;
    Py_INCREF(backend);
    put_slot(conn, cc_backend, Py_NewRef(Py_None));
    PyObject *edge = SLOT(conn, cc_edge);
    PyObject *pool = edge != NULL ? PyObject_GetAttr(edge, s_pool) : NULL;
    PyObject *now = pool != NULL ? shell_now() : NULL;
    int result = now != NULL ? release(pool, backend, now) : -1;
    Py_XDECREF(now);
    Py_XDECREF(pool);
    Py_DECREF(backend);
    return result < 0 ? -1 : 1;
}

/* backend_read(backend, nbytes): BackendConn.buffer_updated. */
static PyObject *backend_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !shell_configured || Py_TYPE(args[0]) != backend_conn_type) {
        /* the class it was configured with only (natsync.edge.proxy has no subclasses) */
        PyErr_SetString(PyExc_TypeError, "backend_read(backend: BackendConn, nbytes: int)");
        return NULL;
    }
    PyObject *backend = args[0];
    PyObject *data = read_bytes(args[1]);
    PyObject *now = data != NULL ? shell_now() : NULL;
    PyObject *out = NULL;
    int result = -1;
    if (now == NULL) goto end;
    PyObject *conn = SLOT(backend, bc_client), *bm = SLOT(backend, bc_machine);
    PyObject *read_timeout = bm != NULL && Py_TYPE(bm) == backend_machine_type
                                 ? SLOT(bm, bm_read_timeout)
                                 : NULL;
    /* no exchange on it (BackendMachine.received is False): bytes not to be trusted */
    if (conn == NULL || conn == Py_None || read_timeout == NULL || SLOT(bm, bm_state) != b_busy) {
        if (conn != NULL && conn != Py_None && read_timeout == NULL) {
            PyErr_SetString(PyExc_TypeError, "natsync.edge._steady: unexpected server machine");
            goto end;
        }
        result = done_with(call_method(backend, s_drop, NULL));
        goto end;
    }
    if (put_slot(bm, bm_deadline, PyNumber_Add(now, read_timeout)) < 0) goto end;
    Py_INCREF(conn);
    PyObject *machine = Py_TYPE(conn) == client_conn_type ? Py_XNewRef(SLOT(conn, cc_machine))
                                                          : PyObject_GetAttrString(conn, "machine");
    if (machine == NULL) {
        Py_DECREF(conn);
        goto end;
    }
    PyObject *move_args[3] = {machine, data, now};
    out = backend_data(NULL, move_args, 3);
    if (out == Py_None) {
        Py_DECREF(out);
        out = call_method2(machine, n_backend_data, data, now);
    }
    if (out != NULL) {
        result = Py_TYPE(conn) == client_conn_type ? run_answer(conn, out, now) : 0;
        if (result == 0) result = done_with(call_method(conn, s_run, out));
    }
    Py_DECREF(machine);
    Py_DECREF(conn);
end:
    Py_XDECREF(data);
    Py_XDECREF(now);
    Py_XDECREF(out);
    if (result < 0) return NULL;
    Py_RETURN_NONE;
}

/* The two as methods of ClientConn and BackendConn (their buffer_updated: the transport calls
 * them per read; a method descriptor is called without a Python frame or a bound method). */
/* TLSTransport._read_ready: the usual read (open, not paused, nothing waiting on a write, a
 * buffered protocol, _tlsio there) here — into the protocol's buffer, to its buffer_updated,
 * again while OpenSSL holds more — as the Python method does, what raised handed to the
 * transport's _read_failed, the end of the stream to its _eof; any other case the Python
 * method's (python_read_ready). */
static PyObject *read_ready(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 0) {
        PyErr_SetString(PyExc_TypeError, "_read_ready()");
        return NULL;
    }
    if (!shell_configured || Py_TYPE(self) != tls_transport_type || tlsio_read == NULL)
        return PyObject_CallOneArg(python_read_ready, self);
    PyObject *state = SLOT(self, tt_state), *raw = SLOT(self, tt_raw);
    PyObject *protocol = SLOT(self, tt_protocol);
    if (SLOT(self, tt_write_wants_read) != Py_False || SLOT(self, tt_paused) != Py_False ||
        SLOT(self, tt_buffered) != Py_True || SLOT(self, tt_c) != tlsio_module ||
        state == NULL || !PyLong_CheckExact(state) || PyLong_AsLong(state) != 0 ||
        raw == NULL || protocol == NULL)
        return PyObject_CallOneArg(python_read_ready, self);
    Py_INCREF(self);
    Py_INCREF(raw);
    Py_INCREF(protocol);
    int result = 0;
    for (;;) {
        PyObject *buffer = call_method(protocol, s_get_buffer, minus_one);
        if (buffer == NULL) goto raised;
        PyObject *read_args[2] = {raw, buffer};
        PyObject *got = PyObject_Vectorcall(tlsio_read, read_args, 2, NULL);
        Py_DECREF(buffer);
        if (got == NULL) goto raised;
        long nbytes = PyLong_AsLong(got);
        if (nbytes == -1 && PyErr_Occurred()) {
            Py_DECREF(got);
            goto raised;
        }
        if (nbytes <= 0) { /* 0: EOF; -1: want read; -2: want write */
            Py_DECREF(got);
            if (nbytes == 0)
                result = done_with(call_method(self, s_eof, NULL));
            else if (nbytes == -2) { /* OpenSSL must send before it reads on */
                result = PyObject_SetAttr(self, s_read_wants_write, Py_True);
                if (result == 0) result = done_with(call_method(self, s_add_writer, NULL));
            }
            break;
        }
        PyObject *updated = call_method(protocol, s_buffer_updated, got);
        Py_DECREF(got);
        if (updated == NULL) goto raised;
        Py_DECREF(updated);
        state = SLOT(self, tt_state);
        if (state == NULL || !PyLong_CheckExact(state) || PyLong_AsLong(state) != 0 ||
            SLOT(self, tt_paused) != Py_False)
            break;
        PyObject *pending = PyObject_Vectorcall(tlsio_pending, &raw, 1, NULL);
        if (pending == NULL) goto raised;
        int more = PyObject_IsTrue(pending);
        Py_DECREF(pending);
        if (more < 0) goto raised;
        if (!more) break;
        continue;
    raised: /* as the Python method's except clause: the transport's _read_failed decides */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            result = -1;
            break;
        }
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL) PyException_SetTraceback(value, traceback);
        result = done_with(call_method(self, s_read_failed, value));
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        break;
    }
    Py_DECREF(protocol);
    Py_DECREF(raw);
    Py_DECREF(self);
    if (result < 0) return NULL;
    Py_RETURN_NONE;
}

/* send(transport, data): the shell's write of a request or an answer (for the tests). */
static PyObject *send(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !shell_configured) {
        PyErr_SetString(PyExc_TypeError, "send(transport, data)");
        return NULL;
    }
    if (send_bytes(args[0], args[1]) < 0) return NULL;
    Py_RETURN_NONE;
}

#define READ_METHOD(name, read)                                                          \
    static PyObject *name(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {      \
        if (nargs != 1) {                                                                 \
            PyErr_SetString(PyExc_TypeError, "buffer_updated(nbytes)");                   \
            return NULL;                                                                  \
        }                                                                                 \
        PyObject *call[2] = {self, args[0]};                                              \
        return read(NULL, call, 2);                                                       \
    }
READ_METHOD(client_read_method, client_read)
READ_METHOD(backend_read_method, backend_read)

static PyMethodDef client_read_def = {
    "buffer_updated", (PyCFunction)(void (*)(void))client_read_method, METH_FASTCALL,
    "The phone's bytes: the machine's move and its commands (natsync.edge._steady)."};
static PyMethodDef backend_read_def = {
    "buffer_updated", (PyCFunction)(void (*)(void))backend_read_method, METH_FASTCALL,
    "The server's bytes: the machine's move and its commands (natsync.edge._steady)."};

static PyMethodDef read_ready_def = {
    "_read_ready", (PyCFunction)(void (*)(void))read_ready, METH_FASTCALL,
    "The socket is readable: read into the protocol (natsync.edge._steady)."};

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "Receive the classes, states, commands, framings and serialisers."},
    {"client_data", (PyCFunction)(void (*)(void))client_data, METH_FASTCALL,
     "ClientMachine.client_data's steady case: the commands, or None (nothing changed)."},
    {"backend_ready", (PyCFunction)(void (*)(void))backend_ready, METH_FASTCALL,
     "ClientMachine.backend_ready's steady case: the commands, or None (nothing changed)."},
    {"backend_data", (PyCFunction)(void (*)(void))backend_data, METH_FASTCALL,
     "ClientMachine.backend_data's steady case: the commands, or None (nothing changed)."},
    {"send", (PyCFunction)(void (*)(void))send, METH_FASTCALL,
     "transport.write(data) as the steady path writes (TLSTransport's usual write in C)."},
    {"configure_shell", configure_shell, METH_VARARGS,
     "Receive the shell's classes and values (natsync.edge.proxy)."},
    {"client_read", (PyCFunction)(void (*)(void))client_read, METH_FASTCALL,
     "ClientConn.buffer_updated: the phone's bytes, the machine's move, its commands."},
    {"backend_read", (PyCFunction)(void (*)(void))backend_read, METH_FASTCALL,
     "BackendConn.buffer_updated: the server's bytes, the machine's move, its commands."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_steady",
    "The phone connection machine's steady keep-alive moves, in C (see the source).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__steady(void) {
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    zero_float = PyFloat_FromDouble(0.0);
    one_int = PyLong_FromLong(1);
    dash = PyUnicode_InternFromString("-");
    other = PyUnicode_InternFromString("other");
    if (empty_bytes == NULL || zero_float == NULL || one_int == NULL || dash == NULL ||
        other == NULL)
        return NULL;
    if ((minus_one = PyLong_FromLong(-1)) == NULL) return NULL;
    struct {
        PyObject **name;
        const char *text;
    } names[] = {{&s_clock, "clock"}, {&s_single, "single"}, {&s_pool, "pool"},
                 {&s_write, "write"}, {&s_acquire, "acquire"},
                 {&s_backend_ready, "backend_ready"}, {&s_run, "run"},
                 {&s_release, "release"}, {&s_drop, "drop"}, {&n_client_data, "client_data"},
                 {&n_backend_data, "backend_data"}, {&s_is_closing, "is_closing"},
                 {&s_unwritten, "_unwritten"}, {&s_fatal, "_fatal"},
                 {&s_get_buffer, "get_buffer"}, {&s_buffer_updated, "buffer_updated"},
                 {&s_eof, "_eof"}, {&s_read_failed, "_read_failed"},
                 {&s_add_writer, "_add_writer"}, {&s_read_wants_write, "_read_wants_write"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].name = PyUnicode_InternFromString(names[i].text)) == NULL) return NULL;
    return PyModule_Create(&module);
}
