/* The common case of natsync.wbxml's codec in C; the Python codec stays the reference.
 *
 * decode(data) -> Element | None   EAS WBXML (header 03 01 6A 00, no string table) → tree
 * encode(root) -> bytes | None     tree → WBXML, byte for byte what natsync.wbxml.encoder writes
 *
 * None means "not mine": the caller then runs the Python codec, which decodes, encodes or
 * raises WBXMLError with its precise message. This module declines everything but the shapes
 * EAS peers send and the server builds: any malformation, any limit reached, a string table or
 * STR_T, a value in several pieces, an element type or value type that is not exactly the
 * expected one. So it never accepts what the Python codec refuses, and what it returns is
 * exactly what the Python codec returns (tests/wbxml/test_speedups.py and
 * fuzz/fuzz_wbxml_speedups.py compare the two). Text the encoder must clean (XML 1.0 Char,
 * natsync.wbxml.chars) goes through the Python xml_text given to configure(), the one cleaner.
 *
 * configure(element_type, decode_tables, encode_map, xml_text, limits) is called once by
 * natsync.wbxml.speedups with the code pages (natsync.wbxml.codepages) and the limits
 * (natsync.wbxml.limits).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

/* WBXML 1.3 section 5.8.1: a code page number is one byte; EAS uses 26 (codepages.PAGE_COUNT). */
#define PAGES 32
#define DECLINE 1

static PyTypeObject *element_type = NULL;
static PyObject *decode_tables = NULL; /* kept alive: the name pointers below borrow from it */
static PyObject *encode_map = NULL;    /* namespace -> {tag -> page << 8 | token} */
static PyObject *xml_text = NULL;
static Py_ssize_t off_namespace, off_tag, off_children, off_value;
static Py_ssize_t max_document, max_depth, max_elements, max_string;
/* page -> raw tag byte -> borrowed namespace / tag str (NULL: not a tag on that page) */
static PyObject *names_ns[PAGES][256];
static PyObject *names_tag[PAGES][256];
static char page_known[256]; /* indexed by any page byte; 0 above PAGES */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static int slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name);
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *out = member->offset;
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *args)
{
    PyObject *type, *tables, *emap, *cleaner;
    if (!PyArg_ParseTuple(args, "O!O!O!O(nnnn)", &PyType_Type, &type, &PyTuple_Type, &tables,
                          &PyDict_Type, &emap, &cleaner, &max_document, &max_depth,
                          &max_elements, &max_string))
        return NULL;
    PyTypeObject *tp = (PyTypeObject *)type;
    if (slot_offset(tp, "namespace", &off_namespace) < 0 || slot_offset(tp, "tag", &off_tag) < 0 ||
        slot_offset(tp, "children", &off_children) < 0 || slot_offset(tp, "value", &off_value) < 0)
        return NULL;
    if (PyTuple_GET_SIZE(tables) > PAGES) {
        PyErr_SetString(PyExc_ValueError, "more than 32 code pages");
        return NULL;
    }
    memset(names_ns, 0, sizeof names_ns);
    memset(names_tag, 0, sizeof names_tag);
    memset(page_known, 0, sizeof page_known);
    for (Py_ssize_t page = 0; page < PyTuple_GET_SIZE(tables); page++) {
        PyObject *table = PyTuple_GET_ITEM(tables, page);
        if (table == Py_None)
            continue;
        if (!PyTuple_Check(table) || PyTuple_GET_SIZE(table) != 256) {
            PyErr_SetString(PyExc_ValueError, "a decode table is a tuple of 256 entries");
            return NULL;
        }
        page_known[page] = 1;
        for (int tok = 0; tok < 256; tok++) {
            PyObject *entry = PyTuple_GET_ITEM(table, tok);
            if (entry == Py_None)
                continue;
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 ||
                !PyUnicode_CheckExact(PyTuple_GET_ITEM(entry, 0)) ||
                !PyUnicode_CheckExact(PyTuple_GET_ITEM(entry, 1))) {
                PyErr_SetString(PyExc_ValueError, "a decode entry is (namespace, tag)");
                return NULL;
            }
            names_ns[page][tok] = PyTuple_GET_ITEM(entry, 0);
            names_tag[page][tok] = PyTuple_GET_ITEM(entry, 1);
        }
    }
    Py_INCREF(type);
    Py_XSETREF(element_type, tp);
    Py_INCREF(tables);
    Py_XSETREF(decode_tables, tables);
    Py_INCREF(emap);
    Py_XSETREF(encode_map, emap);
    Py_INCREF(cleaner);
    Py_XSETREF(xml_text, cleaner);
    Py_RETURN_NONE;
}

/* --- decoding ------------------------------------------------------------------------------ */

static PyObject *new_element(PyObject *ns, PyObject *tag)
{
    PyObject *el = element_type->tp_alloc(element_type, 0);
    if (el == NULL)
        return NULL;
    PyObject *children = PyList_New(0);
    if (children == NULL) {
        Py_DECREF(el);
        return NULL;
    }
    Py_INCREF(ns);
    SLOT(el, off_namespace) = ns;
    Py_INCREF(tag);
    SLOT(el, off_tag) = tag;
    SLOT(el, off_children) = children;
    Py_INCREF(Py_None);
    SLOT(el, off_value) = Py_None;
    return el;
}

/* Attach a value to the open element *cur*: declined when it has one or children already. */
static int set_value(PyObject *cur, PyObject *value)
{
    if (value == NULL)
        return -1;
    if (SLOT(cur, off_value) != Py_None || PyList_GET_SIZE(SLOT(cur, off_children)) != 0) {
        Py_DECREF(value);
        return DECLINE;
    }
    Py_SETREF(SLOT(cur, off_value), value);
    return 0;
}

static PyObject *decode(PyObject *self, PyObject *arg)
{
    if (element_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    if (!PyBytes_CheckExact(arg))
        Py_RETURN_NONE;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    /* Version 1.3, public id 1, UTF-8 (106 = 0x6A), empty string table: what EAS peers send. */
    if (n > max_document || n < 5 || d[0] != 0x03 || d[1] != 0x01 || d[2] != 0x6A || d[3] != 0)
        Py_RETURN_NONE;
    PyObject *stack[256]; /* open elements, borrowed (the root owns them); depth <= max_depth */
    PyObject *root = NULL;
    Py_ssize_t pos = 4, depth = 0, count = 0;
    int page = 0, rc = DECLINE;
    if (max_depth >= 256)
        Py_RETURN_NONE;
    while (pos < n) {
        unsigned char tok = d[pos];
        PyObject *ns = names_ns[page][tok];
        if (ns != NULL) {
            PyObject *cur = depth ? stack[depth - 1] : NULL;
            if (cur != NULL && SLOT(cur, off_value) != Py_None)
                goto done; /* mixed content */
            if (++count > max_elements || depth >= max_depth || (cur == NULL && root != NULL))
                goto done;
            PyObject *el = new_element(ns, names_tag[page][tok]);
            if (el == NULL) {
                rc = -1;
                goto done;
            }
            if (cur == NULL)
                root = el;
            else {
                int failed = PyList_Append(SLOT(cur, off_children), el);
                Py_DECREF(el);
                if (failed) {
                    rc = -1;
                    goto done;
                }
            }
            pos++;
            if (tok & 0x40)
                stack[depth++] = el;
            else if (depth == 0)
                break; /* an empty root */
        }
        else if (tok == 0x01) { /* END */
            if (depth == 0)
                goto done;
            pos++;
            if (--depth == 0)
                break;
        }
        else if (tok == 0x03) { /* STR_I */
            if (depth == 0)
                goto done;
            const unsigned char *end = memchr(d + pos + 1, 0, (size_t)(n - pos - 1));
            if (end == NULL || end - (d + pos + 1) > max_string)
                goto done;
            Py_ssize_t len = end - (d + pos + 1);
            int r = set_value(stack[depth - 1],
                              PyUnicode_DecodeUTF8((const char *)d + pos + 1, len, "replace"));
            if (r) {
                rc = r;
                goto done;
            }
            pos += len + 2;
        }
        else if (tok == 0x00) { /* SWITCH_PAGE */
            if (pos + 1 >= n || !page_known[d[pos + 1]])
                goto done;
            page = d[pos + 1];
            pos += 2;
        }
        else if (tok == 0xC3) { /* OPAQUE */
            if (depth == 0)
                goto done;
            uint64_t length = 0;
            Py_ssize_t at = pos + 1;
            for (int i = 0;; i++) { /* mb_u_int32 (WBXML 1.3 section 5.1), at most 5 bytes */
                if (at >= n || i >= 5)
                    goto done;
                unsigned char byte = d[at++];
                length = (length << 7) | (byte & 0x7F);
                if (!(byte & 0x80))
                    break;
            }
            if (length > 0xFFFFFFFFu || length > (uint64_t)(n - at) || length > (uint64_t)max_string)
                goto done;
            int r = set_value(stack[depth - 1],
                              PyBytes_FromStringAndSize((const char *)d + at, (Py_ssize_t)length));
            if (r) {
                rc = r;
                goto done;
            }
            pos = at + (Py_ssize_t)length;
        }
        else
            goto done; /* STR_T, attributes, extensions, unknown tags: the Python decoder says */
    }
    if (root != NULL && depth == 0 && pos == n)
        return root;
done:
    Py_XDECREF(root);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* --- encoding ------------------------------------------------------------------------------ */

typedef struct {
    PyObject *bytes; /* a bytes object grown with _PyBytes_Resize */
    Py_ssize_t len;
} Out;

static int reserve(Out *out, Py_ssize_t more)
{
    Py_ssize_t cap = PyBytes_GET_SIZE(out->bytes);
    if (out->len + more <= cap)
        return 0;
    Py_ssize_t want = cap * 2;
    if (want < out->len + more)
        want = out->len + more + 4096;
    return _PyBytes_Resize(&out->bytes, want);
}

#define OUTP(out) ((unsigned char *)PyBytes_AS_STRING((out)->bytes))

#define ILLEGAL_C0(c) ((c) < 0x20 && (c) != 0x09 && (c) != 0x0A && (c) != 0x0D)

/* Write *text* as UTF-8 at *p* (room for 4 bytes a character); return the bytes written, or -1
 * when it holds a character XML 1.0 cannot carry (natsync.wbxml.chars.XML_ILLEGAL), which
 * then goes through xml_text. One pass: the check and the copy together. */
static Py_ssize_t utf8_clean(PyObject *text, unsigned char *p)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    unsigned char *start = p;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *s = data;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS1 c = s[i];
            if (c < 0x80) {
                if (ILLEGAL_C0(c))
                    return -1;
                *p++ = c;
            }
            else {
                *p++ = 0xC0 | (c >> 6);
                *p++ = 0x80 | (c & 0x3F);
            }
        }
        return p - start;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            if (ILLEGAL_C0(c))
                return -1;
            *p++ = (unsigned char)c;
        }
        else if (c < 0x800) {
            *p++ = 0xC0 | (c >> 6);
            *p++ = 0x80 | (c & 0x3F);
        }
        else if (c < 0x10000) {
            if ((c >= 0xD800 && c <= 0xDFFF) || c == 0xFFFE || c == 0xFFFF)
                return -1;
            *p++ = 0xE0 | (c >> 12);
            *p++ = 0x80 | ((c >> 6) & 0x3F);
            *p++ = 0x80 | (c & 0x3F);
        }
        else {
            *p++ = 0xF0 | (c >> 18);
            *p++ = 0x80 | ((c >> 12) & 0x3F);
            *p++ = 0x80 | ((c >> 6) & 0x3F);
            *p++ = 0x80 | (c & 0x3F);
        }
    }
    return p - start;
}

static int put_text(Out *out, unsigned char tag, PyObject *text)
{
    PyObject *clean = NULL;
    for (;;) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(text);
        int kind = PyUnicode_KIND(text);
        Py_ssize_t room = PyUnicode_IS_ASCII(text) ? n : n * (kind == PyUnicode_1BYTE_KIND ? 2 : 4);
        if (reserve(out, room + 4) < 0) {
            Py_XDECREF(clean);
            return -1;
        }
        unsigned char *p = OUTP(out) + out->len;
        Py_ssize_t len = utf8_clean(text, p + 2);
        if (len >= 0) {
            p[0] = tag;
            p[1] = 0x03; /* STR_I */
            p[len + 2] = 0x00;
            p[len + 3] = 0x01; /* END */
            out->len += len + 4;
            Py_XDECREF(clean);
            return 0;
        }
        if (clean != NULL) { /* xml_text left something illegal: the Python encoder decides */
            Py_DECREF(clean);
            return DECLINE;
        }
        clean = PyObject_CallOneArg(xml_text, text);
        if (clean == NULL)
            return -1;
        if (!PyUnicode_CheckExact(clean) || PyUnicode_READY(clean) < 0) {
            Py_DECREF(clean);
            return PyErr_Occurred() ? -1 : DECLINE;
        }
        text = clean;
    }
}

static int put_opaque(Out *out, unsigned char tag, PyObject *data)
{
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    if ((uint64_t)len > 0xFFFFFFFFu)
        return DECLINE;
    unsigned char mb[5];
    int k = 5;
    uint64_t v = (uint64_t)len;
    mb[--k] = v & 0x7F;
    for (v >>= 7; v; v >>= 7)
        mb[--k] = 0x80 | (v & 0x7F);
    if (reserve(out, len + 8) < 0)
        return -1;
    unsigned char *p = OUTP(out) + out->len;
    *p++ = tag;
    *p++ = 0xC3; /* OPAQUE */
    memcpy(p, mb + k, (size_t)(5 - k));
    p += 5 - k;
    memcpy(p, PyBytes_AS_STRING(data), (size_t)len);
    p[len] = 0x01; /* END */
    out->len += 2 + (5 - k) + len + 1;
    return 0;
}

static int put_bytes(Out *out, const unsigned char *s, Py_ssize_t len)
{
    if (reserve(out, len) < 0)
        return -1;
    memcpy(OUTP(out) + out->len, s, (size_t)len);
    out->len += len;
    return 0;
}

/* Encode *el* at nesting *depth* (the root is 1); 0 done, DECLINE, or -1 with an exception. */
static int put_element(Out *out, PyObject *el, Py_ssize_t depth, int *page)
{
    if (depth > max_depth || !Py_IS_TYPE(el, element_type))
        return DECLINE;
    PyObject *ns = SLOT(el, off_namespace), *tag = SLOT(el, off_tag);
    PyObject *children = SLOT(el, off_children), *value = SLOT(el, off_value);
    if (ns == NULL || tag == NULL || children == NULL || value == NULL ||
        !PyUnicode_CheckExact(ns) || !PyUnicode_CheckExact(tag) || !PyList_CheckExact(children))
        return DECLINE;
    PyObject *tags = PyDict_GetItemWithError(encode_map, ns);
    if (tags == NULL)
        return PyErr_Occurred() ? -1 : DECLINE;
    PyObject *code = PyDict_GetItemWithError(tags, tag);
    if (code == NULL)
        return PyErr_Occurred() ? -1 : DECLINE;
    long c = PyLong_AsLong(code);
    if (c == -1 && PyErr_Occurred())
        return -1;
    int tag_page = (int)(c >> 8);
    unsigned char token = (unsigned char)(c & 0xFF);
    if (tag_page != *page) {
        unsigned char sw[2] = {0x00, (unsigned char)tag_page};
        if (put_bytes(out, sw, 2) < 0)
            return -1;
        *page = tag_page;
    }
    if (PyList_GET_SIZE(children) > 0) {
        if (value != Py_None)
            return DECLINE;
        unsigned char open = token | 0x40, end = 0x01;
        if (put_bytes(out, &open, 1) < 0)
            return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(children); i++) {
            PyObject *child = PyList_GET_ITEM(children, i);
            Py_INCREF(child);
            int rc = put_element(out, child, depth + 1, page);
            Py_DECREF(child);
            if (rc)
                return rc;
        }
        return put_bytes(out, &end, 1);
    }
    if (value == Py_None)
        return put_bytes(out, &token, 1);
    if (PyUnicode_CheckExact(value)) {
        if (PyUnicode_READY(value) < 0)
            return -1;
        return put_text(out, token | 0x40, value);
    }
    if (PyBytes_CheckExact(value))
        return put_opaque(out, token | 0x40, value);
    return DECLINE; /* bytearray, memoryview, or a type the Python encoder refuses */
}

static PyObject *encode(PyObject *self, PyObject *root)
{
    if (element_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    Out out = {PyBytes_FromStringAndSize(NULL, 4096), 4};
    if (out.bytes == NULL)
        return NULL;
    memcpy(OUTP(&out), "\x03\x01\x6A\x00", 4); /* natsync.wbxml.tokens.EAS_HEADER */
    int page = 0;
    int rc = put_element(&out, root, 1, &page);
    if (rc == 0 && _PyBytes_Resize(&out.bytes, out.len) == 0)
        return out.bytes;
    Py_XDECREF(out.bytes);
    if (rc < 0 || (rc == 0 && PyErr_Occurred()))
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Set the element type, code pages and limits."},
    {"decode", decode, METH_O, "EAS WBXML -> Element, or None to leave it to Python."},
    {"encode", encode, METH_O, "Element -> WBXML bytes, or None to leave it to Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
